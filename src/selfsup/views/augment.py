"""Composed view pipelines: :class:`ViewAugment` (training views) and :class:`EvalTransform`.

The recipe and its defaults follow SimCLR: Chen et al. 2020, "A Simple Framework for Contrastive
Learning of Visual Representations", appendix A (random resized crop with flip, colour distortion =
colour jitter with p=0.8 plus grayscale with p=0.2, Gaussian blur with p=0.5 and a kernel of 10% of
the image side). Solarisation (BYOL, Grill et al. 2020) is available but off by default.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from selfsup.views.blur import gaussian_blur
from selfsup.views.color import color_jitter, random_grayscale, solarize
from selfsup.views.common import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    _check_images,
    _no_autocast,
    _unit_float,
    to_float,
)
from selfsup.views.crop import random_resized_crop

__all__ = ["EvalTransform", "ViewAugment", "ViewConfig"]


@dataclass(frozen=True)
class ViewConfig:
    """Settings of one :class:`ViewAugment` pipeline; validated on construction.

    Attributes:
        size: output side in pixels.
        scale: crop area range (fraction of the image).
        ratio: crop aspect ratio range.
        flip_p: horizontal flip probability.
        jitter: (brightness, contrast, saturation, hue) strengths.
        jitter_p: probability of colour jitter.
        gray_p: probability of grayscale.
        blur_p: probability of Gaussian blur (kernel 10% of ``size``, sigma in [0.1, 2]).
        solarize_p: probability of solarisation.
        mean: normalisation mean.
        std: normalisation std.
    """

    size: int
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1)
    jitter_p: float = 0.8
    gray_p: float = 0.2
    blur_p: float = 0.5
    solarize_p: float = 0.0
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"size must be positive, got {self.size}")
        if not 0.0 < self.scale[0] <= self.scale[1] <= 1.0:
            raise ValueError(f"scale must satisfy 0 < lo <= hi <= 1, got {self.scale}")
        if not 0.0 < self.ratio[0] <= self.ratio[1]:
            raise ValueError(f"ratio must satisfy 0 < lo <= hi, got {self.ratio}")
        for name in ("flip_p", "jitter_p", "gray_p", "blur_p", "solarize_p"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if len(self.jitter) != 4 or min(self.jitter) < 0 or self.jitter[3] > 0.5:
            raise ValueError(f"jitter must be 4 non-negative values with hue <= 0.5: {self.jitter}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"mean and std need 3 values, std positive: {self.mean}, {self.std}")


class ViewAugment(torch.nn.Module):
    """One random view of a uint8 batch: crop+flip, colour jitter, grayscale, blur, solarise.

    The order and the defaults of :meth:`simclr` follow SimCLR (Chen et al. 2020, appendix A).
    Call it twice on the same batch for two views.

    Args:
        size: output side in pixels.
        scale, ratio, flip_p, jitter, jitter_p, gray_p, blur_p, solarize_p, mean, std: see
            :class:`ViewConfig`.
    """

    def __init__(
        self,
        size: int,
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        flip_p: float = 0.5,
        jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1),
        jitter_p: float = 0.8,
        gray_p: float = 0.2,
        blur_p: float = 0.5,
        solarize_p: float = 0.0,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        self.config = ViewConfig(
            size=size,
            scale=tuple(scale),
            ratio=tuple(ratio),
            flip_p=flip_p,
            jitter=tuple(jitter),
            jitter_p=jitter_p,
            gray_p=gray_p,
            blur_p=blur_p,
            solarize_p=solarize_p,
            mean=tuple(mean),
            std=tuple(std),
        )

    @classmethod
    def from_config(cls, config: ViewConfig) -> ViewAugment:
        """Build the pipeline from a :class:`ViewConfig`."""
        return cls(**dataclasses.asdict(config))

    @classmethod
    def simclr(cls, size: int, strength: float = 1.0, blur: bool = True) -> ViewAugment:
        """SimCLR's augmentation (Chen et al. 2020, appendix A).

        Random resized crop (scale 0.08-1, ratio 3/4-4/3) with flip p=0.5, colour jitter
        ``(0.8s, 0.8s, 0.8s, 0.2s)`` with p=0.8, grayscale p=0.2, Gaussian blur p=0.5 (kernel 10%
        of the side, sigma 0.1-2). The paper omits blur on CIFAR-10: pass ``blur=False`` there.

        Args:
            size: output side in pixels.
            strength: colour distortion strength s (1.0 for ImageNet, 0.5 for CIFAR-10).
            blur: whether to blur.
        """
        s = strength
        return cls(
            size,
            jitter=(0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s),
            jitter_p=0.8,
            gray_p=0.2,
            blur_p=0.5 if blur else 0.0,
        )

    def forward(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Make one view per image.

        Args:
            images: (B, 3, H, W) uint8 (or float in [0, 1]) on any device.
            generator: source of randomness; None = global RNG of the images' device.

        Returns:
            (B, 3, size, size) float32, normalised with the config's mean and std.
        """
        c = self.config
        b, co, sa, hu = c.jitter
        x = random_resized_crop(images, c.size, c.scale, c.ratio, c.flip_p, generator)
        if c.jitter_p > 0 and max(c.jitter) > 0:
            x = color_jitter(x, b, co, sa, hu, p=c.jitter_p, generator=generator)
        if c.gray_p > 0:
            x = random_grayscale(x, c.gray_p, generator)
        if c.blur_p > 0:
            x = gaussian_blur(x, c.blur_p, generator=generator)
        if c.solarize_p > 0:
            x = solarize(x, c.solarize_p, generator=generator)
        return to_float(x, c.mean, c.std)

    def extra_repr(self) -> str:
        return repr(self.config)


class EvalTransform(torch.nn.Module):
    """Deterministic evaluation transform: resize the shorter side, centre crop, normalise.

    Matches torchvision's ``Resize(resize, antialias=True)`` + ``CenterCrop(size)`` + ``Normalize``
    on tensors. The ImageNet convention is ``resize = int(size / 0.875)`` (256 for 224); the default
    ``resize = size`` only rescales, which suits already-square low-resolution data such as CIFAR.

    Args:
        size: output side in pixels.
        resize: target of the shorter side before cropping; None = ``size``.
        mean: normalisation mean.
        std: normalisation std.
    """

    def __init__(
        self,
        size: int,
        resize: int | None = None,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        self.size = size
        self.resize = size if resize is None else resize
        if self.resize < size:
            raise ValueError(f"resize ({self.resize}) must be >= size ({size})")
        self.mean = tuple(mean)
        self.std = tuple(std)

    def forward(self, images: Tensor) -> Tensor:
        """Args:
            images: (B, 3, H, W) uint8 (or float in [0, 1]).

        Returns:
            (B, 3, size, size) float32, normalised.
        """
        _check_images(images)
        with _no_autocast(images.device):
            x = _unit_float(images)
            n, _, height, width = x.shape
            short, long = min(height, width), max(height, width)
            if short != self.resize and n > 0:
                new_long = int(self.resize * long / short)  # torchvision truncates the long side
                new_hw = (self.resize, new_long) if height <= width else (new_long, self.resize)
                x = F.interpolate(
                    x, size=new_hw, mode="bilinear", align_corners=False, antialias=True
                ).clamp_(0.0, 1.0)
            height, width = x.shape[-2:]
            top = int(round((height - self.size) / 2.0))
            left = int(round((width - self.size) / 2.0))
            x = x[:, :, top : top + self.size, left : left + self.size]
            return to_float(x, self.mean, self.std)

    def extra_repr(self) -> str:
        return f"size={self.size}, resize={self.resize}"
