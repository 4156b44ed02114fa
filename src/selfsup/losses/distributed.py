"""Gradient-preserving collectives for losses that need every process's embeddings.

A plain ``torch.distributed.all_gather`` returns tensors detached from the graph, so the gradient
of a contrastive loss would never reach the other processes' samples. ``torch.distributed.nn``'s
all_gather is differentiable: the backward pass sums the gradients back to their owners.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def world_info() -> tuple[int, int]:
    """(rank, world_size) of the default process group, (0, 1) when not distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_with_grad(x: Tensor) -> Tensor:
    """Concatenate ``x`` (B, ...) from every process along dim 0 -> (world * B, ...), with grads.

    On a single process this returns ``x`` itself.
    """
    _, world = world_info()
    if world == 1:
        return x
    import torch.distributed.nn.functional as dist_fn

    return torch.cat(dist_fn.all_gather(x), dim=0)
