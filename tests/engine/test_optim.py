import math

import pytest
import torch

from selfsup.engine.optim import LARS, build_optimizer, lr_factor, set_lr


def test_lr_factor_warmup_then_cosine():
    assert lr_factor(0.0, 0.1) == 0.0
    assert math.isclose(lr_factor(0.05, 0.1), 0.5)
    assert math.isclose(lr_factor(0.1, 0.1), 1.0)
    assert math.isclose(lr_factor(0.55, 0.1), 0.5, abs_tol=1e-9)  # half-way through the cosine
    assert math.isclose(lr_factor(1.0, 0.1, final=0.01), 0.01)
    values = [lr_factor(p / 100, 0.1) for p in range(10, 101)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))


def test_lars_trust_ratio_and_exclusion():
    w = torch.nn.Parameter(torch.full((4, 4), 2.0))
    b = torch.nn.Parameter(torch.ones(4))
    opt = LARS(
        [{"params": [w]}, {"params": [b], "lars_exclude": True}],
        lr=1.0,
        momentum=0.0,
        weight_decay=0.1,
        eta=0.001,
    )
    w.grad = torch.full((4, 4), 0.5)
    b.grad = torch.full((4,), 0.5)
    opt.step()
    g = 0.5 + 0.1 * 2.0  # gradient plus weight decay
    trust = 0.001 * 8.0 / (g * 4.0)  # eta * ||w|| / ||g + wd w||, both norms over 16 entries
    assert torch.allclose(w, torch.full((4, 4), 2.0 - trust * g))
    assert torch.allclose(b, torch.full((4,), 0.5))  # plain SGD step, no decay, no adaptation


def test_build_optimizer_groups_and_fixed_lr():
    a, b = torch.nn.Parameter(torch.randn(3, 3)), torch.nn.Parameter(torch.randn(3))
    opt = build_optimizer(
        [{"params": [a]}, {"params": [b], "fixed_lr": True}], "sgd", lr=0.5, weight_decay=0.1
    )
    set_lr(opt, 0.1)
    assert math.isclose(opt.param_groups[0]["lr"], 0.05)
    assert opt.param_groups[1]["lr"] == 0.5
    opt = build_optimizer([{"params": [a]}, {"params": [b], "lr_scale": 0.1}], "sgd", lr=0.5,
                          weight_decay=0.1)  # fmt: skip
    assert math.isclose(opt.param_groups[1]["lr"], 0.05)
    set_lr(opt, 0.1)
    assert math.isclose(opt.param_groups[1]["lr"], 0.005)
    with pytest.raises(ValueError, match="adamw, lamb, lars, sgd"):
        build_optimizer([{"params": [a]}], "adam", lr=1.0, weight_decay=0.0)


def test_linear_schedule_decays_linearly_after_warmup():
    from selfsup.engine.optim import lr_factor

    assert lr_factor(0.05, 0.1, schedule="linear") == pytest.approx(0.5)
    assert lr_factor(0.1, 0.1, schedule="linear") == pytest.approx(1.0)
    assert lr_factor(0.55, 0.1, schedule="linear") == pytest.approx(0.5)
    assert lr_factor(1.0, 0.0, final=1e-4, schedule="linear") == pytest.approx(1e-4)
    assert lr_factor(0.5, 0.0, final=1e-4, schedule="linear") == pytest.approx(0.5 + 0.5e-4)
    with pytest.raises(ValueError, match="cosine, linear"):
        lr_factor(0.5, 0.1, schedule="step")


def test_unset_schedule_fields_take_the_method_recipe(tmp_path):
    from selfsup.config import ConfigError, load_config

    config = load_config(values={"method": "simclr", "data": "digits"})
    assert config.optim.warmup is None and config.optim.schedule is None
    with pytest.raises(ConfigError, match="optim.schedule"):
        load_config(values={"method": "simclr", "data": "digits", "optim": {"schedule": "step"}})


