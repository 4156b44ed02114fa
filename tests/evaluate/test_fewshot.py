"""Few-shot protocol: SimpleShot's CL2N nearest centroid against a direct computation."""

import numpy as np
import pytest
import torch

from selfsup.config import ConfigError
from selfsup.evaluate.protocols.fewshot import _settings, draw_support, fewshot_accuracy


def test_centroid_episode_equals_a_numpy_simpleshot():
    g = torch.Generator().manual_seed(0)
    train, train_y = torch.randn(60, 5, generator=g), torch.arange(60) % 3
    test, test_y = torch.randn(20, 5, generator=g), torch.arange(20) % 3
    acc = fewshot_accuracy(train, train_y, test, test_y, 3, shots=4, seed=7)

    support = draw_support(train_y, 4, 3, torch.Generator().manual_seed(7)).numpy()
    x, y, q = train.numpy(), train_y.numpy(), test.numpy()
    mean = x.mean(0)

    def unit(a):
        return a / np.linalg.norm(a, axis=-1, keepdims=True)

    xs, qs = unit(x[support] - mean), unit(q - mean)
    centroids = unit(np.stack([xs[y[support] == c].mean(0) for c in range(3)]))
    expected = 100 * np.mean((qs @ centroids.T).argmax(1) == test_y.numpy())
    assert acc == pytest.approx(expected)


def test_support_has_shots_per_class_and_separable_data_is_solved():
    labels = torch.tensor([0, 1, 2] * 10)
    support = draw_support(labels, 5, 3, torch.Generator().manual_seed(0))
    assert torch.bincount(labels[support]).tolist() == [5, 5, 5]
    with pytest.raises(ValueError, match="class 0 has 10 training samples, fewer than 11"):
        draw_support(labels, 11, 3, torch.Generator())
    means = torch.eye(3) * 10
    train = means[labels] + torch.randn(30, 3)
    test_y = torch.tensor([0, 1, 2] * 5)
    test = means[test_y] + torch.randn(15, 3)
    for classifier in ("centroid", "logistic"):
        assert fewshot_accuracy(train, labels, test, test_y, 3, 1, 0, classifier) == 100.0


def test_options_are_checked():
    assert _settings({}) == ([1, 5, 10], 5, "centroid", 1e-3)
    assert _settings({"shots": "2,3", "seeds": "2", "classifier": "logistic"})[:3] == (
        [2, 3],
        2,
        "logistic",
    )
    for bad in ({"shot": "1"}, {"shots": "0"}, {"classifier": "svm"}, {"seeds": "x"}):
        with pytest.raises(ConfigError):
            _settings(bad)
