"""Losses: pure functions of tensors plus thin modules that hold hyperparameters."""

from selfsup.losses.contrastive import ClipLoss, NTXentLoss, clip_loss, nt_xent
from selfsup.losses.distributed import gather_with_grad, world_info

__all__ = ["ClipLoss", "NTXentLoss", "clip_loss", "gather_with_grad", "nt_xent", "world_info"]
