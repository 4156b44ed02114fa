"""Batched, on-device views: augmentations that act on a whole batch with per-sample randomness."""

from selfsup.views.augment import EvalTransform, ViewAugment, ViewConfig
from selfsup.views.blur import blur_kernel_size, gaussian_blur
from selfsup.views.color import color_jitter, random_grayscale, solarize
from selfsup.views.common import IMAGENET_MEAN, IMAGENET_STD, to_float
from selfsup.views.crop import random_resized_crop

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
