"""Triplet losses against explicit loops over anchors, positives and negatives (numpy)."""

import numpy as np
import pytest
import torch

from selfsup.losses.metric import (
    batch_all_triplet_loss,
    batch_hard_triplet_loss,
    pairwise_distance,
    semi_hard_triplet_loss,
    triplet_loss,
)


def dist_np(a, b, distance):
    if distance == "cosine":
        return 1.0 - float(a @ b) / (np.linalg.norm(a) * np.linalg.norm(b))
    sq = float(np.sum((a - b) ** 2))
    return sq if distance == "sqeuclidean" else np.sqrt(sq)


def batch_hard_ref(x, labels, margin, distance, anchors):
    terms = []
    for a in anchors:
        pos = [
            dist_np(x[a], x[p], distance)
            for p in range(len(x))
            if labels[p] == labels[a] and p != a
        ]
        neg = [dist_np(x[a], x[n], distance) for n in range(len(x)) if labels[n] != labels[a]]
        if pos and neg:
            terms.append(max(max(pos) - min(neg) + margin, 0.0))
    return np.mean(terms)


def semi_hard_ref(x, labels, margin, distance):
    terms = []
    for a in range(len(x)):
        negs = [dist_np(x[a], x[n], distance) for n in range(len(x)) if labels[n] != labels[a]]
        for p in range(len(x)):
            if p == a or labels[p] != labels[a]:
                continue
            d_ap = dist_np(x[a], x[p], distance)
            farther = [d for d in negs if d > d_ap]  # semi-hard first, else beyond the margin
            d_an = min(farther) if farther else max(negs)  # never the hardest as a fallback
            terms.append(max(d_ap - d_an + margin, 0.0))
    return np.mean(terms)


def batch_all_ref(x, labels, margin, distance):
    terms = []
    for a in range(len(x)):
        for p in range(len(x)):
            if p == a or labels[p] != labels[a]:
                continue
            for n in range(len(x)):
                if labels[n] != labels[a]:
                    d = dist_np(x[a], x[p], distance) - dist_np(x[a], x[n], distance)
                    terms.append(max(d + margin, 0.0))
    return np.mean(terms)


@pytest.mark.parametrize("distance", ["euclidean", "sqeuclidean", "cosine"])
def test_triplet_loss_matches_loop(distance):
    torch.manual_seed(0)
    a, p, n = torch.randn(6, 5), torch.randn(6, 5), torch.randn(6, 5)
    margin = 0.5
    ref = np.mean(
        [
            max(
                dist_np(a[i].numpy(), p[i].numpy(), distance)
                - dist_np(a[i].numpy(), n[i].numpy(), distance)
                + margin,
                0,
            )
            for i in range(6)
        ]
    )
    assert float(triplet_loss(a, p, n, margin, distance)) == pytest.approx(ref, rel=1e-5)


def test_triplet_loss_zero_when_margin_met_and_hinge_otherwise():
    a = torch.tensor([[0.0, 0.0]])
    p = torch.tensor([[1.0, 0.0]])
    n = torch.tensor([[3.0, 0.0]])
    assert float(triplet_loss(a, p, n, margin=1.0)) == 0.0
    assert float(triplet_loss(a, p, n, margin=2.5)) == pytest.approx(0.5)
    assert float(triplet_loss(a, n, p, margin=0.0)) == pytest.approx(2.0)


def test_pairwise_distance_matches_cdist():
    torch.manual_seed(0)
    x, y = torch.randn(5, 7), torch.randn(4, 7)
    assert torch.allclose(pairwise_distance(x, y), torch.cdist(x, y), atol=1e-5)
    assert torch.allclose(pairwise_distance(x, y, "sqeuclidean"), torch.cdist(x, y) ** 2, atol=1e-4)


# Classes of unequal size, one singleton (an anchor without positives).
LABELS = [0, 0, 0, 1, 1, 2, 2, 2, 3]