def test_lamb_two_steps_against_numpy():
    import numpy as np

    from selfsup.engine.optim import LAMB

    w0 = np.array([[0.5, -1.0], [2.0, 0.25]])
    grads = [np.array([[0.1, -0.2], [0.3, 0.0]]), np.array([[-0.05, 0.4], [0.1, 0.2]])]
    bias0 = np.array([0.3, -0.3])
    lr, b1, b2, eps, wd = 0.01, 0.9, 0.999, 1e-6, 0.01
    weight = torch.nn.Parameter(torch.tensor(w0))
    bias = torch.nn.Parameter(torch.tensor(bias0))
    opt = LAMB([{"params": [weight]}, {"params": [bias], "weight_decay": 0.0, "lars_exclude": True}],
               lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd)  # fmt: skip
    w, m, v = w0.copy(), np.zeros_like(w0), np.zeros_like(w0)
    b, mb, vb = bias0.copy(), np.zeros(2), np.zeros(2)
    for t, g in enumerate(grads, start=1):
        weight.grad, bias.grad = torch.tensor(g), torch.tensor(g[0])
        opt.step()
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g**2
        u = (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps) + wd * w
        w = w - lr * np.linalg.norm(w) / np.linalg.norm(u) * u
        mb, vb = b1 * mb + (1 - b1) * g[0], b2 * vb + (1 - b2) * g[0] ** 2
        b = b - lr * (mb / (1 - b1**t)) / (np.sqrt(vb / (1 - b2**t)) + eps)  # no adaptation
    assert np.allclose(weight.detach().numpy(), w, atol=1e-12)
    assert np.allclose(bias.detach().numpy(), b, atol=1e-12)


def test_inverse_sqrt_schedule_is_t5s_on_the_papers_budget():
    """T5: lr(n) = 1 / sqrt(max(n, 10^4)) over 2^19 steps = 0.01 x factor(n / 2^19)."""
    from selfsup.methods.t5 import T5SpanCorruption

    d = T5SpanCorruption.defaults
    assert (d.optimizer, d.lr, d.schedule, d.weight_decay) == ("adafactor", 0.01, "inverse_sqrt", 0)
    total = 2**19
    for n in (0, 5_000, 10_000, 40_000, 250_000, total):
        lr = d.lr * lr_factor(n / total, d.warmup, d.final_lr, d.schedule)
        assert lr == pytest.approx(1 / math.sqrt(max(n, 10_000)), rel=1e-9)
    with pytest.raises(ValueError, match="warmup > 0"):
        lr_factor(0.5, 0.0, schedule="inverse_sqrt")


def test_adafactor_is_configured_as_in_t5():
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(8, 4))
    opt = build_optimizer([{"params": [w]}], "adafactor", lr=0.01, weight_decay=0.0)
    group = opt.param_groups[0]
    assert group["lr"] == group["base_lr"] == 0.01
    assert not group["relative_step"] and group["scale_parameter"]  # Mesh TF's default
    assert group["beta1"] is None and group["clip_threshold"] == 1.0
    assert group["decay_rate"] == -0.8
    before = (w.detach() ** 2).sum()
    for _ in range(20):
        loss = (w**2).sum()
        loss.backward()
        opt.step()
        opt.zero_grad()
    assert (w.detach() ** 2).sum() < before
    state = opt.state[w]
    assert state["exp_avg_sq_row"].shape == (8,) and state["exp_avg_sq_col"].shape == (
        4,
    )  # factored


def test_unknown_optimizer_and_schedule_name_the_valid_ones():
    from selfsup.config import ConfigError, OptimConfig

    with pytest.raises(ConfigError, match="adafactor, adamw, lamb, lars, sgd"):
        OptimConfig(name="adam").validate()
    with pytest.raises(ConfigError, match="cosine, linear, inverse_sqrt"):
        OptimConfig(schedule="step").validate()
    with pytest.raises(ConfigError, match="constant phase"):
        OptimConfig(schedule="inverse_sqrt", warmup=0.0).validate()
