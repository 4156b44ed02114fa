"""Label-free diagnostics against independent computations and on embeddings of known shape."""

import math

import numpy as np
import pytest
import torch

from selfsup.evaluate.diagnostics import (
    alignment,
    collapse,
    effective_rank,
    normalized_std,
    singular_values,
    uniformity,
)


def unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_alignment_and_uniformity_equal_their_definitions():
    g = np.random.default_rng(0)
    a, b = g.normal(size=(7, 5)), g.normal(size=(7, 5))
    ua, ub = unit(a), unit(b)
    expected = np.mean([np.sum((ua[i] - ub[i]) ** 2) for i in range(7)])
    assert alignment(torch.tensor(a), torch.tensor(b)) == pytest.approx(expected, rel=1e-5)
    assert alignment(torch.tensor(a), torch.tensor(a)) == pytest.approx(0.0, abs=1e-6)
    pairs = [np.exp(-2 * np.sum((ua[i] - ua[j]) ** 2)) for i in range(7) for j in range(7) if i < j]
    assert uniformity(torch.tensor(a)) == pytest.approx(np.log(np.mean(pairs)), rel=1e-5)
    assert uniformity(torch.ones(6, 3)) == pytest.approx(0.0, abs=1e-6)  # one point
    with pytest.raises(ValueError, match="same shape|one shape"):
        alignment(torch.ones(3, 2), torch.ones(2, 2))


def test_effective_rank_follows_rankme_and_the_data_rank():
    g = np.random.default_rng(1)
    x = g.normal(size=(50, 8))
    s = np.linalg.svd(x, compute_uv=False)
    p = s / s.sum() + 1e-7
    assert effective_rank(torch.tensor(x)) == pytest.approx(
        np.exp(-(p * np.log(p)).sum()), rel=1e-6
    )
    low = torch.tensor(g.normal(size=(200, 3)) @ g.normal(size=(3, 32)))  # rank 3 in 32-d
    assert 2.0 < effective_rank(low) < 3.05
    assert effective_rank(torch.randn(2000, 32)) > 30  # isotropic: nearly full rank


def test_normalized_std_and_singular_values():
    assert normalized_std(torch.ones(10, 4) + 1e-9 * torch.randn(10, 4)) < 1e-6
    assert normalized_std(torch.randn(5000, 64)) == pytest.approx(1.0, abs=0.05)
    x = torch.randn(30, 6, dtype=torch.float64)
    s = singular_values(x)
    expected = np.linalg.svd((x - x.mean(0)).numpy(), compute_uv=False)
    assert np.allclose(s.numpy(), expected) and bool((s[:-1] >= s[1:]).all())


def test_collapse_verdicts():
    healthy = collapse(torch.randn(500, 64))
    assert healthy.kind == "none" and "no collapse" in healthy.message
    point = collapse(torch.ones(500, 64) + 1e-4 * torch.randn(500, 64))
    assert point.kind == "complete" and "complete collapse" in point.message
    flat = torch.randn(500, 2) @ torch.randn(2, 64) + 0.01 * torch.randn(500, 64)
    verdict = collapse(flat, dimensional_below=0.05)
    assert verdict.kind == "dimensional" and verdict.effective_rank < 0.05 * 64
    assert math.isfinite(verdict.normalized_std) and "effective dimensions" in verdict.message


class TwoSpaces(torch.nn.Module):
    """Spread-out backbone features, and a head that maps every sample to one point."""

    def embed(self, batch):
        return batch["x"]

    def embed_head(self, features):
        return torch.ones(len(features), 8) + 1e-6 * features[:, :1]


def test_probe_diagnoses_the_head_output_too():
    from selfsup.evaluate.diagnostics import Probe

    probe = Probe([{"x": torch.randn(64, 16)}, {"x": torch.randn(32, 16)}])
    figures, verdicts = probe.figures(TwoSpaces())
    assert figures["effective_rank"] > 10 and figures["head_normalized_std"] < 0.01
    assert verdicts["encoder"].kind == "none" and verdicts["head"].kind == "complete"
    assert verdicts["head"].message.startswith("head output:")


def test_alarm_fires_on_a_fall_from_the_best_not_on_a_collapsed_start():
    from selfsup.evaluate.diagnostics import CollapseAlarm, collapse

    spread, point = torch.randn(300, 32), torch.ones(300, 32) + 1e-5 * torch.randn(300, 32)
    alarm = CollapseAlarm()
    assert alarm.baseline({"encoder": collapse(spread)}) == []
    assert alarm.check({"encoder": collapse(spread)}).kind == "none"
    assert alarm.check({"encoder": collapse(point)}).kind == "complete"
    born = CollapseAlarm()
    (note,) = born.baseline({"head": collapse(point)})
    assert "head output starts collapsed" in note
    assert born.check({"head": collapse(point)}).kind == "none"


def test_probe_from_dataset_takes_exactly_size_samples_and_their_labels():
    from selfsup.evaluate.diagnostics import Probe
    from selfsup.evaluate.features import fixed_subset

    data = [{"x": torch.full((2,), float(i)), "label": i % 3} for i in range(10)]
    probe = Probe.from_dataset(data, 7, None, "cpu", batch_size=4)
    index = fixed_subset(data, 7).indices  # a fixed draw over the whole dataset, in order
    assert len(index) == 7 and index == sorted(index)
    assert probe.labels.tolist() == [i % 3 for i in index]
    assert torch.cat([b["x"][:, 0] for b in probe.batches]).tolist() == index
    assert Probe([{"x": torch.ones(2, 2)}]).labels is None


def test_online_knn_equals_the_offline_protocol():
    from selfsup.evaluate.diagnostics import OnlineKnn, Probe
    from selfsup.evaluate.knn import knn_accuracy

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(80, 6, generator=g), torch.randint(0, 4, (80,), generator=g)
    bank, queries = Probe([{"x": x[:60], "label": y[:60]}]), Probe([{"x": x[60:], "label": y[60:]}])
    online = OnlineKnn(bank, queries, 4, k=10).accuracy(TwoSpaces())
    offline = knn_accuracy(x[:60], y[:60], x[60:], y[60:], 4, k=10)
    assert online == {"knn_top1": offline["top1"]}  # top5 needs C >= 5
    with torch.autocast("cpu", dtype=torch.bfloat16):  # as the loop calls it under bf16-mixed
        assert OnlineKnn(bank, queries, 4, k=10).accuracy(TwoSpaces()) == online
    with pytest.raises(ValueError, match="labelled"):
        OnlineKnn(Probe([{"x": x}]), queries, 4)
