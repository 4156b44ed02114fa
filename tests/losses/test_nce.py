"""Binary NCE and the softmax contrastive loss against formulas written out with numpy loops."""

import math

import numpy as np
import pytest
import torch

from selfsup.losses.nce import binary_nce, softmax_contrastive


def nce_ref(pos_prob, neg_prob, k, noise):
    """Wu et al. 2018 section 3.2 with probabilities: h = p / (p + k Pn)."""
    total = 0.0
    for b in range(len(pos_prob)):
        h = pos_prob[b] / (pos_prob[b] + k * noise)
        term = -math.log(h)
        for p in neg_prob[b]:
            term -= math.log(1.0 - p / (p + k * noise))
        total += term
    return total / len(pos_prob)


def test_binary_nce_matches_probability_formula():
    rng = np.random.default_rng(0)
    n_instances, k = 1000, 16
    pos_prob = rng.uniform(1e-4, 5e-3, size=5)
    neg_prob = rng.uniform(1e-5, 2e-3, size=(5, k))
    got = binary_nce(
        torch.tensor(np.log(pos_prob)), torch.tensor(np.log(neg_prob)), 1.0 / n_instances
    )
    assert float(got) == pytest.approx(nce_ref(pos_prob, neg_prob, k, 1.0 / n_instances), rel=1e-6)


def test_binary_nce_num_noise_overrides_the_column_count():
    rng = np.random.default_rng(1)
    pos_prob, neg_prob = rng.uniform(0.01, 0.1, size=3), rng.uniform(0.01, 0.1, size=(3, 4))
    got = binary_nce(torch.tensor(np.log(pos_prob)), torch.tensor(np.log(neg_prob)), 0.01, 100)
    assert float(got) == pytest.approx(nce_ref(pos_prob, neg_prob, 100, 0.01), rel=1e-6)


def test_binary_nce_is_finite_for_extreme_scores():
    pos = torch.tensor([200.0, -200.0])
    neg = torch.tensor([[300.0, -300.0], [0.0, 1.0]])
    assert torch.isfinite(binary_nce(pos, neg, 1e-6))


def test_binary_nce_gradient_raises_positive_and_lowers_negatives():
    pos = torch.zeros(3, requires_grad=True)
    neg = torch.zeros(3, 5, requires_grad=True)
    binary_nce(pos, neg, 0.2).backward()
    assert (pos.grad < 0).all() and (neg.grad > 0).all()  # descent raises pos, lowers neg


def softmax_ref(q, p, negs, tau):
    """-log softmax of the positive, with explicit exponentials of cosine similarities."""

    def cos(a, b):
        return float(a @ b) / (np.linalg.norm(a) * np.linalg.norm(b))

    total = 0.0
    for b in range(len(q)):
        num = math.exp(cos(q[b], p[b]) / tau)
        den = num + sum(math.exp(cos(q[b], n) / tau) for n in negs[b])
        total -= math.log(num / den)
    return total / len(q)


def test_softmax_contrastive_matches_loop_per_query_negatives():
    torch.manual_seed(0)
    q, p, n = torch.randn(4, 6), torch.randn(4, 6), torch.randn(4, 7, 6)
    got = softmax_contrastive(q, p, n, 0.2)
    assert float(got) == pytest.approx(softmax_ref(q.numpy(), p.numpy(), n.numpy(), 0.2), rel=1e-5)


def test_softmax_contrastive_shared_negatives_equal_broadcast_ones():
    torch.manual_seed(1)
    q, p, n = torch.randn(5, 3), torch.randn(5, 3), torch.randn(9, 3)
    shared = softmax_contrastive(q, p, n, 0.5)
    broadcast = softmax_contrastive(q, p, n.expand(5, 9, 3), 0.5)
    assert torch.allclose(shared, broadcast, atol=1e-6)
    ref = softmax_ref(q.numpy(), p.numpy(), [n.numpy()] * 5, 0.5)
    assert float(shared) == pytest.approx(ref, rel=1e-5)


def test_softmax_contrastive_without_normalisation_uses_raw_dot_products():
    q = torch.tensor([[2.0, 0.0]])
    p = torch.tensor([[1.0, 0.0]])
    n = torch.tensor([[0.0, 3.0]])
    expected = -math.log(math.exp(2.0) / (math.exp(2.0) + math.exp(0.0)))
    assert float(softmax_contrastive(q, p, n, 1.0, normalize=False)) == pytest.approx(expected)


def test_bf16_autocast_keeps_fp32_losses():
    torch.manual_seed(2)
    q, p, n = torch.randn(4, 8), torch.randn(4, 8), torch.randn(16, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        soft = softmax_contrastive(q.bfloat16(), p.bfloat16(), n.bfloat16(), 0.07)
        nce = binary_nce(torch.randn(4).bfloat16(), torch.randn(4, 16).bfloat16(), 1e-3)
    assert soft.dtype == nce.dtype == torch.float32
    assert torch.isfinite(soft) and torch.isfinite(nce)
