"""BYOL: an online network predicts a slow-moving target network's projection of another view.

Grill, Strub, Altché, Tallec, Richemond, Buchatskaya, Doersch, Pires, Guo, Azar, Piot, Kavukcuoglu,
Munos, Valko. "Bootstrap Your Own Latent: A New Approach to Self-Supervised Learning".
NeurIPS 2020. https://arxiv.org/abs/2006.07733

Algorithm (paper, section 3.1): views v, v' of each image; the online network (encoder,
projector, predictor) gives q(v), the target network (an EMA of encoder and projector) gives z',
and the loss ``||q / |q| - z' / |z'| ||^2 = 2 - 2 cos(q, z')`` is symmetrised by swapping the
views. Only the online network is trained; after each optimizer step the target moves towards it
with tau = 1 - (1 - tau_base)(cos(pi k / K) + 1) / 2.

Paper defaults, used here:
    projector and predictor: MLP 4096 -> BN -> ReLU -> 256 (section 3.3).
    target momentum tau_base 0.996, raised to 1 on a cosine schedule (section 3.3).
    loss: the sum over both view orders of the per-image loss, averaged over images, as the
        paper's L + L~ (values in [0, 8]).
    augmentation (appendix B, table 6): random resized crop (scale 0.08-1) + flip, colour jitter
        (0.4, 0.4, 0.2, 0.1) with p=0.8, grayscale p=0.2, then asymmetric: blur p=1.0 / 0.1,
        solarisation p=0.0 / 0.2 for the first / second view. For images of 64 px or less blur
        is off by default, as SimCLR does on CIFAR-10 (solarisation stays).
    optimizer: LARS, lr 0.2 per 256 samples, weight decay 1.5e-6, biases and batch-norm
        parameters excluded from weight decay and adaptation (section 3.3).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from selfsup.heads import ProjectionHead
from selfsup.methods.base import OptimDefaults, register_method
from selfsup.methods.image import ImageMethod
from selfsup.methods.momentum import cosine_momentum, ema_update, momentum_copy
from selfsup.views import ViewAugment


def byol_views(size: int, blur: bool = True) -> tuple[ViewAugment, ViewAugment]:
    """BYOL's two asymmetric augmentations (Grill et al. 2020, table 6); also MoCo v3's.

    Args:
        size: output side in pixels.
        blur: blur with p=1.0 / 0.1; off gives p=0 in both.

    Returns:
        The pipelines of the first and second view.
    """
    common = {"scale": (0.08, 1.0), "jitter": (0.4, 0.4, 0.2, 0.1), "jitter_p": 0.8, "gray_p": 0.2}
    first = ViewAugment(size, blur_p=1.0 if blur else 0.0, solarize_p=0.0, **common)
    second = ViewAugment(size, blur_p=0.1 if blur else 0.0, solarize_p=0.2, **common)
    return first, second


def byol_loss(p: Tensor, z: Tensor) -> Tensor:
    """Mean over the batch of ``2 - 2 cos(p_i, z_i)`` (BYOL, eq. 2); ``z`` is a target.

    Args:
        p: (B, D) online predictions.
        z: (B, D) target projections (no gradient is sent to them).

    Returns:
        Scalar loss in [0, 4].
    """
    with torch.autocast(p.device.type, enabled=False):
        cos = F.cosine_similarity(p.float(), z.detach().float(), dim=1)  # (B,)
        return (2 - 2 * cos).mean()


@register_method("byol", "BYOL (Grill et al. 2020): online predictor regresses an EMA target")
class BYOL(ImageMethod):
    """BYOL on images. Batches: ``{"image": uint8 (B, 3, S, S)}``.

    Args:
        backbone: vision backbone name.
        image_size: side S of the input images.
        proj_hidden_dim: hidden width of the projector.
        proj_dim: output dimension of projector and predictor.
        pred_hidden_dim: hidden width of the predictor.
        base_momentum: target momentum tau_base at step 0.
        blur: Gaussian blur in the views; ``None`` picks on for images larger than 64 px.
    """

    fp32_state = True
    defaults = OptimDefaults(optimizer="lars", lr=0.2, weight_decay=1.5e-6, scale_lr=True)

    def __init__(
        self,
        backbone: str = "resnet18",
        image_size: int = 32,
        proj_hidden_dim: int = 4096,
        proj_dim: int = 256,
        pred_hidden_dim: int = 4096,
        base_momentum: float = 0.996,
        blur: bool | None = None,
    ) -> None:
        super().__init__()
        self.base_momentum = base_momentum
        self.setup_encoder(backbone, image_size)
        self.projector = ProjectionHead(self.backbone.dim, proj_hidden_dim, proj_dim)
        self.predictor = ProjectionHead(proj_dim, pred_hidden_dim, proj_dim)
        self.target_backbone = momentum_copy(self.backbone)
        self.target_projector = momentum_copy(self.projector)
        self.augment1, self.augment2 = byol_views(
            image_size, blur if blur is not None else image_size > 64
        )

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        images = batch["image"]  # (B, 3, S, S) uint8
        views = torch.cat([self.augment1(images), self.augment2(images)])  # (2B, 3, S, S)
        # One pass over both views (as SimCLR here): batch-norm statistics cover all 2B views.
        p1, p2 = self.predictor(self.projector(self.backbone(views))).chunk(2)  # (B, D) each
        with torch.no_grad():
            z1, z2 = self.target_projector(self.target_backbone(views)).chunk(2)  # (B, D) each
        loss = byol_loss(p1, z2) + byol_loss(p2, z1)
        return {"loss": loss}

    def after_step(self, step: int, total_steps: int) -> None:
        tau = cosine_momentum(step, total_steps, self.base_momentum)
        ema_update(self.target_backbone, self.backbone, tau)
        ema_update(self.target_projector, self.projector, tau)
