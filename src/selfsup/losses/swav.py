"""SwAV's online codes and swapped-prediction loss.

Caron et al. 2020, "Unsupervised Learning of Visual Features by Contrasting Cluster Assignments".
Codes Q are an equipartitioned soft assignment of the batch to K prototypes, found by a few
Sinkhorn-Knopp iterations on ``exp(scores / epsilon)`` (section 3.1, eq. 3-4); the loss predicts the
code of each global crop from every other crop (eq. 1-2).

Index legend: B samples on this process, W world size, K prototypes, V crops, G crops with codes.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor


def _all_reduce(x: Tensor, op: dist.ReduceOp = dist.ReduceOp.SUM) -> Tensor:
    """In-place all-reduce when distributed (no gradient: Sinkhorn runs without one)."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(x, op=op)
    return x


@torch.no_grad()
def sinkhorn_knopp(scores: Tensor, epsilon: float = 0.05, iterations: int = 3) -> Tensor:
    """Soft codes with equal prototype marginals over the global batch (SwAV, eq. 3-4).

    Alternately rescales ``exp(scores / epsilon)`` so that every prototype receives the same total
    mass and every sample a unit of mass. The sums run over all processes, so the marginals are
    those of the global batch (``W * B`` rows when every process passes B). Computed in float32 with autocast off: with
    epsilon = 0.05 the exponent spans 40 units for cosine scores.

    Normalisation of the result: every row (sample) sums to exactly 1, the code of that sample;
    every column (prototype) sums to ``W * B / K`` over the global batch at convergence, which
    ``iterations`` = 3 reaches approximately (the paper's setting).

    Args:
        scores: (B, K) similarities of this process's samples to the prototypes.
        epsilon: entropy regularisation; smaller gives sharper codes.
        iterations: Sinkhorn-Knopp iterations (>= 1).

    Returns:
        (B, K) float32 codes.
    """
    with torch.autocast(scores.device.type, enabled=False):
        scores = scores.float() / epsilon  # (B, K)
        # A constant shift cancels in the normalisation; the global maximum keeps exp finite.
        q = torch.exp(scores - _all_reduce(scores.max(), dist.ReduceOp.MAX)).T  # (K, B)
        k = q.shape[0]
        n = _all_reduce(torch.tensor(float(q.shape[1]), device=q.device))  # global rows
        q /= _all_reduce(q.sum())
        for _ in range(iterations):
            q /= _all_reduce(q.sum(dim=1, keepdim=True))  # every prototype: total mass 1 ...
            q /= k  # ... then 1 / K
            q /= q.sum(dim=0, keepdim=True)  # every sample: mass 1 (its column is local) ...
            q /= n  # ... then 1 / n
        return (q * n).T  # (B, K), rows sum to 1


def swapped_prediction_loss(scores: Tensor, codes: Tensor, temperature: float = 0.1) -> Tensor:
    """SwAV's swapped prediction (eq. 1-2), averaged over samples and (code, crop) pairs.

    The code ``codes[i]`` of global crop i is the target of the softmax prediction
    ``softmax(scores[v] / temperature)`` of every other crop v != i; crop i does not predict its
    own code. Computed in float32 with autocast off.

    Args:
        scores: (V, B, K) prototype scores of every crop; the first G crops are those of ``codes``.
        codes: (G, B, K) targets (rows summing to 1), without gradient.
        temperature: softmax temperature tau.

    Returns:
        Scalar: mean over the ``G * (V - 1)`` pairs of the batch-mean cross entropy.
    """
    num_codes, num_crops = codes.shape[0], scores.shape[0]
    if num_crops < 2 or num_codes > num_crops:
        raise ValueError(f"need V >= 2 crops and G <= V codes, got V={num_crops}, G={num_codes}")
    with torch.autocast(scores.device.type, enabled=False):
        log_p = F.log_softmax(scores.float() / temperature, dim=-1)  # (V, B, K)
        # g: code's crop, v: predicting crop, b: sample, k: prototype
        cross = -torch.einsum("gbk,vbk->gv", codes.float(), log_p) / scores.shape[1]  # (G, V)
        same = torch.eye(num_codes, num_crops, dtype=torch.bool, device=scores.device)
        return cross[~same].mean()
