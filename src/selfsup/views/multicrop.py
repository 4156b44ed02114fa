"""Multi-crop views: a few global crops at full size and several small local crops.

Caron et al. 2020, "Unsupervised Learning of Visual Features by Contrasting Cluster Assignments",
section 3.2: two standard-resolution crops plus V low-resolution crops covering small parts of the
image (224 px and 96 px on ImageNet). The low-resolution crops add views at little cost because
the encoder runs once per resolution: :class:`MultiCrop` returns the views batched per resolution,
``[globals (G*B, 3, S, S), locals (N*B, 3, s, s)]``, crop-major (rows ``i*B:(i+1)*B`` are crop i of
every image). Every crop is a fresh random augmentation of the uint8 batch (:class:`ViewAugment`).

Recipes (paper defaults; local side ``round(96 / 224 * S)``, e.g. 14 px at S = 32):
    :meth:`MultiCrop.swav`: 2 x S with scale (0.14, 1) + 6 x s with scale (0.05, 0.14); SimCLR's
        colour distortion of strength 1 and Gaussian blur p=0.5 on every crop.
    :meth:`MultiCrop.dino`: 2 x S with scale (0.4, 1) + N x s with scale (0.05, 0.4) (DINO, Caron
        et al. 2021, ViT setting); BYOL's asymmetric augmentation on the global crops (blur
        p=1.0 / 0.1, solarisation p=0 / 0.2, jitter (0.4, 0.4, 0.2, 0.1)), blur p=0.5 on locals.
    :meth:`MultiCrop.byol`: BYOL's asymmetric pair with scale (0.08, 1) and no local crops, the
        augmentation of Barlow Twins and VICReg.
Every recipe takes ``blur=False``; the methods pass it for images of 64 px or less, where a blur
kernel of 10 % of the side is a few pixels wide (SimCLR drops blur on CIFAR-10 for that reason).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from selfsup.backbones import VisionBackbone
from selfsup.views.augment import ViewAugment

__all__ = ["MultiCrop", "dynamic_size_backbone", "local_crop_size", "patch_size"]

# BYOL's colour jitter (Grill et al. 2020, table 6), used by DINO, Barlow Twins and VICReg.
BYOL_JITTER = (0.4, 0.4, 0.2, 0.1)


def local_crop_size(size: int, multiple: int = 1) -> int:
    """Side of the local crops: 96/224 of the global side, rounded down to ``multiple`` (a ViT's
    patch size, so that no pixel is dropped by the patch embedding), at least ``multiple``."""
    side = round(size * 96 / 224)
    return max(multiple, side - side % multiple)


class MultiCrop(nn.Module):
    """Global and local crops of a uint8 batch, batched per resolution.

    Args:
        global_views: one augmentation per global crop, all of the same output size.
        local_view: augmentation of the local crops (needed when ``num_local > 0``).
        num_local: number N of local crops per image (0 = global crops only).
    """

    def __init__(
        self,
        global_views: Sequence[ViewAugment],
        local_view: ViewAugment | None = None,
        num_local: int = 0,
    ) -> None:
        super().__init__()
        if not global_views:
            raise ValueError("MultiCrop needs at least one global view")
        if len({v.config.size for v in global_views}) != 1:
            raise ValueError("global views must share one output size")
        if num_local < 0 or (num_local > 0 and local_view is None):
            raise ValueError(f"num_local={num_local} needs a local_view and must be >= 0")
        self.global_views = nn.ModuleList(global_views)
        self.local_view = local_view
        self.num_local = num_local

    @property
    def num_global(self) -> int:
        """Number G of global crops."""
        return len(self.global_views)

    @property
    def num_crops(self) -> int:
        """Total crops per image, G + N."""
        return self.num_global + self.num_local

    def forward(self, images: Tensor) -> list[Tensor]:
        """Args:
            images: (B, 3, H, W) uint8 on any device.

        Returns:
            ``[globals (G*B, 3, S, S)]`` followed, when N > 0, by ``locals (N*B, 3, s, s)``;
            float32 and normalised, crop-major.
        """
        crops = [torch.cat([view(images) for view in self.global_views])]  # (G*B, 3, S, S)
        if self.num_local > 0:
            # One call on the batch tiled N times: randomness is drawn per row, so every copy
            # gets its own crop, and the rows come out crop-major.
            tiled = images.repeat(self.num_local, 1, 1, 1)  # (N*B, 3, H, W)
            crops.append(self.local_view(tiled))  # (N*B, 3, s, s)
        return crops

    @classmethod
    def swav(
        cls,
        size: int,
        num_local: int = 6,
        local_size: int | None = None,
        global_scale: tuple[float, float] = (0.14, 1.0),
        local_scale: tuple[float, float] = (0.05, 0.14),
        blur: bool = True,
    ) -> MultiCrop:
        """SwAV's multi-crop (Caron et al. 2020, section 3.2 and appendix A)."""

        def view(side: int, scale: tuple[float, float]) -> ViewAugment:
            return ViewAugment(
                side,
                scale=scale,
                jitter=(0.8, 0.8, 0.8, 0.2),
                jitter_p=0.8,
                gray_p=0.2,
                blur_p=0.5 if blur else 0.0,
            )

        local_size = local_size or local_crop_size(size)
        return cls(
            [view(size, global_scale), view(size, global_scale)],
            view(local_size, local_scale),
            num_local,
        )

    @classmethod
    def dino(
        cls,
        size: int,
        num_local: int = 8,
        local_size: int | None = None,
        global_scale: tuple[float, float] = (0.4, 1.0),
        local_scale: tuple[float, float] = (0.05, 0.4),
        blur: bool = True,
    ) -> MultiCrop:
        """DINO's multi-crop (Caron et al. 2021, section 3.1): BYOL's asymmetric global pair and
        local crops blurred with p=0.5."""
        local_size = local_size or local_crop_size(size)
        local = ViewAugment(
            local_size,
            scale=local_scale,
            jitter=BYOL_JITTER,
            gray_p=0.2,
            blur_p=0.5 if blur else 0.0,
        )
        return cls(_byol_pair(size, global_scale, blur), local, num_local)

    @classmethod
    def byol(
        cls, size: int, scale: tuple[float, float] = (0.08, 1.0), blur: bool = True
    ) -> MultiCrop:
        """Two global views with BYOL's asymmetric augmentation and no local crops."""
        return cls(_byol_pair(size, scale, blur))


