"""SimCLR: contrastive learning of visual representations from two augmented views.

Chen, Kornblith, Norouzi, Hinton. "A Simple Framework for Contrastive Learning of Visual
Representations". ICML 2020. https://arxiv.org/abs/2002.05709

Algorithm (paper, Algorithm 1): two random views of every image -> encoder f -> projection MLP g
-> NT-Xent over the 2N embeddings, each view's positive being its partner and its negatives the
other 2N - 2 views.

Paper defaults, used here:
    augmentation: random resized crop (scale 0.08-1) + flip, colour jitter of strength s=1
        (0.8, 0.8, 0.8, 0.2) with p=0.8, grayscale p=0.2, Gaussian blur p=0.5 (appendix A).
        On CIFAR-10 the paper uses s=0.5 and no blur (appendix B.9): we switch to that
        augmentation automatically for images of 64 px or less (``jitter_strength=None``,
        ``blur=None``); the temperature stays 0.1 unless set.
    projection head: 2-layer MLP, hidden 2048, output 128 (section 4.2, B.1).
    temperature 0.1 (the ImageNet setting of section 5.1; appendix B.9 reports 0.5 as best for
        CIFAR-10 at long schedules; pass ``temperature=0.5`` to follow it).
    optimizer: LARS, lr = 0.3 x batch / 256, weight decay 1e-6, linear warm-up then cosine decay.

The loss can be swapped for another two-view loss of
:data:`selfsup.losses.registry.CONTRASTIVE_LOSSES` (``loss="triplet"``, ``"nce"``, ``"softmax"``)
to compare objectives with everything else held fixed; NT-Xent is the paper's.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from selfsup.heads import ProjectionHead
from selfsup.losses.registry import create_contrastive_loss
from selfsup.methods.base import OptimDefaults, register_method
from selfsup.methods.image import ImageMethod
from selfsup.views import ViewAugment


@register_method("simclr", "SimCLR (Chen et al. 2020): two views, projection MLP, NT-Xent")
class SimCLR(ImageMethod):
    """SimCLR on images. Batches: ``{"image": uint8 (B, 3, S, S)}``.

    Args:
        backbone: vision backbone name (see ``selfsup list``).
        image_size: side S of the input images; views are cropped back to S.
        temperature: NT-Xent temperature.
        proj_hidden_dim: hidden width of the projection MLP.
        proj_dim: output dimension of the projection MLP.
        jitter_strength: colour jitter strength s; ``None`` picks 1.0, or 0.5 on small images.
        blur: Gaussian blur in the views; ``None`` picks on for images larger than 64 px.
        loss: name of the two-view loss in ``CONTRASTIVE_LOSSES``.
        loss_args: the loss's own arguments (``margin``, ``mining``...). A loss that takes a
            ``temperature`` gets ``temperature`` above unless ``loss_args`` sets it.
    """

    kind = "image"
    defaults = OptimDefaults(optimizer="lars", lr=0.3, weight_decay=1e-6, scale_lr=True)

    def __init__(
        self,
        backbone: str = "resnet18",
        image_size: int = 32,
        temperature: float = 0.1,
        proj_hidden_dim: int = 2048,
        proj_dim: int = 128,
        jitter_strength: float | None = None,
        blur: bool | None = None,
        loss: str = "nt_xent",
        loss_args: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        small = image_size <= 64
        self.setup_encoder(backbone, image_size)
        self.projector = ProjectionHead(self.backbone.dim, proj_hidden_dim, proj_dim)
        self.criterion = create_contrastive_loss(loss, loss_args, temperature=temperature)
        self.augment = ViewAugment.simclr(
            image_size,
            strength=jitter_strength if jitter_strength is not None else (0.5 if small else 1.0),
            blur=blur if blur is not None else not small,
        )

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        images = batch["image"]  # (B, 3, S, S) uint8
        views = torch.cat([self.augment(images), self.augment(images)])  # (2B, 3, S, S)
        # One pass over both views, as in the authors' implementation: batch-norm statistics
        # cover all 2B views, and one large batch runs faster than two halves.
        z1, z2 = self.projector(self.backbone(views)).chunk(2)  # (B, proj_dim) each
        return {"loss": self.criterion(z1, z2)}
