"""Barlow Twins and VICReg terms against numpy, and the global-batch losses over two gloo
processes."""

import math

import numpy as np
import pytest
import torch

from selfsup.losses.redundancy import (
    barlow_twins_loss,
    covariance_term,
    cross_correlation,
    invariance_term,
    off_diagonal_term,
    on_diagonal_term,
    variance_term,
    vicreg_loss,
)
from selfsup.testing import gloo_loss_and_grads


def _pair(n=16, d=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    z1 = torch.randn(n, d, generator=g) * torch.linspace(0.5, 2.0, d) + 1.0
    z2 = 0.7 * z1 + 0.5 * torch.randn(n, d, generator=g)
    return z1, z2


def correlation_reference(a, b, eps=1e-5):
    """C_ij = sum_n a'_ni b'_nj / N with a', b' standardised by numpy's population std."""
    a, b = a.double().numpy(), b.double().numpy()
    a = (a - a.mean(0)) / np.sqrt(a.std(0) ** 2 + eps)
    b = (b - b.mean(0)) / np.sqrt(b.std(0) ** 2 + eps)
    n, d = a.shape
    c = np.zeros((d, d))
    for i in range(d):
        for j in range(d):
            c[i, j] = sum(a[k, i] * b[k, j] for k in range(n)) / n
    return c


def test_cross_correlation_and_barlow_terms_match_numpy():
    z1, z2 = _pair()
    c_ref = correlation_reference(z1, z2)
    c = cross_correlation(z1, z2)
    assert np.allclose(c.numpy(), c_ref, atol=1e-5)
    # without eps, C of a view with itself has a unit diagonal (Pearson correlation)
    assert np.allclose(np.diag(correlation_reference(z1, z1, eps=0.0)), 1.0)
    on_ref = sum((1 - c_ref[i, i]) ** 2 for i in range(5))
    off_ref = sum(c_ref[i, j] ** 2 for i in range(5) for j in range(5) if i != j)
    assert math.isclose(float(on_diagonal_term(c)), on_ref, rel_tol=1e-5)
    assert math.isclose(float(off_diagonal_term(c)), off_ref, rel_tol=1e-5)
    loss = barlow_twins_loss(z1, z2, 0.0051)
    assert math.isclose(float(loss), on_ref + 0.0051 * off_ref, rel_tol=1e-5)


def test_barlow_twins_is_zero_for_identical_decorrelated_views():
    x = torch.randn(64, 4, dtype=torch.float64)
    q, _ = torch.linalg.qr(x - x.mean(0))  # orthonormal columns, each orthogonal to ones
    z = (q * 8.0).float()  # (64, 4): zero mean, unit population variance, uncorrelated
    assert torch.allclose(cross_correlation(z, z), torch.eye(4), atol=1e-4)
    assert float(barlow_twins_loss(z, z, 0.0051)) < 1e-6


def test_vicreg_terms_match_numpy():
    z1, z2 = _pair(seed=1)
    a, b = z1.double().numpy(), z2.double().numpy()
    assert math.isclose(float(invariance_term(z1, z2)), np.mean((a - b) ** 2), rel_tol=1e-5)
    var_ref = np.mean(np.maximum(0.0, 1.0 - np.sqrt(a.var(axis=0, ddof=1) + 1e-4)))
    assert math.isclose(float(variance_term(z1)), var_ref, rel_tol=1e-5, abs_tol=1e-7)
    cov = np.cov(a, rowvar=False)  # unbiased, (D, D)
    cov_ref = (np.sum(cov**2) - np.sum(np.diag(cov) ** 2)) / a.shape[1]
    assert math.isclose(float(covariance_term(z1)), cov_ref, rel_tol=1e-5)


def test_variance_hinge_is_zero_above_unit_std_and_positive_below():
    torch.manual_seed(2)
    z = torch.randn(256, 8)
    assert float(variance_term(z * 3.0)) == 0.0
    assert math.isclose(
        float(variance_term(torch.zeros(4, 8))), 1.0 - math.sqrt(1e-4), rel_tol=1e-6
    )


def test_vicreg_loss_combines_terms_of_both_branches():
    z1, z2 = _pair(seed=3)
    out = vicreg_loss(z1, z2, 25.0, 25.0, 1.0)
    var = float(variance_term(z1) + variance_term(z2))
    cov = float(covariance_term(z1) + covariance_term(z2))
    expected = 25.0 * float(invariance_term(z1, z2)) + 25.0 * var + cov
    assert math.isclose(float(out["loss"]), expected, rel_tol=1e-6)
    assert math.isclose(float(out["variance"]), var, rel_tol=1e-6)
    assert math.isclose(float(out["covariance"]), cov, rel_tol=1e-6)


def test_losses_are_float32_under_bf16_autocast_with_gradients():
    z1, z2 = (z.bfloat16().requires_grad_(True) for z in _pair(seed=4))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bt = barlow_twins_loss(z1, z2)
        vic = vicreg_loss(z1, z2)["loss"]
    assert bt.dtype == vic.dtype == torch.float32
    (bt + vic).backward()
    assert z1.grad.abs().sum() > 0 and z2.grad.abs().sum() > 0


def _vicreg(z1, z2):
    return vicreg_loss(z1, z2)["loss"]


@pytest.mark.parametrize("loss_fn", [barlow_twins_loss, _vicreg], ids=["barlow", "vicreg"])
def test_two_process_losses_use_the_global_batch(loss_fn):
    z1, z2 = _pair(n=8, d=4, seed=5)
    z1[:4] += 3.0  # the processes' local statistics differ from the global ones
    loss, grad1, grad2 = gloo_loss_and_grads(loss_fn, z1, z2, world_size=2)
    a, c = z1.clone().requires_grad_(True), z2.clone().requires_grad_(True)
    expected = loss_fn(a, c)
    expected.backward()
    assert math.isclose(float(loss), float(expected.detach()), rel_tol=1e-5)
    assert torch.allclose(grad1, a.grad, atol=1e-5) and torch.allclose(grad2, c.grad, atol=1e-5)
