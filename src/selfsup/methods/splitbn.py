"""Shuffling BN (He et al. 2020, MoCo, section 3.3) and its single-device substitute, split BN.

Batch norm lets a query and its positive key "communicate" when they are normalised with the same
batch statistics, and the model then lowers the contrastive loss through that leak instead of
learning good features. MoCo prevents it by normalising the key encoder's inputs in a different
grouping from the query encoder's:

* across processes (:func:`shuffled`, distributed branch): gather the key images of every process,
  shuffle them with one permutation broadcast from rank 0, encode this process's share, gather the
  keys and undo the permutation, so each key was normalised with other images' statistics;
* on one device: batch norm with statistics computed over ``num_splits`` groups of the batch
  (:class:`SplitBatchNorm2d`, in both encoders), and the key batch shuffled before the key encoder
  (:func:`shuffled`, local branch), so that a query and its key fall in different groups.

Index legend: B local batch, W world size, G groups, C channels.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.losses.distributed import gather_no_grad, world_info


class SplitBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics come from ``num_splits`` contiguous groups of the
    batch (samples ``[g * B/G, (g + 1) * B/G)`` form group g), each normalised on its own.

    The running statistics are the mean over groups of what each group's batch norm would have
    accumulated; evaluation uses them like a plain BatchNorm2d.

    Args:
        num_features: channels C.
        num_splits: groups G; the batch size must be a multiple of it.
        **kwargs: ``eps``, ``momentum``, ``affine``, ``track_running_stats`` as for BatchNorm2d.
    """

    def __init__(self, num_features: int, num_splits: int, **kwargs: object) -> None:
        super().__init__(num_features, **kwargs)
        if num_splits < 1:
            raise ValueError(f"num_splits must be >= 1, got {num_splits}")
        self.num_splits = num_splits

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, C, H, W) -> (B, C, H, W)."""
        g = self.num_splits
        if not self.training or g == 1:
            return super().forward(x)
        if not self.track_running_stats:
            raise ValueError("SplitBatchNorm2d needs track_running_stats=True")
        n, c, h, w = x.shape
        if n % g:
            raise ValueError(f"batch of {n} is not divisible into {g} batch-norm groups")
        # Each group's samples become their own block of channels, so one batch-norm call
        # normalises every group with its own statistics.
        grouped = x.view(g, n // g, c, h, w).transpose(0, 1).reshape(n // g, g * c, h, w)
        running_mean = self.running_mean.repeat(g)  # (G*C,)
        running_var = self.running_var.repeat(g)  # (G*C,)
        self.num_batches_tracked.add_(1)
        momentum = self.momentum if self.momentum is not None else 1 / int(self.num_batches_tracked)
        y = F.batch_norm(
            grouped,
            running_mean,
            running_var,
            None if self.weight is None else self.weight.repeat(g),
            None if self.bias is None else self.bias.repeat(g),
            training=True,
            momentum=momentum,
            eps=self.eps,
        )  # (B/G, G*C, H, W)
        with torch.no_grad():
            self.running_mean.copy_(running_mean.view(g, c).mean(0))
            self.running_var.copy_(running_var.view(g, c).mean(0))
        y = y.view(n // g, g, c, h, w).transpose(0, 1).reshape(n, c, h, w)
        if x.is_contiguous(memory_format=torch.channels_last):  # keep the backbone's fast layout
            y = y.contiguous(memory_format=torch.channels_last)
        return y


def convert_split_batchnorm(module: nn.Module, num_splits: int) -> nn.Module:
    """Replace every ``nn.BatchNorm2d`` in ``module`` by a :class:`SplitBatchNorm2d` with the same
    parameters and running statistics; returns the module (changed in place).

    Call it while building the method, before the method is moved to its device.
    """
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            split = SplitBatchNorm2d(
                child.num_features,
                num_splits,
                eps=child.eps,
                momentum=child.momentum,
                affine=child.affine,
                track_running_stats=child.track_running_stats,
            )
            split.load_state_dict(child.state_dict())
            setattr(module, name, split)
        else:
            convert_split_batchnorm(child, num_splits)
    return module


@torch.no_grad()
def shuffled(encode: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """``encode(x)`` computed on a shuffled batch and returned in the original order, no gradient.

    Under ``torch.distributed`` this is MoCo's shuffling BN: the batch is gathered from every
    process, permuted by rank 0's random permutation (broadcast), and each process encodes its
    share of the permuted batch; the outputs are gathered and unpermuted. On one process the local
    batch is permuted, which with :class:`SplitBatchNorm2d` moves each sample to a random group.

    Args:
        encode: a per-sample encoder (apart from batch-norm statistics): (B, ...) -> (B, D).
        x: (B, ...) inputs; every process passes the same shape.

    Returns:
        (B, D) outputs, row i the encoding of ``x[i]``.
    """
    rank, world = world_info()
    b = x.shape[0]
    if world == 1:
        perm = torch.randperm(b, device=x.device)
        return encode(x[perm])[torch.argsort(perm)]
    every = gather_no_grad(x)  # (W*B, ...)
    perm = torch.randperm(world * b, device=x.device)
    dist.broadcast(perm, src=0)
    keys = gather_no_grad(encode(every[perm.view(world, b)[rank]]))  # (W*B, D), row j <- perm[j]
    unperm = torch.argsort(perm).view(world, b)  # (W, B): row of k in keys for each sample
    return keys[unperm[rank]]
