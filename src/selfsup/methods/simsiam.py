"""SimSiam: a Siamese network with a predictor and a stop-gradient, nothing else.

Chen, He. "Exploring Simple Siamese Representation Learning". CVPR 2021.
https://arxiv.org/abs/2011.10566

Algorithm (paper, Algorithm 1): two views x1, x2 through one encoder f (backbone + projector) give
z1, z2; the predictor h gives p1, p2; loss ``D(p1, stopgrad(z2)) / 2 + D(p2, stopgrad(z1)) / 2``
with ``D(p, z) = -cos(p, z)``.

Paper defaults, used here:
    projector: 3 layers of 2048 with BN on every layer, including the output (without ReLU;
        its BN without affine parameters) (section 3, baseline settings). In the CIFAR-10
        experiments (appendix) it has 2 layers: picked automatically for images of 64 px or less
        (``proj_layers=None``).
    predictor: 2048 -> 512 -> 2048, BN and ReLU on the hidden layer only (section 3).
    augmentation: MoCo v2's (crop scale 0.2-1, jitter (0.4, 0.4, 0.4, 0.1) p=0.8, grayscale p=0.2,
        blur p=0.5); no blur on CIFAR-10 (appendix), picked for images of 64 px or less.
    optimizer: SGD, lr 0.05 per 256 samples, momentum 0.9, weight decay 1e-4, cosine decay; the
        predictor's learning rate is not decayed (section 4.2, table 1: "fixed lr" does best).
        The CIFAR-10 recipe (appendix) is lr 0.03 per 256 and weight decay 5e-4: set
        ``optim.lr=0.03 optim.weight_decay=5e-4`` to follow it.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from selfsup.heads import ProjectionHead
from selfsup.methods.base import OptimDefaults, register_method
from selfsup.methods.image import ImageMethod
from selfsup.methods.moco import mocov2_views


def negative_cosine(p: Tensor, z: Tensor, stop_gradient: bool = True) -> Tensor:
    """SimSiam's ``D(p, stopgrad(z))``: mean over the batch of ``-cos(p_i, z_i)``.

    Args:
        p: (B, D) predictions.
        z: (B, D) projections, detached here (no gradient reaches them) unless
            ``stop_gradient`` is False.

    Returns:
        Scalar in [-1, 1].
    """
    with torch.autocast(p.device.type, enabled=False):
        target = z.detach() if stop_gradient else z
        return -F.cosine_similarity(p.float(), target.float(), dim=1).mean()


@register_method("simsiam", "SimSiam (Chen & He 2021): predictor and stop-gradient, no negatives")
class SimSiam(ImageMethod):
    """SimSiam on images. Batches: ``{"image": uint8 (B, 3, S, S)}``.

    Args:
        backbone: vision backbone name.
        image_size: side S of the input images.
        proj_hidden_dim: hidden width of the projector.
        proj_dim: output dimension of the projector (and of the predictor).
        proj_layers: linear layers of the projector; ``None`` picks 3, or 2 on small images.
        pred_hidden_dim: bottleneck width of the predictor.
        blur: Gaussian blur in the views; ``None`` picks on for images larger than 64 px.
        stop_gradient: False removes the stop-gradient, the paper's ablation (section 4.1,
            figure 2) in which the representation collapses: a test of collapse diagnostics.
    """

    defaults = OptimDefaults(optimizer="sgd", lr=0.05, weight_decay=1e-4, scale_lr=True)

    def __init__(
        self,
        backbone: str = "resnet18",
        image_size: int = 32,
        proj_hidden_dim: int = 2048,
        proj_dim: int = 2048,
        proj_layers: int | None = None,
        pred_hidden_dim: int = 512,
        blur: bool | None = None,
        stop_gradient: bool = True,
    ) -> None:
        super().__init__()
        self.stop_gradient = stop_gradient
        small = image_size <= 64
        self.setup_encoder(backbone, image_size)
        self.projector = ProjectionHead(
            self.backbone.dim,
            proj_hidden_dim,
            proj_dim,
            num_layers=proj_layers if proj_layers is not None else (2 if small else 3),
            last_bn=True,
        )
        self.predictor = ProjectionHead(proj_dim, pred_hidden_dim, proj_dim)
        self.augment = mocov2_views(image_size, blur if blur is not None else not small)

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        images = batch["image"]  # (B, 3, S, S) uint8
        views = torch.cat([self.augment(images), self.augment(images)])  # (2B, 3, S, S)
        # One pass over both views (as SimCLR here): batch-norm statistics cover all 2B views.
        z = self.projector(self.backbone(views))  # (2B, D)
        p1, p2 = self.predictor(z).chunk(2)  # (B, D) each
        z1, z2 = z.chunk(2)  # (B, D) each
        sg = self.stop_gradient
        loss = negative_cosine(p1, z2, sg) / 2 + negative_cosine(p2, z1, sg) / 2
        return {"loss": loss}

    def param_groups(self) -> list[dict[str, Any]]:
        """The base class's groups (no weight decay on biases and BN), with the predictor's
        parameters in groups of their own whose learning rate stays fixed (``fixed_lr``)."""
        predictor = {id(p) for p in self.predictor.parameters()}
        groups = []
        for fixed in (False, True):
            params = [
                p for p in self.parameters() if p.requires_grad and (id(p) in predictor) == fixed
            ]
            decay = [p for p in params if p.ndim > 1]
            no_decay = [p for p in params if p.ndim <= 1]
            groups.append({"params": decay, "fixed_lr": fixed})
            groups.append(
                {"params": no_decay, "weight_decay": 0.0, "lars_exclude": True, "fixed_lr": fixed}
            )
        return [g for g in groups if g["params"]]
