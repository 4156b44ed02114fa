"""Patches of images for the spatial pretext tasks: grids with gaps and jitter, crops, colour guards.

The jigsaw puzzle (Noroozi & Favaro 2016) and context prediction (Doersch et al. 2015) cut an image
into a 3x3 grid and take one patch from every cell, smaller than the cell and at a random offset in
it, so that neighbouring patches are separated by a gap and never line up exactly: a network could
otherwise solve the task by matching edges or continuing straight lines ("trivial shortcuts").
Both papers also guard against shortcuts through colour: per-patch normalisation of the mean and
spread, and, against chromatic aberration (colour fringes that grow toward the image borders and so
reveal where a patch came from), colour dropping, green-magenta projection or a spatial jitter of
the colour channels.

Every function acts on a whole batch on its device, with per-sample (or per-patch) randomness drawn
as in :mod:`selfsup.views.common`. Positions are integer pixels, so patches are exact copies of
image pixels (one ``gather``, no interpolation).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from selfsup.views.common import _check_images, _gray, _no_autocast, _rand, _unit_float

__all__ = [
    "crop_patches",
    "drop_channels",
    "grid_positions",
    "jitter_channels",
    "normalize_patches",
    "project_green_magenta",
    "random_crop",
    "to_gray",
]

# Green-magenta axis of RGB (Doersch et al. 2015): the direction along which lens
# chromatic aberration shifts colour; unit length.
GREEN_MAGENTA = (-1 / math.sqrt(6), 2 / math.sqrt(6), -1 / math.sqrt(6))


def _randint(lo: int, hi: int, u: Tensor) -> Tensor:
    """Integers uniform in [lo, hi] (inclusive) from uniform [0, 1) draws ``u``, as int64."""
    return (lo + torch.floor(u * (hi - lo + 1))).long().clamp_max(hi)


def grid_positions(
    n: int,
    image_size: int,
    patch_size: int,
    grid: int = 3,
    jitter: int | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> tuple[Tensor, Tensor]:
    """Top-left corners of one patch per cell of a ``grid x grid`` grid, per sample.

    The grid has square cells of side ``cell = image_size // grid`` and is placed at a random
    offset in the image (uniform over the ``image_size - grid * cell`` spare pixels, per sample).
    Inside its cell each patch sits at a random offset: anywhere (``jitter=None``, the jigsaw
    tiles' "64 x 64 tile at a random position of each 75 x 75 cell"), or within ``jitter`` pixels
    of the cell's centre on each axis (context prediction: a fixed gap plus a small jitter).
    Patches stay inside their cells, so they never overlap and always lie inside the image.

    Args:
        n: number of samples.
        image_size: side of the square images.
        patch_size: side of the square patches (at most ``cell``).
        grid: cells per side.
        jitter: maximal offset from the centred position, per axis; None = anywhere in the cell.
        generator: source of randomness; None = global RNG of ``device``.
        device: device of the returned tensors.

    Returns:
        (top, left), each (n, grid * grid) int64, cells in raster order (row by row).
    """
    cell = image_size // grid
    if not 1 <= patch_size <= cell:
        raise ValueError(f"patch_size must be in [1, {cell}] for {grid} cells of {image_size} px")
    slack = cell - patch_size
    if jitter is None:
        lo, hi = 0, slack
    else:
        lo, hi = max(0, slack // 2 - jitter), min(slack, slack // 2 + jitter)
    k = grid * grid
    u = torch.rand((n, 2 * k + 2), generator=generator, device=device)  # (n, 2K + 2)
    spare = image_size - grid * cell
    origin = _randint(0, spare, u[:, :2])  # (n, 2) grid's (top, left)
    offset = _randint(lo, hi, u[:, 2:].reshape(n, k, 2))  # (n, K, 2) patch offset in its cell
    cells = torch.arange(k, device=device)
    row, col = (cells // grid) * cell, (cells % grid) * cell  # (K,) cell corners
    top = origin[:, :1] + row + offset[..., 0]  # (n, K)
    left = origin[:, 1:] + col + offset[..., 1]  # (n, K)
    return top, left


def crop_patches(images: Tensor, top: Tensor, left: Tensor, size: int) -> Tensor:
    """Copy square patches out of every image, in one gather.

    Positions are not checked: they must satisfy ``0 <= top <= H - size`` and likewise ``left``.

    Args:
        images: (B, C, H, W) of any dtype.
        top: (B, K) first row of each patch, or (B, K, C) one per channel (see
            :func:`jitter_channels`).
        left: first column, same shape as ``top``.
        size: patch side.

    Returns:
        (B, K, C, size, size), same dtype as ``images``.
    """
    b, c, h, w = images.shape
    k = top.shape[1]
    if top.ndim == 2:  # the same position for every channel
        top, left = top[..., None].expand(b, k, c), left[..., None].expand(b, k, c)
    steps = torch.arange(size, device=images.device)
    rows = top[..., None] + steps  # (B, K, C, P)
    cols = left[..., None] + steps  # (B, K, C, P)
    flat = rows[..., :, None] * w + cols[..., None, :]  # (B, K, C, P, P) index into H * W
    index = flat.permute(0, 2, 1, 3, 4).reshape(b, c, k * size * size)  # (B, C, K*P*P)
    out = images.reshape(b, c, h * w).gather(2, index)  # (B, C, K*P*P)
    return out.view(b, c, k, size, size).transpose(1, 2)  # (B, K, C, P, P)


def jitter_channels(
    top: Tensor,
    left: Tensor,
    max_shift: int,
    image_size: int,
    size: int,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Per-channel patch positions shifted by up to ``max_shift`` pixels each way, per patch.

    Noroozi & Favaro (2016) jitter the colour channels of each tile by 0 to 2 pixels
    so that the channels' relative shift (chromatic aberration) no longer reveals the position.
    Shifted positions are clamped to the image.

    Args:
        top: (B, K) patch rows.
        left: (B, K) patch columns.
        max_shift: largest shift per axis, in pixels.
        image_size: side of the square images.
        size: patch side.
        generator: source of randomness; None = global RNG of the positions' device.

    Returns:
        (top, left), each (B, K, 3) int64.
    """
    b, k = top.shape
    u = torch.rand((b, k, 3, 2), generator=generator, device=top.device)  # (B, K, 3, 2)
    shift = _randint(-max_shift, max_shift, u)  # (B, K, 3, 2)
    top = (top[..., None] + shift[..., 0]).clamp(0, image_size - size)
    left = (left[..., None] + shift[..., 1]).clamp(0, image_size - size)
    return top, left


def normalize_patches(patches: Tensor, eps: float = 1e-5) -> Tensor:
    """Give every patch zero mean per channel and unit standard deviation, independently.

    Noroozi & Favaro (2016) normalise each tile's mean and standard deviation so that
    low-level statistics shared by neighbouring tiles cannot solve the puzzle. The mean is removed
    per channel; the spread is one scalar per patch (over its channels and pixels), so the relative
    scale of the channels, hence the colour directions, is kept.

    Args:
        patches: (..., C, P, P) float.
        eps: floor of the standard deviation (flat patches become zero, not NaN).

    Returns:
        (..., C, P, P) float32.
    """
    with _no_autocast(patches.device):
        x = patches.float()
        x = x - x.mean(dim=(-2, -1), keepdim=True)
        std = x.square().mean(dim=(-3, -2, -1), keepdim=True).sqrt()  # (..., 1, 1, 1)
        return x / std.clamp_min(eps)


def drop_channels(
    patches: Tensor, noise: float = 0.01, generator: torch.Generator | None = None
) -> Tensor:
    """Keep one random colour channel per patch and replace the other two by faint noise.

    Doersch et al. (2015, "color dropping"): drop 2 of the 3 channels of each patch and
    replace them with Gaussian noise of standard deviation about 1/100 of the kept channel's, which
    removes any cue from the relative position of the colour channels (chromatic aberration).
    Apply it to zero-mean patches (after :func:`normalize_patches`): the noise has zero mean.

    Args:
        patches: (..., 3, P, P) float, zero mean per channel.
        noise: noise standard deviation relative to the kept channel's.
        generator: source of randomness; None = global RNG of the patches' device.

    Returns:
        (..., 3, P, P) float32.
    """
    with _no_autocast(patches.device):
        x = patches.float()
        lead = x.shape[:-3]
        u = torch.rand((*lead, 1), generator=generator, device=x.device)  # (..., 1)
        keep = torch.floor(u * 3).long().clamp_max(2)  # (..., 1) channel kept
        channels = torch.arange(3, device=x.device)
        mask = (channels == keep)[..., None, None]  # (..., 3, 1, 1), True = kept
        kept = (x * mask).sum(dim=-3, keepdim=True)  # (..., 1, P, P)
        std = kept.std(dim=(-2, -1), keepdim=True, unbiased=False)  # (..., 1, 1, 1)
        filler = torch.randn(x.shape, generator=generator, device=x.device) * (noise * std)
        return torch.where(mask, x, filler)


def project_green_magenta(images: Tensor) -> Tensor:
    """Remove every pixel's component along the green-magenta colour axis.

    Doersch et al. (2015, "projection"): chromatic aberration shifts green relative to
    magenta (red plus blue); projecting colours onto the plane orthogonal to that axis shifts green
    and magenta toward grey. Greys are unchanged.

    Args:
        images: (B, 3, H, W) float in [0, 1] (uint8 is converted).

    Returns:
        (B, 3, H, W) float32 (values may leave [0, 1] slightly).
    """
    _check_images(images)
    with _no_autocast(images.device):
        x = _unit_float(images)
        axis = torch.tensor(GREEN_MAGENTA, device=x.device).view(1, 3, 1, 1)
        return x - (x * axis).sum(dim=1, keepdim=True) * axis


def random_crop(
    images: Tensor,
    padding: int,
    flip_p: float = 0.5,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Random translation of each image by up to ``padding`` pixels, plus a horizontal flip.

    The CIFAR augmentation of Gidaris et al. (2018) and most CIFAR training recipes: zero-pad by
    ``padding`` on every side and crop back to the original size at a random position
    (torchvision's ``RandomCrop(size, padding)``), then flip with probability ``flip_p``.

    Args:
        images: (B, 3, H, W) float in [0, 1] (uint8 is converted).
        padding: zero padding on each side, in pixels.
        flip_p: probability of a horizontal flip.
        generator: source of randomness; None = global RNG of the images' device.

    Returns:
        (B, 3, H, W) float32 in [0, 1].
    """
    _check_images(images)
    n, _, h, w = images.shape
    if h != w:
        raise ValueError(f"random_crop expects square images, got {h}x{w}")
    with _no_autocast(images.device):
        x = _unit_float(images)
        padded = F.pad(x, (padding, padding, padding, padding))  # (B, 3, H + 2p, W + 2p)
        u = _rand(n, x, generator, 3)  # (B, 3): top, left, flip
        top = _randint(0, 2 * padding, u[:, :1])  # (B, 1)
        left = _randint(0, 2 * padding, u[:, 1:2])  # (B, 1)
        out = crop_patches(padded, top, left, h)[:, 0]  # (B, 3, H, W)
        flip = (u[:, 2] < flip_p).view(-1, 1, 1, 1)
        return torch.where(flip, out.flip(-1), out)


def to_gray(images: Tensor, mask: Tensor) -> Tensor:
    """Replace the samples selected by ``mask`` by 3-channel grey (ITU-R 601-2 luma).

    Args:
        images: (B, 3, H, W) float32 in [0, 1].
        mask: (B,) bool, True = make grey.

    Returns:
        (B, 3, H, W) float32.
    """
    return torch.where(mask.view(-1, 1, 1, 1), _gray(images).expand_as(images), images)
