"""MoCo v2: momentum contrast with a queue of negative keys, an MLP head and blur.

He, Fan, Wu, Xie, Girshick. "Momentum Contrast for Unsupervised Visual Representation Learning".
CVPR 2020. https://arxiv.org/abs/1911.05722
Chen, Fan, Girshick, He. "Improved Baselines with Momentum Contrastive Learning". 2020.
https://arxiv.org/abs/2003.04297

Algorithm (MoCo, Algorithm 1): two views of every image; the query encoder (backbone + MLP head)
encodes one, the key encoder (a momentum copy of it) the other, through shuffling BN. InfoNCE over
the positive key (logit 0) and the queue of keys of past batches; then the batch's keys are
enqueued, the oldest dequeued, and after the optimizer step the key encoder moves towards the
query encoder: ``theta_k = m * theta_k + (1 - m) * theta_q``.

Paper defaults, used here:
    head: MLP 2048 -> ReLU -> 128 without batch norm (MoCo v2, section 2).
    queue of K = 65,536 L2-normalised keys; temperature 0.2 (MoCo v2); momentum m = 0.999.
    augmentation (MoCo v2): random resized crop (scale 0.2-1) + flip, colour jitter
        (0.4, 0.4, 0.4, 0.1) with p=0.8, grayscale p=0.2, Gaussian blur p=0.5 (sigma 0.1-2).
        For images of 64 px or less blur is off by default, as SimCLR does on CIFAR-10.
    shuffling BN across processes (MoCo, section 3.3). On one device we use split BN instead
        (statistics over ``bn_splits`` groups of the batch, 8 by default, in both encoders) and
        shuffle the key batch, the usual single-GPU substitute (see :mod:`.splitbn`).
    optimizer: SGD, lr 0.03 per 256 samples, momentum 0.9, weight decay 1e-4, cosine decay.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from selfsup.heads import ProjectionHead
from selfsup.losses import gather_no_grad, softmax_contrastive
from selfsup.methods.base import BuildContext, OptimDefaults, register_method
from selfsup.methods.image import ImageMethod
from selfsup.methods.momentum import ema_update, momentum_copy
from selfsup.methods.splitbn import convert_split_batchnorm, shuffled
from selfsup.views import ViewAugment


def mocov2_views(size: int, blur: bool = True) -> ViewAugment:
    """MoCo v2's augmentation (also SimSiam's): crop scale 0.2-1, jitter (0.4, 0.4, 0.4, 0.1)
    with p=0.8, grayscale p=0.2, blur p=0.5 when ``blur``."""
    return ViewAugment(
        size,
        scale=(0.2, 1.0),
        jitter=(0.4, 0.4, 0.4, 0.1),
        jitter_p=0.8,
        gray_p=0.2,
        blur_p=0.5 if blur else 0.0,
    )


@register_method("moco", "MoCo v2 (He et al. 2020; Chen et al. 2020): momentum encoder, key queue")
class MoCo(ImageMethod):
    """MoCo v2 on images. Batches: ``{"image": uint8 (B, 3, S, S)}``.

    Args:
        backbone: vision backbone name.
        image_size: side S of the input images.
        queue_size: number K of negative keys; a multiple of the global batch.
        temperature: InfoNCE temperature.
        momentum: key encoder momentum m.
        proj_hidden_dim: hidden width of the MLP head.
        proj_dim: output dimension of the head (and of the keys).
        bn_splits: batch-norm groups of the batch (1 = plain BN). :meth:`build`'s default
            ``None`` picks 8 (or the largest power of two below it dividing the batch) on one
            process and 1 under DDP, where shuffling BN across processes takes its place.
        blur: Gaussian blur in the views; ``None`` picks on for images larger than 64 px.
    """

    fp32_state = True
    allows_sync_batchnorm = False
    replicated_buffers = ("queue",)  # filled with gathered keys, alike on every process
    defaults = OptimDefaults(optimizer="sgd", lr=0.03, weight_decay=1e-4, scale_lr=True)

    def __init__(
        self,
        backbone: str = "resnet18",
        image_size: int = 32,
        queue_size: int = 65536,
        temperature: float = 0.2,
        momentum: float = 0.999,
        proj_hidden_dim: int = 2048,
        proj_dim: int = 128,
        bn_splits: int = 8,
        blur: bool | None = None,
    ) -> None:
        super().__init__()
        self.temperature = temperature
        self.momentum = momentum
        self.setup_encoder(backbone, image_size)
        if bn_splits > 1:
            convert_split_batchnorm(self.backbone, bn_splits)
        self.projector = ProjectionHead(
            self.backbone.dim, proj_hidden_dim, proj_dim, batch_norm=False
        )
        self.key_backbone = momentum_copy(self.backbone)
        self.key_projector = momentum_copy(self.projector)
        self.augment = mocov2_views(image_size, blur if blur is not None else image_size > 64)
        # Random unit keys until real ones arrive, as in the paper's implementation.
        self.register_buffer("queue", F.normalize(torch.randn(queue_size, proj_dim), dim=1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    @classmethod
    def build(
        cls, ctx: BuildContext, queue_size: int = 65536, bn_splits: int | None = None, **kwargs: Any
    ) -> MoCo:
        # Whole batches of keys then fill the queue exactly, so each key stays K / batch steps.
        if queue_size % ctx.global_batch:
            raise ValueError(
                f"queue_size {queue_size} must be a multiple of the global batch {ctx.global_batch}"
            )
        if bn_splits is None:
            bn_splits = math.gcd(8, ctx.batch_size) if ctx.world_size == 1 else 1
        elif ctx.batch_size % bn_splits:
            raise ValueError(
                f"batch_size {ctx.batch_size} is not a multiple of bn_splits {bn_splits}"
            )
        return cls(
            backbone=cls.backbone_for(ctx),
            image_size=ctx.image_size,
            queue_size=queue_size,
            bn_splits=bn_splits,
            **kwargs,
        )

    def _keys(self, x: Tensor) -> Tensor:
        """x: (B, 3, S, S) views -> (B, proj_dim) normalised keys (shuffled BN, no gradient)."""
        keys = shuffled(lambda v: self.key_projector(self.key_backbone(v)), x)  # (B, proj_dim)
        return F.normalize(keys.float(), dim=1)

    @torch.no_grad()
    def _enqueue(self, keys: Tensor) -> None:
        """Write keys (N, D) over the oldest queue entries and advance the pointer by N."""
        n, size = keys.shape[0], self.queue.shape[0]
        slots = (self.queue_ptr + torch.arange(n, device=keys.device)) % size  # (N,)
        self.queue.index_copy_(0, slots, keys.to(self.queue.dtype))
        self.queue_ptr.copy_((self.queue_ptr + n) % size)

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        images = batch["image"]  # (B, 3, S, S) uint8
        q = self.projector(self.backbone(self.augment(images)))  # (B, proj_dim)
        k = self._keys(self.augment(images))  # (B, proj_dim)
        # A copy: autograd keeps the negatives for the backward pass, and the enqueue below
        # overwrites the buffer in place.
        # InfoNCE with the positive key at logit 0 and the queue as negatives (MoCo, eq. 1).
        loss = softmax_contrastive(q, k, self.queue.clone(), self.temperature)
        if self.training and torch.is_grad_enabled():  # not when evaluating or embedding
            self._enqueue(gather_no_grad(k))  # every process enqueues the same global keys
        return {"loss": loss}

    def after_step(self, step: int, total_steps: int) -> None:
        ema_update(self.key_backbone, self.backbone, self.momentum)
        ema_update(self.key_projector, self.projector, self.momentum)
