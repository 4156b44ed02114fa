"""Losses: pure functions of tensors plus thin modules that hold hyperparameters."""

from selfsup.losses.bounds import infonce_bound, nwj_bound
from selfsup.losses.classification import classification_loss
from selfsup.losses.contrastive import ClipLoss, NTXentLoss, clip_loss, nt_xent
from selfsup.losses.dino import dino_loss
from selfsup.losses.distributed import (
    gather_no_grad,
    gather_with_grad,
    global_mean,
    world_info,
)
from selfsup.losses.metric import (
    batch_all_triplet_loss,
    batch_hard_triplet_loss,
    semi_hard_triplet_loss,
    triplet_loss,
)
from selfsup.losses.nce import binary_nce, logistic_loss, softmax_contrastive
from selfsup.losses.redundancy import barlow_twins_loss, vicreg_loss
from selfsup.losses.registry import CONTRASTIVE_LOSSES, create_contrastive_loss
from selfsup.losses.swav import sinkhorn_knopp, swapped_prediction_loss

__all__ = [
    "CONTRASTIVE_LOSSES",
    "ClipLoss",
    "NTXentLoss",
    "barlow_twins_loss",
    "batch_all_triplet_loss",
    "batch_hard_triplet_loss",
    "binary_nce",
    "classification_loss",
    "clip_loss",
    "create_contrastive_loss",
    "dino_loss",
    "gather_no_grad",
    "gather_with_grad",
    "global_mean",
    "infonce_bound",
    "logistic_loss",
    "nt_xent",
    "nwj_bound",
    "semi_hard_triplet_loss",
    "sinkhorn_knopp",
    "softmax_contrastive",
    "swapped_prediction_loss",
    "triplet_loss",
    "vicreg_loss",
    "world_info",
]
