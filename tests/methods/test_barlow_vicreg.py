"""Barlow Twins and VICReg: a training step through the registry, the projector widths, the views,
and the logged VICReg terms."""

import inspect

import pytest
import torch
from torch import nn

from selfsup.losses.redundancy import barlow_twins_loss
from selfsup.methods import METHODS, BuildContext

TINY = {"barlowtwins": {"proj_dim": 32}, "vicreg": {"proj_dim": 32}}


def _batch(b=4, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "image": torch.randint(0, 256, (b, 3, size, size), dtype=torch.uint8, generator=g),
        "label": torch.full((b,), -1, dtype=torch.long),
        "index": torch.arange(b),
    }


def _build(name, **kwargs):
    torch.manual_seed(0)
    ctx = BuildContext("resnet18", image_size=16, batch_size=4)
    return METHODS.get(name).build(ctx, **{**TINY[name], **kwargs})


@pytest.mark.parametrize("name", ["barlowtwins", "vicreg"])
def test_projector_is_three_layers_of_equal_width_and_views_follow_byol(name):
    method = _build(name)
    linears = [m for m in method.projector if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(512, 32), (32, 32), (32, 32)]
    assert sum(isinstance(m, nn.BatchNorm1d) for m in method.projector) == 2
    narrow = _build(name, proj_hidden_dim=16)
    assert [m.out_features for m in narrow.projector if isinstance(m, nn.Linear)] == [16, 16, 32]
    g1, g2 = (v.config for v in method.views.global_views)
    assert (g1.solarize_p, g2.solarize_p) == (0.0, 0.2) and g1.scale == (0.08, 1.0)
    assert g1.blur_p == g2.blur_p == 0.0  # 16 px: blur off
    assert [v.config.blur_p for v in _build(name, blur=True).views.global_views] == [1.0, 0.1]


def test_paper_defaults():
    bt, vic = METHODS.get("barlowtwins"), METHODS.get("vicreg")
    assert (bt.defaults.optimizer, bt.defaults.lr, bt.defaults.weight_decay) == (
        "lars",
        0.2,
        1.5e-6,
    )
    assert (vic.defaults.optimizer, vic.defaults.lr, vic.defaults.weight_decay) == (
        "lars",
        0.2,
        1e-6,
    )
    assert bt.defaults.scale_lr and vic.defaults.scale_lr
    bt_args = inspect.signature(bt.__init__).parameters
    assert bt_args["proj_dim"].default == 8192 and bt_args["proj_hidden_dim"].default is None
    assert bt_args["lambd"].default == 0.0051
    vic_args = inspect.signature(vic.__init__).parameters
    assert vic_args["proj_dim"].default == 8192
    coeffs = [vic_args[k].default for k in ("sim_coeff", "std_coeff", "cov_coeff")]
    assert coeffs == [25.0, 25.0, 1.0]


def test_barlow_twins_forward_is_the_loss_of_the_two_views_embeddings():
    method = _build("barlowtwins")
    torch.manual_seed(1)
    with torch.no_grad():
        out = method(_batch())["loss"]
        torch.manual_seed(1)
        (views,) = method.views(_batch()["image"])  # the same random views again
        z1, z2 = method.projector(method.backbone(views)).chunk(2)
    assert torch.allclose(out, barlow_twins_loss(z1, z2, 0.0051), rtol=1e-5)


def test_vicreg_logs_its_weighted_terms():
    method = _build("vicreg")
    with torch.no_grad():
        out = method(_batch())
    expected = 25 * out["invariance"] + 25 * out["variance"] + out["covariance"]
    assert torch.allclose(out["loss"], expected, rtol=1e-6)
    assert float(out["variance"]) > 0  # a random network's embeddings have std below 1


def test_barlow_twins_biases_and_batch_norm_take_the_papers_smaller_lr():
    from selfsup.engine.optim import build_optimizer, set_lr

    method = _build("barlowtwins")
    opt = build_optimizer(method.param_groups(), "lars", lr=0.2 * 2, weight_decay=1.5e-6)
    set_lr(opt, 0.5)
    weights, biases = opt.param_groups
    assert not weights.get("lars_exclude") and biases["lars_exclude"]
    assert weights["lr"] == pytest.approx(0.2 * 2 * 0.5)
    assert biases["lr"] == pytest.approx(0.0048 * 2 * 0.5)  # 0.0048 x batch / 256, scheduled
