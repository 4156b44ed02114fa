"""SwAV's Sinkhorn-Knopp codes and swapped-prediction loss against independent computations, and
the Sinkhorn marginals over two gloo processes.

(Named ``test_swav_loss.py``: ``tests/methods/test_swav.py`` holds the method's tests, and pytest's
default import mode rejects two test modules with one basename.)"""

import math

import numpy as np
import torch

from selfsup.losses.swav import sinkhorn_knopp, swapped_prediction_loss
from selfsup.testing import spawn_gloo


def sinkhorn_reference(scores, epsilon, iterations):
    """Scaling-vector form of the paper's eq. 4: Q = diag(u) P diag(v), P = exp(S / eps) (K, B)."""
    p = np.exp(scores.T.astype(np.float64) / epsilon)  # (K, B)
    p /= p.sum()
    k, b = p.shape
    v = np.ones(b)
    for _ in range(iterations):
        u = (1.0 / k) / (p @ v)
        v = (1.0 / b) / (p.T @ u)
    q = u[:, None] * p * v[None, :]
    return (q * b).T  # (B, K)


def test_sinkhorn_matches_scaling_vector_reference():
    torch.manual_seed(0)
    scores = (
        torch.nn.functional.normalize(torch.randn(10, 6), dim=1)
        @ torch.nn.functional.normalize(torch.randn(7, 6), dim=1).T
    )  # (B=10, K=7) cosine scores
    for eps, iters in ((0.05, 3), (0.3, 1), (0.1, 10)):
        got = sinkhorn_knopp(scores, eps, iters).numpy()
        assert np.allclose(
            got, sinkhorn_reference(scores.numpy(), eps, iters), rtol=1e-4, atol=1e-6
        )


def test_sinkhorn_marginals():
    torch.manual_seed(1)
    b, k = 12, 5
    scores = torch.rand(b, k) * 2 - 1
    q = sinkhorn_knopp(scores, 0.05, 3)
    assert torch.allclose(q.sum(dim=1), torch.ones(b), atol=1e-5)  # every sample: sums to 1
    assert (q >= 0).all()
    # Prototypes receive B / K each at convergence; 3 iterations get most of the way.
    q = sinkhorn_knopp(scores, 0.05, 200)
    assert torch.allclose(q.sum(dim=0), torch.full((k,), b / k), rtol=1e-3)
    assert torch.allclose(q.sum(dim=1), torch.ones(b), atol=1e-5)


def test_sinkhorn_is_float32_under_bf16_autocast():
    torch.manual_seed(2)
    scores = torch.rand(8, 4) * 2 - 1
    with torch.autocast("cpu", dtype=torch.bfloat16):
        q = sinkhorn_knopp(scores.bfloat16(), 0.05, 3)
    assert q.dtype == torch.float32 and torch.isfinite(q).all()
    assert torch.allclose(q, sinkhorn_knopp(scores.bfloat16().float(), 0.05, 3), atol=1e-6)


def swapped_reference(scores, codes, tau):
    """Explicit loops over (code crop i, predicting crop v != i, sample n)."""
    v_count, b, _ = scores.shape
    total, pairs = 0.0, 0
    for i in range(codes.shape[0]):
        for v in range(v_count):
            if v == i:
                continue
            ce = 0.0
            for n in range(b):
                logits = [float(s) / tau for s in scores[v, n]]
                log_z = math.log(sum(math.exp(x) for x in logits))
                ce -= sum(float(q) * (x - log_z) for q, x in zip(codes[i, n], logits, strict=True))
            total += ce / b
            pairs += 1
    return total / pairs


def test_swapped_prediction_matches_loops():
    torch.manual_seed(3)
    scores = torch.rand(5, 4, 6) * 2 - 1  # V=5 crops, B=4, K=6
    codes = torch.softmax(torch.randn(2, 4, 6), dim=-1)  # codes of the 2 global crops
    for tau in (0.1, 0.5):
        got = float(swapped_prediction_loss(scores, codes, tau))
        assert math.isclose(got, swapped_reference(scores, codes, tau), rel_tol=1e-5)


def test_two_crops_predict_only_each_others_code():
    torch.manual_seed(4)
    scores = torch.rand(2, 3, 4)  # V = G = 2
    codes = torch.softmax(torch.randn(2, 3, 4), dim=-1)
    swapped = (
        torch.nn.functional.cross_entropy(scores[1] / 0.1, codes[0])
        + torch.nn.functional.cross_entropy(scores[0] / 0.1, codes[1])
    ) / 2
    assert torch.allclose(swapped_prediction_loss(scores, codes, 0.1), swapped, atol=1e-6)


def test_swapped_prediction_gradient_reaches_scores_and_is_float32():
    scores = (torch.rand(3, 4, 5) * 2 - 1).bfloat16().requires_grad_(True)
    codes = torch.softmax(torch.randn(2, 4, 5), dim=-1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = swapped_prediction_loss(scores, codes, 0.1)
    assert loss.dtype == torch.float32 and math.isfinite(float(loss.detach()))
    loss.backward()
    assert scores.grad.abs().sum() > 0


def _sinkhorn_of_my_rows(rank, world, scores):
    b = scores.shape[0] // world
    return sinkhorn_knopp(scores[rank * b : (rank + 1) * b], 0.05, 3)


def test_two_process_sinkhorn_equals_single_process_on_the_global_batch():
    torch.manual_seed(5)
    scores = torch.rand(8, 5) * 2 - 1
    out = spawn_gloo(_sinkhorn_of_my_rows, scores, world_size=2)
    together = torch.cat(out)  # (8, 5): rank 0's rows then rank 1's
    assert torch.allclose(together, sinkhorn_knopp(scores, 0.05, 3), atol=1e-6)
