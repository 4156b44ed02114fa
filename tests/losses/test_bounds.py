"""InfoNCE and NWJ bounds on correlated Gaussians, whose mutual information is known.

X ~ N(0, I_d), Y = rho X + sqrt(1 - rho^2) E with E ~ N(0, I_d): I(X; Y) = -d/2 log(1 - rho^2).
The optimal critics are the log density ratio log p(y | x) / p(y) (InfoNCE) and that plus 1
(NWJ), both in closed form here.

Tolerance: over 30 seeds, at B = 1024 and I = 1 nat, both estimates have a standard deviation of
about 0.03 nats (the sampling noise of the mean over the diagonal, Var[log r] / B) and a bias
below 0.01 (InfoNCE's is about (e^I - 1) / B). Averaging 4 batches brings the deviation to about
0.016, so 0.08 is five standard deviations.
"""

import math

import pytest
import torch

from selfsup.losses.bounds import infonce_bound, nwj_bound


def correlated_gaussians(b, d, rho, g):
    x = torch.randn(b, d, generator=g, dtype=torch.float64)
    y = rho * x + math.sqrt(1 - rho**2) * torch.randn(b, d, generator=g, dtype=torch.float64)
    return x, y


def log_density_ratio(x, y, rho):
    """(B, B) matrix of log N(y_j; rho x_i, (1 - rho^2) I) - log N(y_j; 0, I)."""
    d, s2 = x.shape[1], 1 - rho**2
    diff = y[None, :, :] - rho * x[:, None, :]  # (B, B, d)
    return -d / 2 * math.log(s2) - (diff**2).sum(-1) / (2 * s2) + (y**2).sum(-1)[None, :] / 2


def rho_for(mi, d):
    return math.sqrt(1 - math.exp(-2 * mi / d))


@pytest.mark.parametrize("d", [1, 2])
def test_optimal_critic_recovers_the_true_mutual_information(d):
    mi, b = 1.0, 1024  # log B = 6.9: the InfoNCE cap is far above the truth
    rho = rho_for(mi, d)
    g = torch.Generator().manual_seed(d)
    nce, nwj = [], []
    for _ in range(4):
        x, y = correlated_gaussians(b, d, rho, g)
        f = log_density_ratio(x, y, rho)
        nce.append(float(infonce_bound(f)))
        nwj.append(float(nwj_bound(f + 1.0)))
    assert sum(nce) / 4 == pytest.approx(mi, abs=0.08)
    assert sum(nwj) / 4 == pytest.approx(mi, abs=0.08)


def test_infonce_is_capped_at_log_batch_size():
    d, b = 10, 64
    rho = 0.99
    mi = -d / 2 * math.log(1 - rho**2)  # 19.6 nats, far above log 64 = 4.16
    x, y = correlated_gaussians(b, d, rho, torch.Generator().manual_seed(0))
    est = float(infonce_bound(log_density_ratio(x, y, rho)))
    assert est <= math.log(b) + 1e-6
    assert est > math.log(b) - 0.05  # with the optimal critic it sits right at the cap
    assert mi - est > 10


def test_infonce_of_an_uninformative_critic_is_zero_and_nwj_matches_hand_value():
    scores = torch.full((5, 5), 0.3)
    assert float(infonce_bound(scores)) == pytest.approx(0.0, abs=1e-6)
    # NWJ: mean diag - exp(-1) * mean off-diag exp(f) = 0.3 - exp(0.3 - 1)
    assert float(nwj_bound(scores)) == pytest.approx(0.3 - math.exp(-0.7), rel=1e-6)


def test_bounds_against_explicit_loops():
    torch.manual_seed(0)
    s = torch.randn(4, 4)
    nce = sum(
        float(s[i, i]) - math.log(sum(math.exp(float(s[i, j])) for j in range(4))) for i in range(4)
    ) / 4 + math.log(4)
    off = [math.exp(float(s[i, j])) for i in range(4) for j in range(4) if i != j]
    nwj = sum(float(s[i, i]) for i in range(4)) / 4 - math.exp(-1) * sum(off) / len(off)
    assert float(infonce_bound(s)) == pytest.approx(nce, rel=1e-5)
    assert float(nwj_bound(s)) == pytest.approx(nwj, rel=1e-5)


@pytest.mark.parametrize("bound", [infonce_bound, nwj_bound])
def test_trained_critic_approaches_the_truth_from_below(bound):
    # The critic family x'Wy + a|x|^2 + b|y|^2 + c contains the optimal one (W = rho / (1 - rho^2)
    # I, a = -rho^2 / (2 (1 - rho^2)), b = -rho^2 / (2 (1 - rho^2)), c = I or I + 1).
    torch.manual_seed(0)
    mi, d = 1.0, 2
    rho = rho_for(mi, d)
    g = torch.Generator().manual_seed(0)
    w = torch.zeros(d, d, requires_grad=True)
    coef = torch.zeros(3, requires_grad=True)

    def critic(x, y):
        x, y = x.float(), y.float()
        quad = coef[0] * (x**2).sum(1, keepdim=True) + coef[1] * (y**2).sum(1)
        return x @ w @ y.T + quad + coef[2]

    opt = torch.optim.Adam([w, coef], lr=0.05)
    for _ in range(200):
        loss = -bound(critic(*correlated_gaussians(128, d, rho, g)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        est = sum(float(bound(critic(*correlated_gaussians(1024, d, rho, g)))) for _ in range(4))
    est /= 4
    assert mi - 0.15 < est < mi + 0.08  # a lower bound, up to the 5-sigma sampling noise


def test_non_square_scores_are_rejected():
    with pytest.raises(ValueError, match="B, B"):
        infonce_bound(torch.zeros(3, 4))


def test_bf16_scores_give_fp32_estimates():
    s = torch.randn(8, 8).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert infonce_bound(s).dtype == nwj_bound(s).dtype == torch.float32
