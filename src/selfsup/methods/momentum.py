"""Momentum (EMA) encoders: a frozen copy updated as an exponential moving average.

Used by MoCo (He et al. 2020), BYOL (Grill et al. 2020), DINO (Caron et al. 2021) and MoCo v3.
The update runs in the method's ``after_step`` hook, i.e. once per optimizer step, never per
micro-batch under gradient accumulation.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn


def momentum_copy(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` (same weights, buffers and mode) with gradients switched off."""
    target = copy.deepcopy(module)
    for p in target.parameters():
        p.requires_grad_(False)
    return target


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """``target = momentum * target + (1 - momentum) * online``, parameter by parameter.

    Only parameters move; buffers such as batch-norm running statistics keep what the target's
    own forward passes accumulate, as in MoCo's and BYOL's reference implementations.
    """
    t_params = [p for p in target.parameters()]
    o_params = [p.detach() for p in online.parameters()]
    if len(t_params) != len(o_params):
        raise ValueError("target and online networks have different parameters")
    torch._foreach_lerp_(t_params, o_params, 1.0 - momentum)


def cosine_momentum(step: int, total_steps: int, base: float, final: float = 1.0) -> float:
    """BYOL's schedule (Grill et al. 2020, section 3.2): ``final - (final - base) *
    (cos(pi * step / total) + 1) / 2``, from ``base`` at step 0 to ``final`` at the end."""
    progress = min(1.0, step / max(1, total_steps))
    return final - (final - base) * (math.cos(math.pi * progress) + 1.0) / 2.0
