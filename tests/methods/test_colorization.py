"""Colorization: rebalancing weights, the prior, the loss, the grayscale input, a training step."""

import json
import math

import numpy as np
import pytest
import torch

from selfsup.methods import METHODS, BuildContext
from selfsup.methods.colorization import colorization_loss, rebalance_weights, smoothed_prior
from selfsup.views.lab import ab_bins, lab_to_rgb, rgb_to_lab

TINY = {"head_width": 32}


@pytest.fixture(scope="module")
def method():
    torch.manual_seed(0)
    ctx = BuildContext("resnet18", image_size=16, batch_size=4)
    return METHODS.get("colorization").build(ctx, **TINY)


def _batch(b=4, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "image": torch.randint(0, 256, (b, 3, size, size), dtype=torch.uint8, generator=g),
        "label": torch.full((b,), -1),
        "index": torch.arange(b),
    }


def test_rebalancing_weights_have_unit_expectation_and_favour_rare_bins():
    prior = torch.tensor([0.7, 0.2, 0.08, 0.02], dtype=torch.float64)
    w = rebalance_weights(prior, lam=0.5)
    expected = 1 / (0.5 * prior.numpy() + 0.5 / 4)
    expected /= (prior.numpy() * expected).sum()
    np.testing.assert_allclose(w.numpy(), expected, rtol=1e-12)
    assert (prior * w).sum().item() == pytest.approx(1.0)
    assert (w.diff() > 0).all()
    assert torch.allclose(rebalance_weights(prior, lam=1.0), torch.ones(4, dtype=torch.float64))


def test_smoothed_prior_against_a_double_loop():
    centres = torch.tensor(
        [[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [50.0, 50.0]], dtype=torch.float64
    )
    counts = torch.tensor([5.0, 0.0, 1.0, 2.0], dtype=torch.float64)
    got = smoothed_prior(counts, centres, sigma=5.0)
    c, n = centres.numpy(), counts.numpy()
    raw = [
        sum(math.exp(-((c[i] - c[j]) ** 2).sum() / 50.0) * n[j] for j in range(4)) for i in range(4)
    ]
    np.testing.assert_allclose(got.numpy(), np.array(raw) / sum(raw), rtol=1e-12)
    assert got[1] > 0  # smoothing gives unseen neighbours some mass


def test_loss_against_a_loop():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 5, generator=g)
    targets = torch.softmax(torch.randn(6, 5, generator=g), dim=1)
    weights = torch.rand(6, generator=g) + 0.5
    total = 0.0
    for n in range(6):
        row = logits[n].double().numpy()
        log_p = row - row.max() - math.log(np.exp(row - row.max()).sum())
        total += weights[n].item() * -(targets[n].double().numpy() * log_p).sum()
    got = colorization_loss(logits, targets, weights)
    assert got.item() == pytest.approx(total / 6, rel=1e-5)


def test_embed_sees_only_lightness(method):
    method.eval()
    g = torch.Generator().manual_seed(1)
    lab = torch.rand(2, 3, 16, 16, generator=g) * 20 - 10  # a, b in [-10, 10]: in gamut
    lab[:, 0] = lab[:, 0] + 55  # L in [45, 65]
    colour = lab_to_rgb(lab, clamp=False)
    other = lab.clone()
    other[:, 1:] *= -0.5  # other hues, same lightness
    other_rgb = lab_to_rgb(other, clamp=False)
    assert 0 <= min(colour.min(), other_rgb.min()) and max(colour.max(), other_rgb.max()) <= 1
    a, b = method.embed({"image": colour}), method.embed({"image": other_rgb})
    assert torch.allclose(a, b, atol=1e-4)
    assert not torch.allclose(a, method.embed({"image": lab_to_rgb(lab * 0.5)}), atol=1e-3)


def test_prior_counts_grow_only_in_training(method):
    method.train()
    before = method.bin_counts.clone()
    method(_batch())
    assert method.bin_counts.sum() - before.sum() == 4 * 4 * 4  # B * (S/4)^2 target pixels
    method.eval()
    with torch.no_grad():
        method(_batch())
    assert method.bin_counts.sum() - before.sum() == 64
    assert "bin_counts" in method.state_dict()


def test_targets_are_quarter_resolution_ab(method):
    assert method.centres.shape == (262, 2) and torch.equal(method.centres, ab_bins())
    logits = method.predict(torch.rand(2, 3, 16, 16))
    assert logits.shape == (2, 262, 4, 4)


def test_training_step_and_embed(method):
    method.train()
    method.zero_grad()
    batch = _batch()
    out = method(batch)
    assert math.isfinite(out["loss"].item())
    out["loss"].backward()
    missing = [n for n, p in method.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing
    method.after_step(1, 10)
    method.eval()
    feats = method.embed(batch)
    assert feats.shape == (4, 512) and torch.isfinite(feats).all()
    method.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert math.isfinite(method(batch)["loss"].item())


def test_regression_step():
    torch.manual_seed(0)
    ctx = BuildContext("resnet18", image_size=16, batch_size=4)
    m = METHODS.get("colorization").build(ctx, loss="regression", **TINY)
    out = m(_batch())
    out["loss"].backward()
    assert 0 < out["loss"].item() < 10
    assert all(p.grad is not None for p in m.parameters() if p.requires_grad)
    with pytest.raises(ValueError, match="regression"):
        METHODS.get("colorization").build(ctx, loss="l1", **TINY)


def test_export_records_grayscale_input(method, tmp_path):
    method.export(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert "L*" in config["input"] and config["mean"] == [0.5] * 3 and config["std"] == [0.5] * 3
    # the recorded recipe, applied by hand, feeds the exported encoder what it trained on
    from selfsup.backbones.vision import load_exported_vision

    encoder = load_exported_vision(tmp_path)
    method.eval()
    rgb = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    light = (rgb_to_lab(rgb)[:, :1] / 100).expand(-1, 3, -1, -1)
    mean = torch.tensor(config["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(config["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(
            encoder((light - mean) / std), method.embed({"image": rgb}), atol=1e-4
        )


def test_paper_defaults():
    d = METHODS.get("colorization").defaults
    assert (d.lr, d.betas, d.weight_decay, d.scale_lr) == (3e-5, (0.9, 0.99), 1e-3, False)
