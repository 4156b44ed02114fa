"""Gradient-preserving collectives for losses that need every process's embeddings.

A plain ``torch.distributed.all_gather`` returns tensors detached from the graph, so the gradient
of a contrastive loss would never reach the other processes' samples. :func:`gather_with_grad` is
differentiable: its backward pass sums the gradients back to their owners.
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


class _AllGather(torch.autograd.Function):
    """all_gather whose backward sums every process's gradient of the gathered tensor and hands
    each process the slice of its own input (written here rather than taken from
    ``torch.distributed.nn``, which newer torch releases deprecate)."""

    @staticmethod
    def forward(ctx: object, x: Tensor) -> tuple[Tensor, ...]:  # noqa: D102
        out = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(out, x.contiguous())
        return tuple(out)

    @staticmethod
    def backward(ctx: object, *grads: Tensor) -> Tensor:  # noqa: D102
        grad = torch.stack(grads).contiguous()  # (W, B, ...)
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[dist.get_rank()]


def gather_with_grad(x: Tensor) -> Tensor:
    """Concatenate ``x`` (B, ...) from every process along dim 0 -> (world * B, ...), with grads.

    Every process must pass the same shape (the loader drops the last incomplete batch). On a
    single process this returns ``x`` itself.
    """
    _, world = world_info()
    if world == 1:
        return x
    return torch.cat(_AllGather.apply(x), dim=0)


@torch.no_grad()
def gather_no_grad(x: Tensor, dim: int = 0) -> Tensor:
    """Concatenate ``x`` from every process along ``dim``, outside autograd (for state such as
    queues and memory banks that every process must keep identical). ``x`` itself on one process."""
    _, world = world_info()
    if world == 1:
        return x
    out = [torch.empty_like(x) for _ in range(world)]
    dist.all_gather(out, x.contiguous())
    return torch.cat(out, dim=dim)
