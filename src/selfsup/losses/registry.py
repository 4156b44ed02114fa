"""Two-view contrastive losses by name, for methods that let the user pick their objective.

Every entry builds a module with one signature, ``loss(z1, z2) -> scalar``, where ``z1`` and ``z2``
are (B, D) embeddings of two views and row i of both comes from the same image. Under data
parallelism each loss gathers the other processes' embeddings with gradients and scores only its
own rows as queries / anchors (their targets offset by ``rank * B``), so the mean over processes
is the loss of the global batch, as for :func:`~selfsup.losses.contrastive.nt_xent`.

* ``nt_xent``: SimCLR's symmetric loss (Chen et al. 2020).
* ``triplet``: triplet loss over the 2N views with image ids as labels (FaceNet / Hermans et al.).
* ``nce``: binary NCE (Gutmann & Hyvärinen 2010; Wu et al. 2018) with in-batch noise.
* ``softmax``: one-directional InfoNCE, each first view against every image's second view.

Index legend: B local batch, N = W * B global batch, W world size, D embedding dimension.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.losses.contrastive import NTXentLoss
from selfsup.losses.distributed import gather_with_grad, world_info
from selfsup.losses.metric import (
    DISTANCES,
    batch_all_triplet_loss,
    batch_hard_triplet_loss,
    semi_hard_triplet_loss,
)
from selfsup.losses.nce import binary_nce
from selfsup.registry import Registry

CONTRASTIVE_LOSSES: Registry = Registry("contrastive loss")

CONTRASTIVE_LOSSES.register(
    "nt_xent", "NT-Xent (Chen et al. 2020): each view against its partner and all 2N - 2 others"
)(NTXentLoss)


def create_contrastive_loss(
    name: str, args: dict[str, Any] | None = None, temperature: float | None = None
) -> nn.Module:
    """Build the two-view loss registered as ``name``.

    Args:
        name: registry name; an unknown one raises, naming the closest and the valid ones.
        args: the loss's own keyword arguments; one it does not take raises ``ValueError``.
        temperature: the method's temperature, given to a loss that takes one unless ``args``
            sets it (the triplet loss has none).

    Returns:
        A module ``loss(z1, z2) -> scalar``.
    """
    builder = CONTRASTIVE_LOSSES.get(name)
    accepted = inspect.signature(builder).parameters
    args = dict(args or {})
    unknown = sorted(set(args) - set(accepted))
    if unknown:
        raise ValueError(f"loss {name!r} takes {sorted(accepted)}; got unknown {unknown}")
    if temperature is not None and "temperature" in accepted:
        args.setdefault("temperature", temperature)
    return builder(**args)


TRIPLET_MINING = {
    "batch_hard": batch_hard_triplet_loss,
    "semi_hard": semi_hard_triplet_loss,
    "all": batch_all_triplet_loss,
}


def _gather_views(z1: Tensor, z2: Tensor, gather: bool) -> tuple[Tensor, Tensor]:
    """Global keys [view 1 of all images; view 2 of all images] (2N, D), and this process's rows
    of them (2B,) in the order of ``cat([z1, z2])``."""
    b = z1.shape[0]
    rank, world = world_info() if gather else (0, 1)
    k1 = gather_with_grad(z1) if gather else z1  # (N, D)
    k2 = gather_with_grad(z2) if gather else z2  # (N, D)
    local = torch.arange(b, device=z1.device) + rank * b  # (B,) global image ids of local rows
    return torch.cat([k1, k2]), torch.cat([local, local + world * b])


@CONTRASTIVE_LOSSES.register(
    "triplet", "Triplet loss over the 2N views, image ids as labels (FaceNet; Hermans et al. 2017)"
)
class TwoViewTripletLoss(nn.Module):
    """Triplet loss where each view's positive is the other view of its image.

    Args:
        margin: hinge margin (FaceNet: 0.2 on unit-norm embeddings).
        mining: "batch_hard" (hardest positive and negative per anchor), "semi_hard" (FaceNet) or
            "all" (mean over every triplet).
        distance: "euclidean", "sqeuclidean" (FaceNet) or "cosine".
        normalize: L2-normalise the embeddings first, as FaceNet does.
        gather: gather the other processes' views as extra negatives.
    """

    def __init__(
        self,
        margin: float = 0.2,
        mining: str = "batch_hard",
        distance: str = "euclidean",
        normalize: bool = True,
        gather: bool = True,
    ) -> None:
        super().__init__()
        if mining not in TRIPLET_MINING:
            raise ValueError(f"unknown mining {mining!r}; valid: {', '.join(TRIPLET_MINING)}")
        if distance not in DISTANCES:
            raise ValueError(f"unknown distance {distance!r}; valid: {', '.join(DISTANCES)}")
        self.margin, self.mining, self.distance = margin, mining, distance
        self.normalize, self.gather = normalize, gather

    def forward(self, z1: Tensor, z2: Tensor) -> Tensor:
        """z1, z2: (B, D) embeddings of two views -> scalar loss."""
        with torch.autocast(z1.device.type, enabled=False):
            z1, z2 = z1.float(), z2.float()
            if self.normalize:
                z1, z2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
            emb, anchors = _gather_views(z1, z2, self.gather)  # (2N, D), (2B,)
            n = emb.shape[0] // 2
            labels = torch.arange(n, device=emb.device).repeat(2)  # (2N,) image id of each view
            mine = TRIPLET_MINING[self.mining]
            return mine(emb, labels, self.margin, self.distance, anchors)


@CONTRASTIVE_LOSSES.register(
    "nce", "Binary NCE (Gutmann & Hyvarinen 2010, as in Wu et al. 2018) with in-batch noise"
)
class TwoViewNCELoss(nn.Module):
    """Binary NCE where each view's data sample is its partner and the noise is the batch.

    Each of the 2B local views is a query over the M = 2N - 1 other views of the global batch:
    its partner is the data sample, the other K = 2N - 2 views are noise drawn uniformly,
    ``Pn = 1 / M``. The model is Wu et al.'s non-parametric softmax, ``p(j) = exp(s_j / t) / Z``
    with cosine similarity s, and Z estimated as they do (``M * mean_k exp(s_k / t)`` over the
    noise samples) but per query, as a constant (no gradient flows through it).

    Args:
        temperature: softmax temperature t (Wu et al.: 0.07).
        gather: gather the other processes' views as extra noise samples.
    """

    def __init__(self, temperature: float = 0.07, gather: bool = True) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.temperature, self.gather = temperature, gather

    def forward(self, z1: Tensor, z2: Tensor) -> Tensor:
        """z1, z2: (B, D) embeddings of two views -> scalar loss."""
        with torch.autocast(z1.device.type, enabled=False):
            z1, z2 = F.normalize(z1.float(), dim=1), F.normalize(z2.float(), dim=1)
            keys, own = _gather_views(z1, z2, self.gather)  # (2N, D), (2B,)
            n2 = keys.shape[0]
            logits = torch.cat([z1, z2]) @ keys.T / self.temperature  # (2B, 2N)
            partner = torch.cat([own[z1.shape[0] :], own[: z1.shape[0]]])  # (2B,)
            rows = torch.arange(logits.shape[0], device=logits.device)
            positive = logits[rows, partner]  # (2B,)
            noise_mask = torch.ones_like(logits, dtype=torch.bool)  # True = a noise sample
            noise_mask[rows, own] = False
            noise_mask[rows, partner] = False
            noise = logits[noise_mask].view(logits.shape[0], n2 - 2)  # (2B, K)
            candidates = n2 - 1
            log_z = (
                math.log(candidates) + torch.logsumexp(noise, 1) - math.log(n2 - 2)
            ).detach()  # (2B,) log of M * mean_k exp(s_k / t)
            return binary_nce(positive - log_z, noise - log_z[:, None], noise_prob=1.0 / candidates)


@CONTRASTIVE_LOSSES.register(
    "softmax", "One-directional InfoNCE: view 1 against every image's view 2 (van den Oord 2018)"
)
class TwoViewSoftmaxLoss(nn.Module):
    """Softmax contrastive loss with one positive and K = N - 1 negatives per query.

    Query ``z1[i]``, positive ``z2[i]``, negatives the second views of the other N - 1 images of
    the global batch: :func:`~selfsup.losses.nce.softmax_contrastive` with those negatives,
    computed as one cross entropy over ``z1 @ z2.T`` rather than by copying the negatives per
    query.

    Args:
        temperature: softmax temperature (MoCo: 0.07).
        gather: gather the other processes' second views as extra negatives.
    """

    def __init__(self, temperature: float = 0.07, gather: bool = True) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.temperature, self.gather = temperature, gather

    def forward(self, z1: Tensor, z2: Tensor) -> Tensor:
        """z1, z2: (B, D) embeddings of two views -> scalar loss."""
        with torch.autocast(z1.device.type, enabled=False):
            q, k = F.normalize(z1.float(), dim=1), F.normalize(z2.float(), dim=1)
            rank, _ = world_info() if self.gather else (0, 1)
            keys = gather_with_grad(k) if self.gather else k  # (N, D)
            target = torch.arange(q.shape[0], device=q.device) + rank * q.shape[0]  # (B,)
            return F.cross_entropy(q @ keys.T / self.temperature, target)
