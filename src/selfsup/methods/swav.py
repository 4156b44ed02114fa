"""SwAV: swapped prediction of online cluster assignments, with multi-crop.

Caron, Misra, Mairal, Goyal, Bojanowski, Joulin. "Unsupervised Learning of Visual Features by
Contrasting Cluster Assignments". NeurIPS 2020. https://arxiv.org/abs/2006.09882

Algorithm (paper, section 3 and algorithm 1): crops -> encoder -> projection MLP -> L2-normalised
z; scores z @ C.T against K unit-norm prototypes C; codes of the two global crops by Sinkhorn-Knopp
over the global batch; every crop predicts, by a softmax over its scores, the code of every other
global crop. The prototypes are trained by the loss and re-normalised after each step.

Paper defaults, used here:
    multi-crop: 2 x S px (scale 0.14-1) + 6 x 96/224 S px (scale 0.05-0.14); colour distortion of
        strength 1 and blur p=0.5 on every crop. At 64 px or less the blur is off (a 10 % kernel
        is a few pixels; SimCLR drops it on CIFAR-10 too) and the local crops are 14 px at 32 px.
    projection head: 2048 hidden (BN, ReLU), 128 output; 3000 prototypes (ImageNet; the paper
        reports little sensitivity to K, so the default stays 3000 on small datasets as well).
    temperature 0.1; Sinkhorn epsilon 0.05 with 3 iterations, on the global crops only.
    prototypes frozen during the first epoch (313 iterations at batch 4096 on ImageNet):
        ``freeze_prototypes_steps`` defaults to one epoch of the run's data when its size is
        known, else 313. They stay in the graph with a zero gradient, so DDP sees a gradient,
        and the engine then drops that gradient (``frozen_parameters``), so the optimizer skips
        them (no weight decay or momentum while frozen), as the reference code does.
    queue: off (``queue_length=0``); the paper uses 3840 embeddings for batches of 256,
        starting at epoch 15 (``queue_start_step``).
    optimizer: LARS, lr 0.3 x batch / 256 (4.8 at 4096), weight decay 1e-6, warm-up + cosine.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.heads import ProjectionHead
from selfsup.losses.distributed import gather_no_grad, world_info
from selfsup.losses.swav import sinkhorn_knopp, swapped_prediction_loss
from selfsup.methods.base import BuildContext, OptimDefaults, register_method
from selfsup.methods.image import ImageMethod
from selfsup.views.multicrop import MultiCrop, dynamic_size_backbone, local_crop_size, patch_size


@register_method("swav", "SwAV (Caron et al. 2020): multi-crop, Sinkhorn codes, swapped prediction")
class SwAV(ImageMethod):
    """SwAV on images. Batches: ``{"image": uint8 (B, 3, S, S)}``.

    Args:
        backbone: vision backbone name (a ViT is rebuilt to take the local crops' size).
        image_size: side S of the input images and of the global crops.
        num_prototypes: number K of prototypes.
        proj_hidden_dim: hidden width of the projection MLP.
        proj_dim: dimension of the embeddings and prototypes.
        temperature: softmax temperature of the predictions.
        epsilon: Sinkhorn-Knopp entropy regularisation.
        sinkhorn_iterations: Sinkhorn-Knopp iterations.
        num_local: local crops per image.
        local_size: side of the local crops; None = 96/224 S (a multiple of a ViT's patch).
        freeze_prototypes_steps: optimizer steps during which the prototypes stay as they are.
        queue_length: embeddings of past global batches kept per global crop (0 = no queue).
        queue_start_step: optimizer step from which the queue is filled; it is used once full.
        blur: Gaussian blur in the crops; None picks on for images larger than 64 px.
    """

    kind = "image"
    replicated_buffers = ("queue",)  # filled with gathered embeddings, alike everywhere
    fp32_state = True  # the embedding queue
    defaults = OptimDefaults(optimizer="lars", lr=0.3, weight_decay=1e-6, scale_lr=True)

    def __init__(
        self,
        backbone: str = "resnet18",
        image_size: int = 32,
        num_prototypes: int = 3000,
        proj_hidden_dim: int = 2048,
        proj_dim: int = 128,
        temperature: float = 0.1,
        epsilon: float = 0.05,
        sinkhorn_iterations: int = 3,
        num_local: int = 6,
        local_size: int | None = None,
        freeze_prototypes_steps: int = 313,
        queue_length: int = 0,
        queue_start_step: int = 0,
        blur: bool | None = None,
    ) -> None:
        super().__init__()
        self.setup_encoder(backbone, image_size)
        self.backbone = dynamic_size_backbone(self.backbone)
        self.projector = ProjectionHead(self.backbone.dim, proj_hidden_dim, proj_dim)
        self.prototypes = nn.Linear(proj_dim, num_prototypes, bias=False)
        self.multicrop = MultiCrop.swav(
            image_size,
            num_local=num_local,
            local_size=local_size or local_crop_size(image_size, patch_size(self.backbone)),
            blur=blur if blur is not None else image_size > 64,
        )
        if not (temperature > 0 and epsilon > 0 and sinkhorn_iterations >= 1):
            raise ValueError(f"need temperature > 0, epsilon > 0 and sinkhorn_iterations >= 1, "
                             f"got {temperature}, {epsilon} and {sinkhorn_iterations}")  # fmt: skip
        self.temperature = temperature
        self.epsilon = epsilon
        self.sinkhorn_iterations = sinkhorn_iterations
        self.freeze_prototypes_steps = freeze_prototypes_steps
        self.queue_length = queue_length
        self.queue_start_step = queue_start_step
        g = self.multicrop.num_global
        # The queue holds gathered embeddings, identical on every process (DDP's buffer broadcast
        # from rank 0 then changes nothing); each process scores its own 1/W slice of it.
        self.register_buffer("queue", torch.zeros(g, queue_length, proj_dim))  # (G, L, D)
        self.register_buffer("queue_filled", torch.zeros((), dtype=torch.long))
        self.register_buffer("steps_done", torch.zeros((), dtype=torch.long))
        self._normalize_prototypes()

    @classmethod
    def build(
        cls, ctx: BuildContext, freeze_prototypes_steps: int | None = None, **kwargs: Any
    ) -> SwAV:
        if freeze_prototypes_steps is None:  # the paper's "first epoch"
            epoch = ctx.steps_per_epoch
            freeze_prototypes_steps = 313 if epoch is None else epoch
        return cls(
            backbone=cls.backbone_for(ctx),
            image_size=ctx.image_size,
            freeze_prototypes_steps=freeze_prototypes_steps,
            **kwargs,
        )

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        images = batch["image"]  # (B, 3, S, S) uint8
        b, g, v = images.shape[0], self.multicrop.num_global, self.multicrop.num_crops
        crops = self.multicrop(images)  # [(G*B, 3, S, S), (N*B, 3, s, s)]
        h = self.projector(torch.cat([self.backbone(x) for x in crops]))  # (V*B, D), crop-major
        w = self.prototypes.weight  # (K, D), unit rows
        if int(self.steps_done) < self.freeze_prototypes_steps:
            w = w.detach() + 0.0 * w  # same values, zero gradient: frozen yet in DDP's graph
        with torch.autocast(images.device.type, enabled=False):  # scores / 0.1 need fp32
            z = F.normalize(h.float(), dim=1)  # (V*B, D)
            scores = z @ w.float().T  # (V*B, K)
            codes = self._codes(scores[: g * b].detach().view(g, b, -1), w.detach().float())
        training = self.training and torch.is_grad_enabled()  # not when evaluating or embedding
        if training and self.queue_length > 0 and int(self.steps_done) >= self.queue_start_step:
            self._enqueue(z[: g * b].detach().view(g, b, -1))
        loss = swapped_prediction_loss(scores.view(v, b, -1), codes, self.temperature)
        return {"loss": loss}

    @torch.no_grad()
    def report_panels(self, batch: dict[str, Tensor]) -> list[Any]:
        """Prototype usage: how many evaluation images take each prototype as their nearest."""
        from selfsup.report.panels import Panel

        z = F.normalize(self.projector(self.embed(batch)).float(), dim=1)  # (B, D)
        nearest = (z @ self.prototypes.weight.float().T).argmax(dim=1)  # (B,)
        usage = torch.bincount(nearest, minlength=self.prototypes.weight.shape[0]).cpu()
        used = int((usage > 0).sum())
        caption = (
            f"{len(z)} evaluation images; {used} of {len(usage)} prototypes are the nearest of "
            "at least one. Sinkhorn-Knopp's equipartition keeps usage spread during training; "
            "a few dominant prototypes mean the assignment has collapsed."
        )
        return [Panel("Prototype usage", "bars", values=usage.float(), caption=caption)]

    @torch.no_grad()
    def _codes(self, scores: Tensor, prototypes: Tensor) -> Tensor:
        """Sinkhorn codes of the global crops, over this batch and, once full, the queue.

        Args:
            scores: (G, B, K) prototype scores of the global crops.
            prototypes: (K, D) current prototypes, to score the queued embeddings.

        Returns:
            (G, B, K) codes of the batch rows.
        """
        b = scores.shape[1]
        use_queue = self.queue_length > 0 and int(self.queue_filled) >= self.queue_length
        codes = []
        for i in range(scores.shape[0]):
            s = scores[i]  # (B, K)
            if use_queue:
                rank, world = world_info()
                past = self.queue[i].tensor_split(world)[rank]  # (L/W, D)
                s = torch.cat([past @ prototypes.T, s])  # (L/W + B, K)
            codes.append(sinkhorn_knopp(s, self.epsilon, self.sinkhorn_iterations)[-b:])
        return torch.stack(codes)  # (G, B, K)

    @torch.no_grad()
    def _enqueue(self, z: Tensor) -> None:
        """Push the global batch's embeddings z (G, B, D) to the front of the queue."""
        z = gather_no_grad(z, dim=1)  # (G, W*B, D)
        n = min(z.shape[1], self.queue_length)
        self.queue.copy_(torch.cat([z[:, :n].to(self.queue.dtype), self.queue[:, :-n]], dim=1))
        self.queue_filled.add_(n).clamp_(max=self.queue_length)

    @torch.no_grad()
    def _normalize_prototypes(self) -> None:
        w = self.prototypes.weight
        w.copy_(F.normalize(w, dim=1))

    def frozen_parameters(self) -> list[nn.Parameter]:
        """The prototypes during their freeze (the reference code sets their gradient to None)."""
        frozen = int(self.steps_done) < self.freeze_prototypes_steps
        return [self.prototypes.weight] if frozen else []

    def after_step(self, step: int, total_steps: int) -> None:
        self.steps_done.fill_(step)
        # Unit-norm prototypes after every update.
        self._normalize_prototypes()
