"""Redundancy-reduction losses: Barlow Twins and VICReg, term by term.

Barlow Twins (Zbontar et al. 2021, eq. 1-2): with C the cross-correlation matrix of the two views'
embeddings, each standardised along the batch, ``sum_i (1 - C_ii)^2 + lambda sum_{i != j} C_ij^2``.

VICReg (Bardes, Ponce, LeCun 2022, eq. 1-6): ``lambda s(Z, Z') + mu [v(Z) + v(Z')] + nu [c(Z) +
c(Z')]`` with s the mean squared error, v a hinge on each dimension's standard deviation and c the
sum of squared off-diagonal covariances divided by D.

Every statistic is over the global batch: the embeddings are gathered from every process with
gradients (:func:`gather_with_grad`), so each process computes the same global loss and its
gradient reaches every process's samples. Everything is computed in float32 with autocast off.

Index legend: B samples on this process, N samples over all processes, D embedding dimension.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from selfsup.losses.distributed import gather_with_grad


def _off_diagonal(m: Tensor) -> Tensor:
    """(D, D) -> the D * (D - 1) off-diagonal entries, flattened."""
    return m[~torch.eye(m.shape[0], dtype=torch.bool, device=m.device)]


def cross_correlation(z1: Tensor, z2: Tensor, eps: float = 1e-5) -> Tensor:
    """Barlow Twins' C: ``z1n.T @ z2n / N`` with each view standardised along the batch as batch
    norm without affine parameters does in training (biased variance, ``eps`` inside the root).

    Args:
        z1: (N, D) embeddings of the first view.
        z2: (N, D) embeddings of the second view.
        eps: batch-norm epsilon.

    Returns:
        (D, D) cross-correlation.
    """
    z1 = (z1 - z1.mean(0)) / torch.sqrt(z1.var(0, unbiased=False) + eps)  # (N, D)
    z2 = (z2 - z2.mean(0)) / torch.sqrt(z2.var(0, unbiased=False) + eps)  # (N, D)
    return z1.T @ z2 / z1.shape[0]  # (D, D)


def on_diagonal_term(c: Tensor) -> Tensor:
    """Invariance term of Barlow Twins: ``sum_i (1 - C_ii)^2`` for C (D, D)."""
    return (1.0 - torch.diagonal(c)).pow(2).sum()


def off_diagonal_term(c: Tensor) -> Tensor:
    """Redundancy-reduction term of Barlow Twins: ``sum_{i != j} C_ij^2`` for C (D, D)."""
    return _off_diagonal(c).pow(2).sum()


def barlow_twins_loss(z1: Tensor, z2: Tensor, lambd: float = 0.0051, gather: bool = True) -> Tensor:
    """Barlow Twins' loss over the global batch.

    Args:
        z1: (B, D) projector outputs of the first view.
        z2: (B, D) projector outputs of the second view, row i paired with ``z1[i]``.
        lambd: weight of the off-diagonal term (paper: 0.0051).
        gather: gather the other processes' embeddings (with gradients) when distributed.

    Returns:
        Scalar loss.
    """
    with torch.autocast(z1.device.type, enabled=False):
        z1, z2 = z1.float(), z2.float()
        if gather:
            z1, z2 = gather_with_grad(z1), gather_with_grad(z2)  # (N, D) each
        c = cross_correlation(z1, z2)  # (D, D)
        return on_diagonal_term(c) + lambd * off_diagonal_term(c)


def invariance_term(z1: Tensor, z2: Tensor) -> Tensor:
    """VICReg's s(Z, Z'): mean over samples and dimensions of ``(z1 - z2)^2``. z1, z2: (N, D)."""
    return F.mse_loss(z1, z2)


def variance_term(z: Tensor, gamma: float = 1.0, eps: float = 1e-4) -> Tensor:
    """VICReg's v(Z): mean over dimensions of ``relu(gamma - sqrt(Var(z_j) + eps))``, with the
    unbiased variance along the batch. z: (N, D)."""
    return F.relu(gamma - torch.sqrt(z.var(dim=0) + eps)).mean()


def covariance_term(z: Tensor) -> Tensor:
    """VICReg's c(Z): sum of squared off-diagonal entries of the (unbiased) covariance matrix,
    divided by D. z: (N, D)."""
    n, d = z.shape
    z = z - z.mean(dim=0)  # (N, D)
    cov = z.T @ z / (n - 1)  # (D, D)
    return _off_diagonal(cov).pow(2).sum() / d


def vicreg_loss(
    z1: Tensor,
    z2: Tensor,
    sim_coeff: float = 25.0,
    std_coeff: float = 25.0,
    cov_coeff: float = 1.0,
    gather: bool = True,
) -> dict[str, Tensor]:
    """VICReg's loss (eq. 6) over the global batch, with its three terms for logging.

    The variance and covariance terms are summed over the two branches, as in the paper's eq. 6.

    Args:
        z1: (B, D) expander outputs of the first view.
        z2: (B, D) expander outputs of the second view, row i paired with ``z1[i]``.
        sim_coeff: lambda, weight of the invariance term.
        std_coeff: mu, weight of the variance terms.
        cov_coeff: nu, weight of the covariance terms.
        gather: gather the other processes' embeddings (with gradients) when distributed.

    Returns:
        ``{"loss", "invariance", "variance", "covariance"}`` scalars (terms unweighted).
    """
    with torch.autocast(z1.device.type, enabled=False):
        z1, z2 = z1.float(), z2.float()
        if gather:
            z1, z2 = gather_with_grad(z1), gather_with_grad(z2)  # (N, D) each
        inv = invariance_term(z1, z2)
        var = variance_term(z1) + variance_term(z2)
        cov = covariance_term(z1) + covariance_term(z2)
        loss = sim_coeff * inv + std_coeff * var + cov_coeff * cov
        return {"loss": loss, "invariance": inv, "variance": var, "covariance": cov}
