"""Variational lower bounds on mutual information from a matrix of critic scores.

Poole, Ozair, van den Oord, Alemi, Tucker 2019, "On Variational Bounds of Mutual Information".
Given B pairs (x_i, y_i) drawn from the joint p(x, y) and a critic f, the (B, B) matrix
``scores[i, j] = f(x_i, y_j)`` holds joint pairs on its diagonal and pairs from the product of
marginals p(x) p(y) off it.

* InfoNCE (van den Oord et al. 2018): ``mean_i f(x_i, y_i) - mean_i logsumexp_j
  f(x_i, y_j) + log B``. Low variance, but never above ``log B``. Optimal critic: the log density
  ratio ``log p(y | x) / p(y)`` up to any function of x.
* NWJ (Nguyen, Wainwright, Jordan 2010, also f-GAN KL / MINE-f): ``E_p[f] - exp(-1)
  E_{p(x)p(y)}[exp f]``. Not capped, higher variance. Optimal critic: ``1 + log p(y | x) / p(y)``.

Both are estimates to maximise (train a critic with the negative as loss); their expectation is at
most the true mutual information in nats.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def infonce_bound(scores: Tensor) -> Tensor:
    """InfoNCE lower bound on I(X; Y) in nats.

    Args:
        scores: (B, B) critic values, ``scores[i, j] = f(x_i, y_j)``; the diagonal holds the
            joint pairs.

    Returns:
        Scalar estimate, at most ``log B``.
    """
    b = _check_square(scores)
    with torch.autocast(scores.device.type, enabled=False):
        s = scores.float()
        return s.diagonal().mean() - torch.logsumexp(s, dim=1).mean() + math.log(b)


def nwj_bound(scores: Tensor) -> Tensor:
    """NWJ lower bound on I(X; Y) in nats (off-diagonal pairs as the product of marginals).

    Args:
        scores: (B, B) critic values, ``scores[i, j] = f(x_i, y_j)``; the diagonal holds the
            joint pairs.

    Returns:
        Scalar estimate.
    """
    b = _check_square(scores)
    if b < 2:
        raise ValueError("nwj_bound needs B >= 2 for off-diagonal pairs")
    with torch.autocast(scores.device.type, enabled=False):
        s = scores.float()
        off = ~torch.eye(b, dtype=torch.bool, device=s.device)  # (B, B) True = x_i, y_j unpaired
        # exp(-1) * exp(f) folded into exp(f - 1): one exponential, and no overflow for f < 89
        return s.diagonal().mean() - torch.exp(s[off] - 1.0).mean()


def _check_square(scores: Tensor) -> int:
    if scores.ndim != 2 or scores.shape[0] != scores.shape[1]:
        raise ValueError(f"scores must be a (B, B) matrix, got {tuple(scores.shape)}")
    return scores.shape[0]
