"""Optimizers and the learning-rate schedule.

LARS (You, Gitman, Ginsburg 2017, "Large Batch Training of Convolutional Networks") as SimCLR uses
it: SGD with momentum where each weight tensor's step is scaled by a trust ratio
``eta * ||w|| / ||g + wd * w||``. Parameter groups flagged ``lars_exclude`` (biases and
normalisation parameters) get neither weight decay nor adaptation (SimCLR appendix B.1).

LAMB (You et al. 2020, "Large Batch Optimization for Deep Learning: Training BERT in 76 Minutes",
algorithm 2) as ALBERT uses it: Adam's bias-corrected step plus decoupled weight decay, scaled per
weight tensor by the trust ratio ``||w|| / ||step||``; groups flagged ``lars_exclude`` get no
adaptation (and, from the default parameter groups, no weight decay), as in the BERT LAMB code.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from selfsup.config import OPTIMIZERS, SCHEDULES


class LARS(Optimizer):
    """Layer-wise adaptive rate scaling on top of SGD with momentum.

    Args:
        params: parameters or groups; a group may set ``lars_exclude=True``.
        lr: learning rate.
        momentum: heavy-ball momentum.
        weight_decay: L2 penalty added to the gradient before the trust ratio.
        eta: trust coefficient (0.001 in SimCLR's implementation).
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        eta: float = 0.001,
    ) -> None:
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "weight_decay": weight_decay,
            "eta": eta,
            "lars_exclude": False,
        }
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:  # noqa: ANN401 - the Optimizer signature
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad: Tensor = p.grad
                if not group["lars_exclude"]:
                    if group["weight_decay"]:
                        grad = grad.add(p, alpha=group["weight_decay"])
                    w_norm = torch.linalg.vector_norm(p)
                    g_norm = torch.linalg.vector_norm(grad)
                    trust = torch.where(
                        (w_norm > 0) & (g_norm > 0), group["eta"] * w_norm / g_norm, 1.0
                    )
                    grad = grad * trust
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.clone(grad).detach()
                else:
                    state["momentum_buffer"].mul_(group["momentum"]).add_(grad)
                p.add_(state["momentum_buffer"], alpha=-group["lr"])
        return loss


class LAMB(Optimizer):
    """Layer-wise adaptive moments (LAMB).

    Per weight tensor w with gradient g, at step t: ``m = b1 m + (1 - b1) g``,
    ``v = b2 v + (1 - b2) g^2``, ``u = m / (1 - b1^t) / (sqrt(v / (1 - b2^t)) + eps) + wd w``, then
    ``w -= lr * r * u`` with the trust ratio ``r = ||w|| / ||u||`` (1 when either norm is 0, or for
    groups with ``lars_exclude``).

    Args:
        params: parameters or groups; a group may set ``lars_exclude=True``.
        lr: learning rate.
        betas: (b1, b2).
        eps: added to the root of the second moment.
        weight_decay: decoupled weight decay wd.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.0,
    ) -> None:
        defaults = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay,
                    "lars_exclude": False}  # fmt: skip
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:  # noqa: ANN401 - the Optimizer signature
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                t = state["step"]
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.mul_(b1).add_(p.grad, alpha=1 - b1)
                v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
                update = (m / (1 - b1**t)) / ((v / (1 - b2**t)).sqrt() + group["eps"])
                if group["weight_decay"]:
                    update.add_(p, alpha=group["weight_decay"])
                ratio = 1.0
                if not group["lars_exclude"]:
                    w_norm = torch.linalg.vector_norm(p)
                    u_norm = torch.linalg.vector_norm(update)
                    ratio = torch.where((w_norm > 0) & (u_norm > 0), w_norm / u_norm, 1.0)
                p.sub_(update * ratio * group["lr"])
        return loss


def build_optimizer(
    groups: list[dict[str, Any]],
    name: str,
    lr: float,
    weight_decay: float,
    momentum: float = 0.9,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> Optimizer:
    """Create the optimizer; every group's ``base_lr`` is recorded for the schedule.

    Groups may carry ``weight_decay`` (overrides the default), ``lars_exclude``, ``fixed_lr``
    and ``lr_scale`` (the group's lr is ``lr_scale`` times ``lr``, on the same schedule); keys an
    optimizer does not know are kept in the group and ignored by it.
    """
    for group in groups:
        group.setdefault("weight_decay", weight_decay)
        group.setdefault("lr", lr * group.get("lr_scale", 1.0))
        group.setdefault("fixed_lr", False)
        group["base_lr"] = group["lr"]
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay, betas=betas, eps=eps)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, weight_decay=weight_decay, momentum=momentum)
    if name == "lars":
        return LARS(groups, lr=lr, weight_decay=weight_decay, momentum=momentum)
    if name == "lamb":
        return LAMB(groups, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
    if name == "adafactor":
        # Shazeer & Stern (2018) as T5 pretrains with it (Mesh TensorFlow's defaults):
        # factored second moments decaying as 1 - t^-0.8, update clipping at 1, no first
        # moment, and each step scaled by the parameter's RMS (at least 1e-3), so that the
        # learning rate is relative. The schedule is the engine's (no built-in relative step).
        # transformers' implementation.
        from transformers.optimization import Adafactor

        return Adafactor(groups, lr=lr, weight_decay=weight_decay, scale_parameter=True,
                         relative_step=False, warmup_init=False, beta1=None)  # fmt: skip
    raise ValueError(f"unknown optimizer {name!r}. Valid: {', '.join(OPTIMIZERS)}")


def lr_factor(
    progress: float, warmup: float, final: float = 0.0, schedule: str = "cosine"
) -> float:
    """Linear warm-up then cosine or linear decay, as a function of training progress in [0, 1].

    Args:
        progress: fraction of the budget done (steps, epochs or wall clock).
        warmup: fraction of the budget spent warming up linearly from 0.
        final: factor reached at the end of the decay.
        schedule: "cosine" (SGDR, Loshchilov & Hutter 2017; the contrastive methods),
            "linear" (BERT's decay, and word2vec's, there without warm-up) or "inverse_sqrt"
            (T5, Raffel et al. 2020: ``1 / sqrt(max(n, k))`` rescaled to 1 at the peak, that is
            constant for the first ``warmup`` of the budget, then ``sqrt(warmup / progress)``;
            ``final`` does not apply).

    Returns:
        Multiplier of the peak learning rate.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}. Valid: {', '.join(SCHEDULES)}")
    progress = min(max(progress, 0.0), 1.0)
    if schedule == "inverse_sqrt":
        if warmup <= 0:
            raise ValueError("the inverse_sqrt schedule needs warmup > 0 (its constant phase)")
        return math.sqrt(warmup / max(progress, warmup))
    if warmup > 0 and progress < warmup:
        return progress / warmup
    t = (progress - warmup) / max(1e-12, 1 - warmup)
    if schedule == "linear":
        return final + (1 - final) * (1 - t)
    return final + (1 - final) * 0.5 * (1 + math.cos(math.pi * t))


def set_lr(optimizer: Optimizer, factor: float) -> float:
    """Scale every scheduled group's ``base_lr`` by ``factor``; return the first group's lr."""
    for group in optimizer.param_groups:
        group["lr"] = group["base_lr"] if group.get("fixed_lr") else group["base_lr"] * factor
    return optimizer.param_groups[0]["lr"]
