"""Random resized crop with horizontal flip, per sample, in one bilinear ``grid_sample``."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from selfsup.views.common import _check_images, _no_autocast, _rand, _uniform, _unit_float

__all__ = ["random_resized_crop"]


def _crop_boxes(
    n: int,
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    images: Tensor,
    generator: torch.Generator | None,
    attempts: int = 10,
) -> Tensor:
    """Sample integer crop boxes like torchvision's ``RandomResizedCrop.get_params``.

    torchvision tries up to 10 (area, aspect) draws per image and falls back to a central crop; here
    all 10 candidates of all samples are drawn at once and the first valid one is taken.

    Returns:
        (n, 4) float32 boxes ``(top, left, h, w)`` in pixels, integer valued.
    """
    area = height * width
    log_r = (math.log(ratio[0]), math.log(ratio[1]))
    u = _rand(n, images, generator, attempts, 2)  # (n, A, 2)
    target_area = area * _uniform(scale[0], scale[1], u[..., 0])  # (n, A)
    aspect = torch.exp(_uniform(log_r[0], log_r[1], u[..., 1]))  # (n, A)
    w = torch.round(torch.sqrt(target_area * aspect))  # (n, A)
    h = torch.round(torch.sqrt(target_area / aspect))  # (n, A)
    valid = (w > 0) & (w <= width) & (h > 0) & (h <= height)  # (n, A)
    idx = torch.arange(attempts, device=w.device).expand(n, attempts)  # (n, A)
    # index of the first valid candidate, (n, 1); rows without one are replaced by the fallback
    first = torch.where(valid, idx, attempts).amin(dim=1, keepdim=True).clamp_max_(attempts - 1)
    w = w.gather(1, first).squeeze(1)  # (n,)
    h = h.gather(1, first).squeeze(1)  # (n,)

    # Central fallback, identical for every sample of a fixed-size batch.
    in_ratio = width / height
    if in_ratio < min(ratio):
        fw, fh = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        fw, fh = int(round(height * max(ratio))), height
    else:
        fw, fh = width, height
    ok = valid.any(dim=1)  # (n,)
    w = torch.where(ok, w, torch.full_like(w, fw))
    h = torch.where(ok, h, torch.full_like(h, fh))

    # Offsets uniform over integers [0, H - h] and [0, W - w], as torch.randint; fallback is central.
    u_ij = _rand(n, images, generator, 2)  # (n, 2)
    top = torch.floor(u_ij[:, 0] * (height - h + 1)).clamp_max_(height - h)
    left = torch.floor(u_ij[:, 1] * (width - w + 1)).clamp_max_(width - w)
    top = torch.where(ok, top, torch.full_like(top, (height - fh) // 2))
    left = torch.where(ok, left, torch.full_like(left, (width - fw) // 2))
    return torch.stack((top, left, h, w), dim=1)


def _box_coords(start: Tensor, extent: Tensor, in_size: int, size: int) -> Tensor:
    """Normalised sampling coordinates of ``size`` output pixels spread over a box on one axis.

    Half-pixel centres as ``F.interpolate(align_corners=False)``: output pixel u samples input pixel
    coordinate ``start + (u + 0.5) * extent / size - 0.5``, clamped to the box's first and last pixel
    centres so that, as in torchvision's crop-then-resize, no pixel outside the box leaks in.

    Args:
        start: (B,) first pixel of the box.
        extent: (B,) box length in pixels.
        in_size: input length along this axis.
        size: output length.

    Returns:
        (B, size) coordinates in [-1, 1] for ``grid_sample(align_corners=False)``.
    """
    u = torch.arange(size, device=start.device, dtype=torch.float32) + 0.5  # (size,)
    pix = start[:, None] + u[None, :] * (extent / size)[:, None] - 0.5  # (B, size)
    pix = torch.minimum(torch.maximum(pix, start[:, None]), (start + extent - 1)[:, None])
    return (2.0 * pix + 1.0) / in_size - 1.0


def _resized_crop(x: Tensor, boxes: Tensor, flip: Tensor, size: int) -> Tensor:
    """Crop per-sample boxes, resize to ``size`` and optionally flip, in one grid_sample.

    Args:
        x: (B, 3, H, W) float32.
        boxes: (B, 4) ``(top, left, h, w)`` in pixels.
        flip: (B,) bool, True = mirror horizontally.
        size: output side.

    Returns:
        (B, 3, size, size) float32, equal to torchvision's ``resized_crop`` (bilinear, no
        antialias) followed by a flip where ``flip`` is True.
    """
    n, _, height, width = x.shape
    top, left, h, w = boxes.unbind(dim=1)  # (B,) each
    gx = _box_coords(left, w, width, size)  # (B, size)
    gx = torch.where(flip[:, None], gx.flip(1), gx)
    gy = _box_coords(top, h, height, size)  # (B, size)
    grid = torch.stack(
        (gx[:, None, :].expand(n, size, size), gy[:, :, None].expand(n, size, size)), dim=-1
    )  # (B, size, size, 2), last axis (x, y)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.clamp_(0.0, 1.0)


def random_resized_crop(
    images: Tensor,
    size: int,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    flip_p: float = 0.5,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Random resized crop plus horizontal flip, per sample, in one bilinear ``grid_sample``.

    Crop boxes are sampled as torchvision's ``RandomResizedCrop`` (area fraction uniform in
    ``scale``, log-uniform aspect ratio in ``ratio``, integer box, 10 attempts then a central crop);
    SimCLR appendix A uses the defaults here. Unlike torchvision's antialiased resize, downscaling a
    large crop samples bilinearly without antialiasing (one gather per output pixel).

    Args:
        images: (B, 3, H, W) float in [0, 1] (uint8 is converted).
        size: output side.
        scale: range of the crop's area as a fraction of the image's.
        ratio: range of the crop's aspect ratio (width / height).
        flip_p: probability of a horizontal flip.
        generator: source of randomness; None = global RNG of the images' device.

    Returns:
        (B, 3, size, size) float32 in [0, 1].
    """
    _check_images(images)
    with _no_autocast(images.device):
        x = _unit_float(images)
        n, _, height, width = x.shape
        if n == 0:
            return x.new_empty(0, 3, size, size)
        boxes = _crop_boxes(n, height, width, scale, ratio, x, generator)  # (B, 4)
        flip = _rand(n, x, generator) < flip_p  # (B,)
        return _resized_crop(x, boxes, flip, size)
