"""SimSiam: D against a numpy formula, the stop-gradient, the predictor's fixed learning rate,
and the projector of the paper (3 layers) or of its CIFAR-10 appendix (2 layers)."""

import numpy as np
import pytest
import torch

from selfsup.engine.optim import build_optimizer, set_lr
from selfsup.methods import METHODS, BuildContext
from selfsup.methods.simsiam import negative_cosine

TINY = {"proj_hidden_dim": 32, "proj_dim": 16, "pred_hidden_dim": 8}


def make_batch(b=4, size=16):
    g = torch.Generator().manual_seed(0)
    return {
        "image": torch.randint(0, 256, (b, 3, size, size), dtype=torch.uint8, generator=g),
        "label": torch.full((b,), -1),
        "index": torch.arange(b),
    }


def build(image_size=16, **kwargs):
    torch.manual_seed(0)
    ctx = BuildContext("resnet18", image_size=image_size, batch_size=4)
    return METHODS.get("simsiam").build(ctx, **{**TINY, **kwargs})


def test_negative_cosine_matches_numpy():
    rng = np.random.default_rng(0)
    p, z = rng.normal(size=(5, 7)), rng.normal(size=(5, 7))
    expected = -np.mean(
        [p[i] @ z[i] / (np.linalg.norm(p[i]) * np.linalg.norm(z[i])) for i in range(5)]
    )
    got = negative_cosine(
        torch.tensor(p, dtype=torch.float32), torch.tensor(z, dtype=torch.float32)
    )
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_stop_gradient_stops_gradients_at_the_targets():
    p1, p2 = torch.randn(4, 6, requires_grad=True), torch.randn(4, 6, requires_grad=True)
    z1, z2 = torch.randn(4, 6, requires_grad=True), torch.randn(4, 6, requires_grad=True)
    loss = negative_cosine(p1, z2) / 2 + negative_cosine(p2, z1) / 2
    loss.backward()
    assert z1.grad is None and z2.grad is None
    assert p1.grad.abs().sum() > 0 and p2.grad.abs().sum() > 0


def test_without_stop_gradient_the_targets_get_gradients_too():
    p = torch.randn(4, 8, requires_grad=True)
    z = torch.randn(4, 8, requires_grad=True)
    negative_cosine(p, z, stop_gradient=False).backward()
    assert z.grad is not None and z.grad.abs().sum() > 0


def test_predictor_learning_rate_stays_fixed():
    m = build()
    groups = m.param_groups()
    predictor = {id(p) for p in m.predictor.parameters()}
    for g in groups:
        assert all((id(p) in predictor) == g["fixed_lr"] for p in g["params"])
    grouped = [p for g in groups for p in g["params"]]
    assert len(grouped) == len({id(p) for p in grouped}) == len(list(m.parameters()))
    optimizer = build_optimizer(groups, "sgd", lr=0.1, weight_decay=1e-4)
    set_lr(optimizer, 0.25)  # a point on the cosine schedule
    for g in optimizer.param_groups:
        assert g["lr"] == pytest.approx(0.1 if g["fixed_lr"] else 0.025)


def test_projector_has_3_layers_or_2_on_cifar_sized_images_and_ends_in_bn():
    for size, layers in ((16, 2), (96, 3)):
        m = build(image_size=size)
        assert sum(isinstance(x, torch.nn.Linear) for x in m.projector) == layers
        assert isinstance(m.projector[-1], torch.nn.BatchNorm1d) and not m.projector[-1].affine
        assert not isinstance(m.predictor[-1], torch.nn.BatchNorm1d)
        assert m.augment.config.blur_p == (0.0 if size <= 64 else 0.5)
