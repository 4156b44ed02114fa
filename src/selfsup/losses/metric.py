"""Triplet losses and the mining of triplets inside a labelled batch.

A triplet (anchor a, positive p, negative n) costs ``max(d(a, p) - d(a, n) + margin, 0)``: the
positive must be closer to the anchor than the negative by at least the margin (Weinberger & Saul
2009, "Distance Metric Learning for Large Margin Nearest Neighbor Classification"; Schroff,
Kalenichenko, Philbin 2015, "FaceNet", which uses the squared distance of L2-normalised
embeddings with margin 0.2).

Mining picks the triplets from a batch whose rows carry labels (for two-view self-supervision the
label is the image id, so a view's only positive is the other view of its image):

* batch hard (Hermans, Beyer, Leibe 2017, "In Defense of the Triplet Loss"): per anchor,
  the farthest positive and the closest negative;
* semi-hard (FaceNet, section 3.2): per anchor-positive pair, a negative farther than the positive
  but within the margin (the closest such one), else the closest negative;
* batch all (Hermans et al.): every valid triplet, averaged.

Index legend: N embeddings, A anchors, P anchor-positive pairs, D embedding dimension.
Masks: True = the pair has that relation (same label, is the anchor itself...).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

DISTANCES = ("euclidean", "sqeuclidean", "cosine")


def pairwise_distance(x: Tensor, y: Tensor, distance: str = "euclidean") -> Tensor:
    """Distances between every row of ``x`` and every row of ``y``.

    Args:
        x: (N, D).
        y: (M, D).
        distance: "euclidean" (L2), "sqeuclidean" (squared L2) or "cosine" (1 - cosine similarity).

    Returns:
        (N, M) distances.
    """
    _check_distance(distance)
    if distance == "cosine":
        return 1.0 - F.normalize(x, dim=1) @ F.normalize(y, dim=1).T
    sq = (x * x).sum(1, keepdim=True) + (y * y).sum(1) - 2.0 * x @ y.T  # (N, M)
    sq = sq.clamp_min(0.0)  # the expansion can dip below zero by rounding
    if distance == "sqeuclidean":
        return sq
    # sqrt has an infinite slope at 0 (an embedding and itself, or two equal views); the clamp
    # keeps the gradient finite there.
    return sq.clamp_min(1e-12).sqrt()


def triplet_loss(
    anchor: Tensor,
    positive: Tensor,
    negative: Tensor,
    margin: float,
    distance: str = "euclidean",
) -> Tensor:
    """Mean hinge ``max(d(a, p) - d(a, n) + margin, 0)`` over given triplets.

    Args:
        anchor: (B, D).
        positive: (B, D), row i the positive of ``anchor[i]``.
        negative: (B, D), row i the negative of ``anchor[i]``.
        margin: required gap between the negative and the positive distance.
        distance: see :func:`pairwise_distance`.

    Returns:
        Scalar loss.
    """
    with torch.autocast(anchor.device.type, enabled=False):
        a, p, n = anchor.float(), positive.float(), negative.float()
        d_ap = _paired_distance(a, p, distance)  # (B,)
        d_an = _paired_distance(a, n, distance)  # (B,)
        return F.relu(d_ap - d_an + margin).mean()


def batch_hard_triplet_loss(
    emb: Tensor,
    labels: Tensor,
    margin: float,
    distance: str = "euclidean",
    anchors: Tensor | None = None,
) -> Tensor:
    """Batch-hard triplet loss (Hermans et al. 2017): hardest positive and negative per anchor.

    Args:
        emb: (N, D) embeddings.
        labels: (N,) integer labels; equal labels are positives of each other.
        margin: hinge margin.
        distance: see :func:`pairwise_distance`.
        anchors: (A,) rows of ``emb`` that act as anchors (default: all). Under data parallelism
            each process passes its own rows of the gathered batch.

    Returns:
        Scalar: mean over the anchors that have at least one positive and one negative (0 when
        none has).
    """
    with torch.autocast(emb.device.type, enabled=False):
        dist, pos, neg = _relations(emb.float(), labels, distance, anchors)  # (A, N) each
        hardest_pos = dist.masked_fill(~pos, float("-inf")).amax(1)  # (A,)
        hardest_neg = dist.masked_fill(~neg, float("inf")).amin(1)  # (A,)
        valid = pos.any(1) & neg.any(1)  # (A,)
        return _masked_mean(F.relu(hardest_pos - hardest_neg + margin), valid)


def semi_hard_triplet_loss(
    emb: Tensor,
    labels: Tensor,
    margin: float,
    distance: str = "euclidean",
    anchors: Tensor | None = None,
) -> Tensor:
    """FaceNet's semi-hard triplet loss over every anchor-positive pair of the batch.

    For each pair (a, p) the negative is the closest one farther than the positive: a semi-hard
    negative (``d(a, p) < d(a, n) < d(a, p) + margin``) when there is one, else one beyond the
    margin, which costs nothing. When every negative is closer than the positive, the farthest
    of them is used: FaceNet (section 3.2) warns that the hardest negatives "can result in a
    collapsed model" early in training, so the fallback is never the hardest one (as in
    TensorFlow Addons' ``triplet_semihard_loss``).

    Args:
        emb: (N, D) embeddings.
        labels: (N,) integer labels.
        margin: hinge margin.
        distance: see :func:`pairwise_distance`.
        anchors: (A,) rows of ``emb`` that act as anchors (default: all).

    Returns:
        Scalar: mean over the anchor-positive pairs whose anchor has a negative.
    """
    with torch.autocast(emb.device.type, enabled=False):
        dist, pos, neg = _relations(emb.float(), labels, distance, anchors)  # (A, N) each
        pair_anchor, pair_pos = pos.nonzero(as_tuple=True)  # (P,) each
        d_ap = dist[pair_anchor, pair_pos]  # (P,)
        d_an = dist[pair_anchor]  # (P, N)
        is_neg = neg[pair_anchor]  # (P, N)
        farther = is_neg & (d_an > d_ap[:, None])  # (P, N) negatives beyond the positive
        closest_farther = d_an.masked_fill(~farther, float("inf")).amin(1)  # (P,)
        farthest = d_an.masked_fill(~is_neg, float("-inf")).amax(1)  # (P,)
        d_neg = torch.where(farther.any(1), closest_farther, farthest)  # (P,)
        return _masked_mean(F.relu(d_ap - d_neg + margin), is_neg.any(1))


def batch_all_triplet_loss(
    emb: Tensor,
    labels: Tensor,
    margin: float,
    distance: str = "euclidean",
    anchors: Tensor | None = None,
) -> Tensor:
    """Batch-all triplet loss (Hermans et al. 2017): the mean over every valid triplet.

    Hermans et al. also discuss averaging over the non-zero terms only; this is the plain mean.

    Args:
        emb: (N, D) embeddings.
        labels: (N,) integer labels.
        margin: hinge margin.
        distance: see :func:`pairwise_distance`.
        anchors: (A,) rows of ``emb`` that act as anchors (default: all).

    Returns:
        Scalar loss (0 when the batch holds no valid triplet).
    """
    with torch.autocast(emb.device.type, enabled=False):
        dist, pos, neg = _relations(emb.float(), labels, distance, anchors)  # (A, N) each
        pair_anchor, pair_pos = pos.nonzero(as_tuple=True)  # (P,) each
        d_ap = dist[pair_anchor, pair_pos]  # (P,)
        hinge = F.relu(d_ap[:, None] - dist[pair_anchor] + margin)  # (P, N)
        return _masked_mean(hinge, neg[pair_anchor])


def _relations(
    emb: Tensor, labels: Tensor, distance: str, anchors: Tensor | None
) -> tuple[Tensor, Tensor, Tensor]:
    """Anchor-to-all distances (A, N) and the positive / negative masks (A, N)."""
    n = emb.shape[0]
    if labels.shape != (n,):
        raise ValueError(f"labels must have shape ({n},), got {tuple(labels.shape)}")
    rows = torch.arange(n, device=emb.device)
    anchors = rows if anchors is None else anchors
    dist = pairwise_distance(emb[anchors], emb, distance)  # (A, N)
    same = labels[anchors, None] == labels[None, :]  # (A, N) True = same label
    is_self = anchors[:, None] == rows[None, :]  # (A, N) True = the anchor itself
    return dist, same & ~is_self, ~same


def _paired_distance(x: Tensor, y: Tensor, distance: str) -> Tensor:
    """Row-wise distance between (B, D) tensors -> (B,)."""
    _check_distance(distance)
    if distance == "cosine":
        return 1.0 - F.cosine_similarity(x, y, dim=1)
    sq = ((x - y) ** 2).sum(1)
    return sq if distance == "sqeuclidean" else sq.clamp_min(1e-12).sqrt()


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values`` where ``mask`` is True; a zero that keeps the graph when none is."""
    if not bool(mask.any()):
        return values.sum() * 0.0
    return values[mask].mean()


def _check_distance(distance: str) -> None:
    if distance not in DISTANCES:
        raise ValueError(f"unknown distance {distance!r}; valid: {', '.join(DISTANCES)}")
