"""Shared helpers of the batched image views: constants, dtype/shape checks, RNG draws, normalisation.

Datasets return uint8 images ``(B, 3, H, W)`` of one fixed size; every view function acts on the
whole batch at once on the batch's device (CPU or GPU), drawing one set of random parameters per
sample. No function loops over the batch in Python.

Every op keeps pixel values in ``[0, 1]`` and computes in float32, also under autocast; only
:func:`to_float` normalises with mean and std. Randomness comes from ``torch.rand(..., generator=g,
device=images.device)``: with ``generator=None`` the global RNG of the images' device is used, so
saving and restoring torch's RNG state reproduces the views.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "to_float"]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

# ITU-R 601-2 luma weights, exactly as torchvision's rgb_to_grayscale (they sum to 0.9999).
_LUMA = (0.2989, 0.587, 0.114)


def _no_autocast(device: torch.device) -> torch.autocast:
    """Context that turns autocast off on the device, so that the ops compute in float32."""
    return torch.autocast(device_type=device.type, enabled=False)


def _unit_float(images: Tensor) -> Tensor:
    """uint8 in [0, 255] -> float32 in [0, 1]; other dtypes -> float32 unchanged in value."""
    if images.dtype == torch.uint8:
        return images.float().div_(255.0)
    return images.float()


def _check_images(images: Tensor) -> None:
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")


def _rand(n: int, images: Tensor, generator: torch.Generator | None, *shape: int) -> Tensor:
    """Uniform [0, 1) float32 of shape (n, *shape) on the images' device."""
    return torch.rand((n, *shape), generator=generator, device=images.device, dtype=torch.float32)


def _uniform(lo: float, hi: float, u: Tensor) -> Tensor:
    return lo + (hi - lo) * u


def _gray(x: Tensor) -> Tensor:
    """x: (B, 3, H, W) -> luma (B, 1, H, W)."""
    luma = torch.tensor(_LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * luma).sum(dim=1, keepdim=True)  # faster on CPU than summing unbound channels


def to_float(
    images: Tensor,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> Tensor:
    """Convert images to normalised float32.

    Args:
        images: (B, 3, H, W) uint8 in [0, 255], or float in [0, 1].
        mean: per-channel mean subtracted after scaling to [0, 1].
        std: per-channel standard deviation divided by.

    Returns:
        (B, 3, H, W) float32, ``(x - mean) / std``.
    """
    _check_images(images)
    with _no_autocast(images.device):
        x = _unit_float(images)
        m = torch.as_tensor(mean, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
        s = torch.as_tensor(std, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
        return (x - m) / s
