"""``fewshot``: classify the test split from 1, 5 or 10 labelled training samples per class.

Features are extracted once from the frozen encoder. For each number of shots n and each seed, n
training samples per class are drawn at random (the support set), a classifier is fitted on
them, and the whole test split (or ``--query-size``) is classified; the result is the mean and
the standard deviation (the population's, numpy's ``std``) of top-1 accuracy over the seeds, as
in the low-shot evaluations of SimCLR (Chen et al. 2020, semi-supervised section) and MSN
(Assran et al. 2022, 1/2/5 images per class).

Classifiers (``--arg classifier=...``):

* ``centroid`` (default): SimpleShot's CL2N nearest centroid (Wang et al. 2019, "SimpleShot:
  Revisiting Nearest-Neighbor Classification for Few-Shot Learning"): subtract the mean of all
  training features (no labels needed), L2-normalise, and assign each query to the class whose
  mean support feature is most cosine-similar. No hyperparameter, stable at one shot.
* ``logistic``: multinomial logistic regression (L-BFGS, as the linear probe) on the same
  CL2N features, L2 penalty ``penalty`` (default 1e-3; there is no validation split to choose
  it from at 1 shot).

Options: ``shots`` (comma-separated, default 1,5,10), ``seeds`` (default 5), ``classifier``,
``penalty``. ``--bank-size`` limits the training samples the supports are drawn from.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from selfsup.config import ConfigError
from selfsup.evaluate.protocols import EvalOptions, register_protocol

CLASSIFIERS = ("centroid", "logistic")


def cl2n(features: Tensor, mean: Tensor) -> Tensor:
    """Centre by ``mean`` and L2-normalise (SimpleShot's CL2N)."""
    return F.normalize(features.float() - mean, dim=1)


def draw_support(
    labels: Tensor, shots: int, num_classes: int, generator: torch.Generator
) -> Tensor:
    """Indices of ``shots`` random samples of each class (every class needs that many)."""
    picks = []
    for c in range(num_classes):
        members = (labels == c).nonzero().flatten()
        if len(members) < shots:
            raise ValueError(f"class {c} has {len(members)} training samples, fewer than {shots}")
        picks.append(members[torch.randperm(len(members), generator=generator)[:shots]])
    return torch.cat(picks)


def fewshot_accuracy(
    train: Tensor,
    train_labels: Tensor,
    test: Tensor,
    test_labels: Tensor,
    num_classes: int,
    shots: int,
    seed: int,
    classifier: str = "centroid",
    penalty: float = 1e-3,
) -> float:
    """Top-1 accuracy (percent) of one few-shot episode: ``shots`` per class drawn with ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    support = draw_support(train_labels, shots, num_classes, generator)
    mean = train.float().mean(dim=0)
    x, y = cl2n(train[support], mean), train_labels[support]
    queries = cl2n(test, mean)
    if classifier == "centroid":
        centroids = torch.zeros(num_classes, x.shape[1]).index_add_(0, y, x)
        scores = queries @ F.normalize(centroids, dim=1).T  # (M, C)
    else:
        from selfsup.evaluate.linear import fit_logistic

        weight, bias = fit_logistic(x, y, num_classes, penalty)
        scores = queries @ weight.T + bias
    return 100.0 * float((scores.argmax(dim=1) == test_labels).float().mean())


def _settings(extra: dict[str, str]) -> tuple[list[int], int, str, float]:
    valid = ("shots", "seeds", "classifier", "penalty")
    for key in extra:
        if key not in valid:
            raise ConfigError(f"fewshot has no option {key!r}. Valid: {', '.join(valid)}")
    try:
        shots = [int(s) for s in extra.get("shots", "1,5,10").split(",") if s.strip()]
        seeds = int(extra.get("seeds", "5"))
        penalty = float(extra.get("penalty", "1e-3"))
    except ValueError as err:
        raise ConfigError(f"fewshot options: {err}") from None
    classifier = extra.get("classifier", "centroid")
    if classifier not in CLASSIFIERS:
        raise ConfigError(f"fewshot classifier {classifier!r}. Valid: {', '.join(CLASSIFIERS)}")
    if not shots or min(shots) < 1 or seeds < 1 or penalty < 0:
        raise ConfigError("fewshot needs shots >= 1, seeds >= 1 and penalty >= 0")
    return shots, seeds, classifier, penalty


@register_protocol("fewshot", "frozen features, 1/5/10 labelled samples per class, over seeds")
def fewshot(run: Any, source: Any, options: EvalOptions) -> dict[str, Any]:  # noqa: ANN401
    """``selfsup evaluate RUN --protocol fewshot [--arg shots=1,5,10 --arg seeds=5 ...]``."""
    from selfsup.evaluate.api import labelled_features

    shots, seeds, classifier, penalty = _settings(options.extra)
    train, train_y, test, test_y = labelled_features(run, source, "fewshot", options)
    result: dict[str, Any] = {
        "shots": shots, "seeds": seeds, "classifier": classifier, "bank": len(train),
        "queries": len(test),
    }  # fmt: skip
    if classifier == "logistic":
        result["penalty"] = penalty
    for n in shots:
        try:
            accs = torch.tensor(
                [
                    fewshot_accuracy(
                        train,
                        train_y,
                        test,
                        test_y,
                        len(source.classes),
                        n,
                        options.seed + s,
                        classifier,
                        penalty,
                    )  # fmt: skip
                    for s in range(seeds)
                ]
            )
        except ValueError as err:
            raise ConfigError(f"protocol fewshot, {n} shots: {err}") from None
        result[f"{n}shot_top1"] = float(accs.mean())
        result[f"{n}shot_top1_std"] = float(accs.std(unbiased=False)) if seeds > 1 else 0.0
    return result
