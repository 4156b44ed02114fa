"""Barlow Twins: redundancy reduction between the embeddings of two views.

Zbontar, Jing, Misra, LeCun, Deny. "Barlow Twins: Self-Supervised Learning via Redundancy
Reduction". ICML 2021. https://arxiv.org/abs/2103.03230

Algorithm (paper, algorithm 1): two views -> encoder -> projector -> embeddings standardised along
the (global) batch -> cross-correlation matrix C -> ``sum_i (1 - C_ii)^2 + lambda sum_{i!=j}
C_ij^2``, which pushes C towards the identity.

Paper defaults, used here:
    augmentation: BYOL's asymmetric pair (crop scale 0.08-1, blur p=1.0 / 0.1, solarisation
        p=0 / 0.2, colour jitter (0.4, 0.4, 0.2, 0.1) p=0.8, grayscale p=0.2). At 64 px or less
        the blur is off (a 10 % kernel is a few pixels; SimCLR drops it on CIFAR-10 too).
    projector: 3 linear layers of 8192 (BN + ReLU between); ``proj_hidden_dim`` defaults to
        ``proj_dim``, as the paper keeps every layer the same width.
    lambda 0.0051; C in float32 over the global batch.
    optimizer: LARS, lr 0.2 x batch / 256 for the weights and 0.0048 x batch / 256 for the
        biases and batch-norm parameters (``bias_lr_ratio`` = 0.0048 / 0.2 of the weights' lr,
        on the same schedule), weight decay 1.5e-6, biases and batch-norm parameters excluded
        from LARS and weight decay.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from selfsup.heads import ProjectionHead
from selfsup.losses.redundancy import barlow_twins_loss
from selfsup.methods.base import OptimDefaults, register_method
from selfsup.methods.image import ImageMethod
from selfsup.views.multicrop import MultiCrop


@register_method(
    "barlowtwins", "Barlow Twins (Zbontar et al. 2021): cross-correlation of two views -> identity"
)
class BarlowTwins(ImageMethod):
    """Barlow Twins on images. Batches: ``{"image": uint8 (B, 3, S, S)}``.

    Args:
        backbone: vision backbone name.
        image_size: side S of the input images; views are cropped back to S.
        proj_dim: output dimension of the projector.
        proj_hidden_dim: hidden width of the projector; None = ``proj_dim``.
        lambd: weight of the off-diagonal term.
        blur: Gaussian blur in the views; None picks on for images larger than 64 px.
        bias_lr_ratio: learning rate of the biases and batch-norm parameters, relative to the
            weights' (the paper's 0.0048 / 0.2).
    """

    kind = "image"
    defaults = OptimDefaults(optimizer="lars", lr=0.2, weight_decay=1.5e-6, scale_lr=True)

    def __init__(
        self,
        backbone: str = "resnet18",
        image_size: int = 32,
        proj_dim: int = 8192,
        proj_hidden_dim: int | None = None,
        lambd: float = 0.0051,
        blur: bool | None = None,
        bias_lr_ratio: float = 0.024,  # 0.0048 / 0.2
    ) -> None:
        super().__init__()
        self.setup_encoder(backbone, image_size)
        hidden = proj_hidden_dim or proj_dim
        self.projector = ProjectionHead(self.backbone.dim, hidden, proj_dim, num_layers=3)
        self.views = MultiCrop.byol(image_size, blur=blur if blur is not None else image_size > 64)
        self.lambd = lambd
        self.bias_lr_ratio = bias_lr_ratio

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        (views,) = self.views(batch["image"])  # (2B, 3, S, S): view 1 of every image, then view 2
        # One pass over both views: the backbone's batch norm sees all 2B images.
        z1, z2 = self.projector(self.backbone(views)).chunk(2)  # (B, proj_dim) each
        return {"loss": barlow_twins_loss(z1, z2, self.lambd)}

    def param_groups(self) -> list[dict[str, Any]]:
        """The base class's groups, the biases' and batch norm's at ``bias_lr_ratio`` of the lr."""
        groups = super().param_groups()
        for group in groups:
            if group.get("lars_exclude"):
                group["lr_scale"] = self.bias_lr_ratio
        return groups
