"""BYOL: the loss against the paper's squared distance of normalised vectors, the target updated
once per optimizer step (never by forward), its cosine EMA maths, and the asymmetric views."""

import math

import numpy as np
import pytest
import torch

from selfsup.methods import METHODS, BuildContext
from selfsup.methods.byol import byol_loss, byol_views

TINY = {"proj_hidden_dim": 32, "proj_dim": 8, "pred_hidden_dim": 32}


def make_batch(b=4, size=16):
    g = torch.Generator().manual_seed(0)
    return {
        "image": torch.randint(0, 256, (b, 3, size, size), dtype=torch.uint8, generator=g),
        "label": torch.full((b,), -1),
        "index": torch.arange(b),
    }


def build(**kwargs):
    torch.manual_seed(0)
    ctx = BuildContext("resnet18", image_size=16, batch_size=4)
    return METHODS.get("byol").build(ctx, **{**TINY, **kwargs})


def test_loss_is_the_squared_distance_of_normalised_vectors():
    rng = np.random.default_rng(0)
    p, z = rng.normal(size=(5, 7)), rng.normal(size=(5, 7))
    unit_p = p / np.linalg.norm(p, axis=1, keepdims=True)
    unit_z = z / np.linalg.norm(z, axis=1, keepdims=True)
    expected = ((unit_p - unit_z) ** 2).sum(axis=1).mean()  # BYOL eq. 2
    got = byol_loss(torch.tensor(p, dtype=torch.float32), torch.tensor(z, dtype=torch.float32))
    assert got.item() == pytest.approx(expected, rel=1e-5)
    x = torch.randn(3, 4)
    assert byol_loss(x, 2 * x).item() == pytest.approx(0.0, abs=1e-6)
    assert byol_loss(x, -x).item() == pytest.approx(4.0, abs=1e-5)


def test_no_gradient_reaches_the_target():
    p = torch.randn(4, 6, requires_grad=True)
    z = torch.randn(4, 6, requires_grad=True)
    byol_loss(p, z).backward()
    assert z.grad is None and p.grad.abs().sum() > 0


def test_target_moves_once_per_optimizer_step_with_the_cosine_momentum():
    m = build()
    online = [*m.backbone.parameters(), *m.projector.parameters()]
    target = [*m.target_backbone.parameters(), *m.target_projector.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(online, target, strict=True))
    assert not any(p.requires_grad for p in target)
    optimizer = torch.optim.SGD([p for g in m.param_groups() for p in g["params"]], lr=0.5)
    before = [p.clone() for p in target]
    for _ in range(2):  # two micro-batches of one accumulated optimizer step
        loss = m(make_batch())["loss"]
        assert 0 <= loss.item() <= 8  # both view orders summed, each in [0, 4]
        loss.backward()
        assert all(torch.equal(a, b) for a, b in zip(before, target, strict=True))
    optimizer.step()
    assert not all(torch.equal(a, b) for a, b in zip(online, target, strict=True))
    m.after_step(3, 10)
    tau = 1 - (1 - 0.996) * (math.cos(math.pi * 3 / 10) + 1) / 2
    for old, q, t in zip(before, online, target, strict=True):
        torch.testing.assert_close(t, tau * old + (1 - tau) * q)


def test_views_are_asymmetric_as_in_the_paper():
    first, second = byol_views(224)
    assert (first.config.blur_p, first.config.solarize_p) == (1.0, 0.0)
    assert (second.config.blur_p, second.config.solarize_p) == (0.1, 0.2)
    for view in (first, second):
        assert view.config.jitter == (0.4, 0.4, 0.2, 0.1) and view.config.scale == (0.08, 1.0)
    m = build()  # 16 px: no blur, solarisation kept
    assert m.augment1.config.blur_p == m.augment2.config.blur_p == 0.0
    assert m.augment2.config.solarize_p == 0.2