def _byol_pair(size: int, scale: tuple[float, float], blur: bool) -> list[ViewAugment]:
    """BYOL's two augmentations (Grill et al. 2020, table 6): blur p=1.0 / 0.1, solarisation
    p=0.0 / 0.2, colour jitter (0.4, 0.4, 0.2, 0.1) p=0.8, grayscale p=0.2."""
    return [
        ViewAugment(
            size,
            scale=scale,
            jitter=BYOL_JITTER,
            gray_p=0.2,
            blur_p=blur_p if blur else 0.0,
            solarize_p=solarize_p,
        )
        for blur_p, solarize_p in ((1.0, 0.0), (0.1, 0.2))
    ]


def dynamic_size_backbone(backbone: VisionBackbone) -> VisionBackbone:
    """The backbone made to accept every crop size: unchanged for a convolutional network, a
    Vision Transformer rebuilt with timm's ``dynamic_img_size=True`` (its positional embedding is
    interpolated to the input's token grid on each call).

    The method has built its backbone before it knows the family, hence the rebuild; the new
    backbone has fresh random weights, like the one it replaces.
    """
    if not hasattr(backbone.model, "dynamic_img_size") or backbone.model.dynamic_img_size:
        return backbone
    kwargs = {k: v for k, v in backbone.model_kwargs.items() if k != "img_size"}
    return VisionBackbone(
        backbone.timm_name,
        backbone.image_size,
        backbone.cifar_stem,
        {**kwargs, "dynamic_img_size": True},
    )


def patch_size(backbone: VisionBackbone) -> int:
    """Side of a Vision Transformer's patches, 1 for a convolutional network."""
    patch_embed = getattr(backbone.model, "patch_embed", None)
    if patch_embed is None:
        return 1
    size = patch_embed.patch_size
    return int(size[0] if isinstance(size, tuple | list) else size)
