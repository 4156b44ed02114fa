"""Gradient-preserving collectives for losses that need every process's embeddings.

A plain ``torch.distributed.all_gather`` returns tensors detached from the graph, so the gradient
of a contrastive loss would never reach the other processes' samples. :func:`gather_with_grad` is
differentiable: its backward pass sums the gradients back to their owners with a reduce-scatter.
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


# torch 2.14 renamed the single-tensor collectives; older releases (>= 2.4) have only the old names
_all_gather_single = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
_reduce_scatter_single = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor


class _AllGather(torch.autograd.Function):
    """all_gather whose backward is a reduce-scatter: every process receives the sum, over all
    processes, of the gradient of its own slice of the gathered tensor (written here rather than
    taken from ``torch.distributed.nn``, which newer torch releases deprecate).

    A reduce-scatter moves half the bytes of an all-reduce of the whole gathered gradient, which
    each process would then slice (``benchmarks/scaling.py``). Backends without the single-tensor
    collectives fall back to a list all-gather and that all-reduce.
    """

    @staticmethod
    def forward(ctx: object, x: Tensor) -> Tensor:  # noqa: D102
        x = x.contiguous()
        out = x.new_empty((dist.get_world_size() * x.shape[0], *x.shape[1:]))  # (W * B, ...)
        try:
            _all_gather_single(out, x)
        except (RuntimeError, NotImplementedError):  # the backend gathers only into a list
            dist.all_gather(list(out.chunk(dist.get_world_size())), x)
        return out

    @staticmethod
    def backward(ctx: object, grad: Tensor) -> Tensor:  # noqa: D102
        grad = grad.contiguous()  # (W * B, ...)
        world, rank = dist.get_world_size(), dist.get_rank()
        mine = grad.new_empty((grad.shape[0] // world, *grad.shape[1:]))  # (B, ...)
        try:
            _reduce_scatter_single(mine, grad)
        except (RuntimeError, NotImplementedError):  # the backend has no reduce-scatter
            grad = grad.clone()
            dist.all_reduce(grad)
            mine = grad.view(world, *mine.shape)[rank]
        return mine


def gather_with_grad(x: Tensor) -> Tensor:
    """Concatenate ``x`` (B, ...) from every process along dim 0 -> (world * B, ...), with grads.

    Every process must pass the same shape (the loader drops the last incomplete batch). On a
    single process this returns ``x`` itself.
    """
    _, world = world_info()
    if world == 1:
        return x
    return _AllGather.apply(x)


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


def global_mean(total: Tensor, count: Tensor | int) -> Tensor:
    """This process's share of a mean over the whole global batch: ``total * W / sum_r count_r``.

    For losses averaged over a number of items that differs from process to process (the masked
    tokens of MLM, the real tokens of a padded batch). DDP averages the gradients over the W
    processes, so shares scaled this way give the gradient of the mean over every process's items,
    the gradient of one process on the concatenated batch. A per-process mean would weight the
    items of a process that drew fewer of them more. transformers' Trainer does the same
    (``average_tokens_across_devices``). Averaged over the processes, as the loop logs it, the
    share is the global mean. On one process: ``total / count``.

    Args:
        total: scalar sum over this process's items (differentiable).
        count: this process's number of items (int or integer scalar tensor, no gradient).

    Returns:
        scalar; 0 (still depending on ``total``) when no process has an item.
    """
    count = torch.as_tensor(count, device=total.device, dtype=torch.float32)
    _, world = world_info()
    if world > 1:
        count = count.detach().clone()
        dist.all_reduce(count)
        return total * world / count.clamp_min(1.0)
    return total / count.clamp_min(1.0)
