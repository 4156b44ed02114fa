"""Masks for masked-prediction methods: random patch subsets (MAE) and pixel regions (inpainting).

Polarity everywhere: ``True`` (or 1) = masked, i.e. removed from the input and predicted.

Patch masking follows He et al. 2022, "Masked Autoencoders Are Scalable Vision Learners", section
3: per sample, draw uniform noise for each of the L patches, sort it, keep the patches with the
smallest noise and mask the rest; the sort's inverse permutation puts the decoder's tokens back in
image order. Region masks follow Pathak et al. 2016, "Context Encoders: Feature Learning by
Inpainting", section 3.3: a central square, or random blocks covering up to a quarter of the image.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["PatchMask", "center_mask", "random_block_mask", "random_patch_mask", "shrink_mask"]


class PatchMask(NamedTuple):
    """A per-sample random subset of patches.

    Attributes:
        keep: (B, K) indices of the visible patches, in the shuffled order.
        mask: (B, L) bool, True = masked (removed from the encoder's input, predicted).
        restore: (B, L) permutation that undoes the shuffle: ``shuffled.gather(1, restore)`` is in
            image order when ``shuffled`` lists the visible patches then the masked ones.
    """

    keep: Tensor
    mask: Tensor
    restore: Tensor


def random_patch_mask(
    batch: int,
    length: int,
    ratio: float,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> PatchMask:
    """Mask exactly ``round(ratio * length)`` patches of each sample, chosen uniformly at random.

    Args:
        batch: number of samples B.
        length: patches per sample L.
        ratio: fraction of patches to mask, in [0, 1); at least one patch stays visible.
        device: where to draw the noise.
        generator: source of randomness; None = the device's global RNG.

    Returns:
        A :class:`PatchMask` with K = L - round(ratio * L) visible patches per sample.
    """
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"mask ratio must be in [0, 1), got {ratio}")
    num_keep = length - int(round(ratio * length))
    if num_keep < 1:
        raise ValueError(f"mask ratio {ratio} leaves no visible patch out of {length}")
    noise = torch.rand(batch, length, device=device, generator=generator)  # (B, L)
    shuffle = noise.argsort(dim=1)  # (B, L): ascending noise, the first K are kept
    restore = shuffle.argsort(dim=1)  # (B, L): inverse permutation
    shuffled_mask = torch.arange(length, device=noise.device).expand(batch, length) >= num_keep
    mask = shuffled_mask.gather(1, restore)  # (B, L) in image order
    return PatchMask(keep=shuffle[:, :num_keep], mask=mask, restore=restore)


def center_mask(batch: int, size: int, device: torch.device | str | None = None) -> Tensor:
    """The central square of side ``size // 2`` (a quarter of the area), Pathak et al.'s default.

    Returns:
        (B, 1, size, size) bool, True = masked.
    """
    side = size // 2
    start = (size - side) // 2
    mask = torch.zeros(batch, 1, size, size, dtype=torch.bool, device=device)
    mask[:, :, start : start + side, start : start + side] = True
    return mask


def random_block_mask(
    batch: int,
    size: int,
    block: int | None = None,
    coverage: float = 0.25,
    candidates: int = 16,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Possibly overlapping square blocks at random places, covering up to ``coverage``.

    Per sample, ``candidates`` blocks are drawn and the longest prefix of them whose union covers
    at most ``coverage`` of the image is masked (always at least one block).

    Args:
        batch: number of samples B.
        size: image side S.
        block: block side; None = ``size // 4`` (four disjoint blocks cover a quarter).
        coverage: largest masked fraction of the image.
        candidates: blocks drawn per sample.
        device: where to draw.
        generator: source of randomness; None = the device's global RNG.

    Returns:
        (B, 1, S, S) bool, True = masked.
    """
    block = max(1, size // 4) if block is None else block
    if not 0 < block <= size:
        raise ValueError(f"block side must be in [1, {size}], got {block}")
    corner = torch.rand(batch, candidates, 2, device=device, generator=generator)  # (B, M, 2)
    corner = (corner * (size - block + 1)).floor().clamp_max(size - block)  # (B, M, 2) top, left
    pix = torch.arange(size, device=corner.device, dtype=corner.dtype)  # (S,)
    rows = (pix >= corner[..., :1]) & (pix < corner[..., :1] + block)  # (B, M, S)
    cols = (pix >= corner[..., 1:]) & (pix < corner[..., 1:] + block)  # (B, M, S)
    blocks = rows[..., :, None] & cols[..., None, :]  # (B, M, S, S)
    unions = blocks.cummax(dim=1).values  # (B, M, S, S): union of the first m + 1 blocks
    covered = unions.flatten(2).float().mean(dim=2)  # (B, M), non-decreasing in m
    count = (covered <= coverage + 1e-9).sum(dim=1).clamp_min(1)  # (B,) blocks to use
    index = (count - 1).view(batch, 1, 1, 1).expand(batch, 1, size, size)
    return unions.gather(1, index)  # (B, 1, S, S)


def shrink_mask(mask: Tensor, pixels: int) -> Tensor:
    """Erode a region mask by ``pixels`` on every side that borders visible pixels.

    Sides on the image border are not eroded (there is no context beyond the image).

    Args:
        mask: (B, 1, H, W) bool, True = masked.
        pixels: erosion radius (0 returns the mask unchanged).

    Returns:
        (B, 1, H, W) bool, a subset of ``mask``.
    """
    if pixels <= 0:
        return mask
    visible = (~mask).float()
    near_visible = F.max_pool2d(visible, 2 * pixels + 1, stride=1, padding=pixels)  # square window
    return mask & (near_visible == 0)
