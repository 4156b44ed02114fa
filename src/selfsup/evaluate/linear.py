"""Linear probe: a linear classifier trained on frozen, standardised features.

The protocol most self-supervised papers report beside kNN (SimCLR, MoCo, BYOL, MAE): the encoder
is frozen, its features are extracted once, and a multinomial logistic regression is fitted on the
training features. We fit it with full-batch L-BFGS (exact for this convex problem, no learning-rate
schedule to tune, as in the L-BFGS probes of CPC and CLIP), standardise the features with the
training mean and standard deviation, and choose the L2 penalty by accuracy on a held-out part of
the training set before refitting on all of it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from selfsup.evaluate.knn import confusion_matrix, topk_accuracy

# L2 penalties tried on the validation split (log-spaced; CLIP's probe sweeps a similar range).
DEFAULT_PENALTIES = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2)


def fit_logistic(
    x: Tensor, y: Tensor, num_classes: int, penalty: float, max_iter: int = 200
) -> tuple[Tensor, Tensor]:
    """Multinomial logistic regression by full-batch L-BFGS.

    Minimises ``mean cross entropy + penalty * ||W||^2`` (the bias is not penalised).

    Args:
        x: (N, D) features, already standardised.
        y: (N,) int64 labels in [0, num_classes).
        num_classes: C.
        penalty: L2 coefficient.
        max_iter: L-BFGS iterations.

    Returns:
        weight (C, D) and bias (C,).
    """
    x, y = x.float(), y.long()
    weight = torch.zeros(num_classes, x.shape[1], device=x.device, requires_grad=True)
    bias = torch.zeros(num_classes, device=x.device, requires_grad=True)
    opt = torch.optim.LBFGS(
        [weight, bias], lr=1.0, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe"
    )

    def closure() -> Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(x @ weight.T + bias, y) + penalty * weight.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return weight.detach(), bias.detach()


def linear_probe(
    train: Tensor,
    train_labels: Tensor,
    test: Tensor,
    test_labels: Tensor,
    num_classes: int,
    penalties: tuple[float, ...] = DEFAULT_PENALTIES,
    val_fraction: float = 0.1,
    seed: int = 0,
) -> dict[str, float]:
    """Fit a linear classifier on ``train`` features and report accuracy on ``test``.

    Args:
        train: (N, D) training features; train_labels: (N,).
        test: (M, D) test features; test_labels: (M,).
        num_classes: C.
        penalties: L2 coefficients tried; the best on the validation split is refitted on all of
            the training features.
        val_fraction: share of the training features held out to choose the penalty.
        seed: seed of the validation split.

    Returns:
        ``{"top1", "top5" (C >= 5), "penalty", "val_top1", "confusion"}`` (accuracies in
        percent; ``confusion[true][predicted]`` counts of the test features).
    """
    if len(train) < 2 or len(test) < 1:
        raise ValueError("the linear probe needs at least 2 training and 1 test features")
    mean, std = train.mean(0), train.std(0).clamp_min(1e-6)
    train, test = (train - mean) / std, (test - mean) / std
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    n_val = max(1, int(len(train) * val_fraction))
    val_idx, fit_idx = order[:n_val], order[n_val:]
    best, best_acc = penalties[0], -1.0
    for penalty in penalties:
        w, b = fit_logistic(train[fit_idx], train_labels[fit_idx], num_classes, penalty)
        acc = topk_accuracy(train[val_idx] @ w.T + b, train_labels[val_idx], (1,))["top1"]
        if acc > best_acc:
            best, best_acc = penalty, acc
    w, b = fit_logistic(train, train_labels, num_classes, best)
    scores = test @ w.T + b
    return {
        **topk_accuracy(scores, test_labels),
        "penalty": best,
        "val_top1": best_acc,
        "confusion": confusion_matrix(scores, test_labels, num_classes),
    }
