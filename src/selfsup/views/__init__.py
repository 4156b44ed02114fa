"""Batched, on-device views: augmentations that act on a whole batch with per-sample randomness."""

from selfsup.views.image import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    EvalTransform,
    ViewAugment,
    ViewConfig,
    blur_kernel_size,
    color_jitter,
    gaussian_blur,
    random_grayscale,
    random_resized_crop,
    solarize,
    to_float,
)

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "EvalTransform",
    "ViewAugment",
    "ViewConfig",
    "blur_kernel_size",
    "color_jitter",
    "gaussian_blur",
    "random_grayscale",
    "random_resized_crop",
    "solarize",
    "to_float",
]
