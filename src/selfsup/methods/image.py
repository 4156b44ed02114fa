"""What every image method shares: the encoder, the evaluation transform, ``embed`` and ``export``.

Methods that learn from images subclass :class:`ImageMethod`, call :meth:`ImageMethod.setup_encoder`
in their constructor, and implement ``build`` and ``forward``. Evaluation features are always the
backbone's pooled output on centre-cropped, normalised images, whichever head the method trains.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from selfsup.backbones import VisionBackbone, create_vision_backbone
from selfsup.methods.base import BuildContext, Method
from selfsup.views import EvalTransform


class ImageEncoder(nn.Module):
    """The evaluation encoder of an image method as one module: uint8 ``(B, 3, S, S)`` images ->
    ``(B, D)`` features (preprocessing, an optional input transform, the backbone), for
    fine-tuning.

    Args:
        preprocess: the evaluation transform (resize, crop, normalise).
        backbone: the encoder.
        transform: applied to the normalised images before the backbone (e.g. to grayscale).
    """

    def __init__(
        self,
        preprocess: nn.Module,
        backbone: VisionBackbone,
        transform: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        super().__init__()
        self.preprocess = preprocess
        self.backbone = backbone
        self.transform = transform
        self.dim = backbone.dim

    def forward(self, images: Tensor) -> Tensor:
        x = self.preprocess(images)
        return self.backbone(self.transform(x) if self.transform is not None else x)


class ImageMethod(Method):
    """Base of the image methods: ``self.backbone`` (a :class:`VisionBackbone`) and
    ``self.preprocess`` (an :class:`EvalTransform`).

    ``architectures`` names the backbone families the method supports (``"resnet"`` for
    convolutional networks, ``"vit"`` for Vision Transformers); :meth:`setup_encoder` rejects the
    others with a message naming the method and the families it needs.
    """

    kind = "image"
    protocols: ClassVar[tuple[str, ...]] = ("knn", "linear", "finetune")
    architectures: ClassVar[frozenset[str]] = frozenset({"resnet", "vit"})
    default_backbone: ClassVar[str | None] = "resnet18"

    @classmethod
    def build(cls, ctx: BuildContext, **kwargs: Any) -> ImageMethod:
        """The method on the run's backbone (or ``default_backbone``) and image size."""
        return cls(backbone=cls.backbone_for(ctx), image_size=ctx.image_size, **kwargs)

    def setup_encoder(self, backbone: str, image_size: int, **kwargs: object) -> VisionBackbone:
        """Create ``self.backbone`` and ``self.preprocess``; returns the backbone."""
        self.backbone = create_vision_backbone(backbone, image_size=image_size, **kwargs)
        family = architecture(self.backbone)
        if family not in self.architectures:
            needs = " or ".join(sorted(self.architectures))
            raise ValueError(
                f"{type(self).__name__} needs a {needs} backbone; {backbone!r} is a {family}"
            )
        self.preprocess = EvalTransform(image_size)
        return self.backbone

    @torch.no_grad()
    def embed(self, batch: dict[str, Tensor]) -> Tensor:
        return self.backbone(self.preprocess(batch["image"]))

    def encoder_for_finetuning(self) -> ImageEncoder:
        """The encoder ``embed`` uses, as one module (see :class:`ImageEncoder`)."""
        return ImageEncoder(self.preprocess, self.backbone)

    @torch.no_grad()
    def embed_head(self, features: Tensor) -> Tensor | None:
        """The projector applied to ``embed``'s features (joint-embedding methods), else None."""
        projector = getattr(self, "projector", None)
        if not isinstance(projector, torch.nn.Module):
            return None
        return projector(features)

    def export(self, path: Path) -> None:
        self.backbone.export(path, self.preprocess.mean, self.preprocess.std)


def architecture(backbone: VisionBackbone) -> str:
    """``"vit"`` for timm Vision Transformers (patch embedding + blocks), else ``"resnet"``."""
    model = backbone.model
    if hasattr(model, "patch_embed") and hasattr(model, "blocks"):
        return "vit"
    return "resnet"