@pytest.mark.parametrize("distance", ["euclidean", "sqeuclidean", "cosine"])
def test_batch_hard_matches_loop(distance):
    torch.manual_seed(1)
    x = torch.randn(len(LABELS), 4)
    labels = torch.tensor(LABELS)
    ref = batch_hard_ref(x.numpy(), LABELS, 0.3, distance, range(len(LABELS)))
    assert float(batch_hard_triplet_loss(x, labels, 0.3, distance)) == pytest.approx(ref, rel=1e-5)
    # a subset of anchors, as each process passes under data parallelism
    anchors = torch.tensor([1, 4, 8, 6])
    ref = batch_hard_ref(x.numpy(), LABELS, 0.3, distance, anchors.tolist())
    got = batch_hard_triplet_loss(x, labels, 0.3, distance, anchors)
    assert float(got) == pytest.approx(ref, rel=1e-5)


@pytest.mark.parametrize("margin", [0.1, 0.5, 2.0])
def test_semi_hard_matches_loop(margin):
    torch.manual_seed(2)
    x = torch.randn(len(LABELS), 3)
    ref = semi_hard_ref(x.numpy(), LABELS, margin, "euclidean")
    got = semi_hard_triplet_loss(x, torch.tensor(LABELS), margin)
    assert float(got) == pytest.approx(ref, rel=1e-5)


def test_semi_hard_prefers_the_semi_hard_negative():
    # anchor 0, positive 1 at distance 1; negatives at 0.5 (hard), 1.2 (semi-hard), 5 (easy)
    x = torch.tensor([[0.0], [1.0], [0.5], [1.2], [5.0]])
    labels = torch.tensor([0, 0, 1, 2, 3])
    loss = semi_hard_triplet_loss(x, labels, margin=0.5, anchors=torch.tensor([0]))
    assert float(loss) == pytest.approx(1.0 - 1.2 + 0.5)
    # without a semi-hard one it takes the closest negative beyond the margin: no cost
    keep = torch.tensor([0, 1, 2, 4])
    loss = semi_hard_triplet_loss(x[keep], labels[keep], margin=0.5, anchors=torch.tensor([0]))
    assert float(loss) == 0.0
    # with every negative closer than the positive, the farthest of them, not the hardest
    x2 = torch.tensor([[0.0], [1.0], [0.5], [0.8]])
    loss = semi_hard_triplet_loss(x2, torch.tensor([0, 0, 1, 2]), 0.5, anchors=torch.tensor([0]))
    assert float(loss) == pytest.approx(1.0 - 0.8 + 0.5)


def test_batch_all_matches_loop():
    torch.manual_seed(3)
    x = torch.randn(len(LABELS), 4)
    ref = batch_all_ref(x.numpy(), LABELS, 0.4, "cosine")
    got = batch_all_triplet_loss(x, torch.tensor(LABELS), 0.4, "cosine")
    assert float(got) == pytest.approx(ref, rel=1e-5)


@pytest.mark.parametrize(
    "fn", [batch_hard_triplet_loss, semi_hard_triplet_loss, batch_all_triplet_loss]
)
def test_mining_gradients_are_finite_with_identical_views(fn):
    # two equal views: zero self- and positive distances must not give NaN gradients
    x = torch.randn(4, 8)
    emb = torch.cat([x, x]).requires_grad_(True)
    labels = torch.arange(4).repeat(2)
    fn(emb, labels, 10.0).backward()  # a margin wide enough that every hinge is active
    assert torch.isfinite(emb.grad).all() and emb.grad.abs().sum() > 0


def test_no_valid_triplet_gives_zero_with_a_graph():
    emb = torch.randn(3, 4, requires_grad=True)
    loss = batch_hard_triplet_loss(emb, torch.tensor([0, 1, 2]), 0.2)  # no positives
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert emb.grad is not None


def test_unknown_distance_names_the_valid_ones():
    with pytest.raises(ValueError, match="cosine"):
        pairwise_distance(torch.randn(2, 2), torch.randn(2, 2), "manhattan")


def test_bf16_autocast_gives_fp32_loss():
    x = torch.randn(8, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = batch_hard_triplet_loss(x.bfloat16(), torch.arange(4).repeat(2), 0.2)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
