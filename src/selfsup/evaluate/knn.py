"""Weighted k-nearest-neighbour classification of frozen features.

The protocol of Wu et al. 2018 ("Unsupervised Feature Learning via Non-Parametric Instance
Discrimination", section 3.4), used by InstDisc, MoCo, DINO and most papers since: cosine
similarity between L2-normalised features, the k most similar bank items vote for their class
with weight ``exp(similarity / T)``. Defaults k=200, T=0.1 as in that paper and DINO.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


@torch.no_grad()
def knn_scores(
    bank: Tensor,
    bank_labels: Tensor,
    queries: Tensor,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
    chunk: int = 1024,
) -> Tensor:
    """Class scores of each query from its k nearest bank items.

    Args:
        bank: (N, D) features of the labelled memory bank.
        bank_labels: (N,) int64 labels in [0, num_classes).
        queries: (M, D) features to classify.
        num_classes: C.
        k: neighbours (clipped to N).
        temperature: T of the vote weight exp(sim / T).
        chunk: queries per matrix product (bounds memory).

    Returns:
        (M, C) summed vote weights.
    """
    if k < 1 or temperature <= 0:
        raise ValueError(f"k must be >= 1 and temperature > 0, got k={k}, T={temperature}")
    bank = F.normalize(bank.float(), dim=1)
    queries = F.normalize(queries.float(), dim=1)
    k = min(k, bank.shape[0])
    out = []
    with torch.autocast(bank.device.type, enabled=False):  # fp32 votes, also inside training
        for start in range(0, queries.shape[0], chunk):
            sim = queries[start : start + chunk] @ bank.T  # (m, N)
            top_sim, top_idx = sim.topk(k, dim=1)  # (m, k)
            weights = (top_sim / temperature).exp()  # (m, k)
            votes = torch.zeros(sim.shape[0], num_classes, device=sim.device)  # (m, C)
            votes.scatter_add_(1, bank_labels[top_idx], weights)
            out.append(votes)
    return torch.cat(out) if out else torch.zeros(0, num_classes)


def topk_accuracy(scores: Tensor, labels: Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """Top-k accuracies in percent, e.g. ``{"top1": 71.2, "top5": 95.0}`` (k <= C only)."""
    result = {}
    for k in ks:
        if k > scores.shape[1]:
            continue
        hit = (scores.topk(k, dim=1).indices == labels[:, None]).any(dim=1)
        result[f"top{k}"] = 100.0 * hit.float().mean().item()
    return result


def confusion_matrix(scores: Tensor, labels: Tensor, num_classes: int) -> list[list[int]]:
    """``[true][predicted]`` counts of the top-1 predictions of ``scores (M, C)``."""
    pred = scores.argmax(dim=1).cpu()
    flat = labels.cpu().long() * num_classes + pred
    counts = torch.bincount(flat, minlength=num_classes * num_classes)
    return counts.view(num_classes, num_classes).tolist()


def knn_accuracy(
    bank: Tensor,
    bank_labels: Tensor,
    queries: Tensor,
    query_labels: Tensor,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
) -> dict[str, float]:
    """kNN top-1/top-5 accuracy (percent) of ``queries`` against the labelled ``bank``."""
    result = knn_result(bank, bank_labels, queries, query_labels, num_classes, k, temperature)
    return {name: value for name, value in result.items() if isinstance(value, float)}


def knn_result(
    bank: Tensor,
    bank_labels: Tensor,
    queries: Tensor,
    query_labels: Tensor,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
) -> dict[str, float | list[list[int]]]:
    """:func:`knn_accuracy` and the ``confusion`` matrix of the top-1 votes."""
    scores = knn_scores(bank, bank_labels, queries, num_classes, k, temperature)
    confusion = confusion_matrix(scores, query_labels, num_classes)
    return {**topk_accuracy(scores, query_labels), "confusion": confusion}
