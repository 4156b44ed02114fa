"""The linear probe: L-BFGS logistic regression matches scikit-learn's, and the protocol runs."""

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from selfsup.evaluate.linear import fit_logistic, linear_probe


def blobs(n, d=8, classes=3, seed=0, spread=1.0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, d, generator=g) * 3
    y = torch.randint(0, classes, (n,), generator=g)
    return centres[y] + spread * torch.randn(n, d, generator=g), y


def test_fit_matches_sklearn_on_the_same_objective():
    x, y = blobs(300, spread=3.0)
    penalty = 1e-2
    w, b = fit_logistic(x, y, 3, penalty, max_iter=500)
    # sklearn minimises C * sum CE + 0.5 ||W||^2 = N*C * (mean CE + ||W||^2 / (2 N C)).
    c = 1.0 / (2 * penalty * len(x))
    ref = LogisticRegression(C=c, tol=1e-10, max_iter=5000).fit(x.numpy(), y.numpy())
    np.testing.assert_allclose(w.numpy(), ref.coef_, atol=2e-3)
    np.testing.assert_allclose(b.numpy() - b.mean().item(), ref.intercept_, atol=2e-3)


def test_probe_separates_blobs_and_reports_its_choice():
    x, y = blobs(400)
    x_test, y_test = blobs(600)  # same seed: same centres, and the last 200 points are unseen
    out = linear_probe(x, y, x_test[400:], y_test[400:], 3)
    assert out["top1"] > 95 and out["penalty"] in (1e-6, 1e-5, 1e-4, 1e-3, 1e-2)
    assert "top5" not in out  # only 3 classes


def test_probe_at_chance_on_random_labels():
    x, _ = blobs(400)
    y = torch.randint(0, 4, (400,), generator=torch.Generator().manual_seed(3))
    out = linear_probe(x[:300], y[:300], x[300:], y[300:], 4)
    assert out["top1"] < 45


def test_probe_needs_data():
    with pytest.raises(ValueError, match="at least"):
        linear_probe(torch.zeros(1, 2), torch.zeros(1).long(), torch.zeros(1, 2), torch.zeros(1), 2)
