"""Colour ops: colour jitter (with the HSV hue helpers), random grayscale and solarisation."""

from __future__ import annotations

import torch
from torch import Tensor

from selfsup.views.common import (
    _check_images,
    _gray,
    _no_autocast,
    _rand,
    _uniform,
    _unit_float,
)

__all__ = ["color_jitter", "random_grayscale", "solarize"]

# Operation ids of colour jitter, in torchvision's ColorJitter order.
_BRIGHTNESS, _CONTRAST, _SATURATION, _HUE = 0, 1, 2, 3
_IDENTITY = 3  # in a slot of linear (blend) ops, id 3 means "do nothing"


# --------------------------------------------------------------------------- colour jitter


def _blend(x: Tensor, kind: Tensor, factor: Tensor) -> Tensor:
    """One brightness / contrast / saturation step, chosen per sample.

    All three are torchvision's ``_blend(img, target, f) = clamp(f * img + (1 - f) * target)`` with
    target 0 (brightness), the image's mean luma (contrast) or its per-pixel luma (saturation).

    Args:
        x: (B, 3, H, W) float32 in [0, 1].
        kind: (B,) long in {_BRIGHTNESS, _CONTRAST, _SATURATION, _IDENTITY}.
        factor: (B,) float32; ignored (treated as 1) where kind is _IDENTITY.

    Returns:
        (B, 3, H, W) float32 in [0, 1].
    """
    gray = _gray(x)  # (B, 1, H, W)
    mean = gray.mean(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
    k = kind.view(-1, 1, 1, 1)
    target = torch.where(k == _SATURATION, gray, torch.where(k == _CONTRAST, mean, 0.0))
    f = torch.where(kind == _IDENTITY, 1.0, factor).view(-1, 1, 1, 1)
    return torch.addcmul(target * (1.0 - f), x, f).clamp_(0.0, 1.0)


# Hue, in sixths of a turn, at which each of r, g, b is the pixel's minimum channel: their
# complements cyan (3), magenta (5) and yellow (1). See _hue_shift.
_HUE_CENTRES = (3.0, 5.0, 1.0)


def _hue_shift(x: Tensor, shift: Tensor) -> Tensor:
    """Rotate hue per sample, as torchvision's ``adjust_hue`` (RGB -> HSV, h += shift, HSV -> RGB).

    A hue rotation keeps every pixel's max and min channel (HSV value and chroma), so only the hue
    ``H = 6h`` in [0, 6) is computed, with torchvision's ``_rgb2hsv`` formulas and tie-breaking.
    HSV -> RGB is then the closed form ``c = max - (max - min) * clamp(2 - d_c, 0, 1)``, with d_c the
    circular distance of H from the channel's centre (3, 5, 1 for r, g, b); this equals
    torchvision's sector table (``_hsv2rgb``) without its one-hot gather or per-channel modulo.

    Args:
        x: (B, 3, H, W) float32 in [0, 1].
        shift: (B,) hue shift in [-0.5, 0.5] (fraction of a turn).

    Returns:
        (B, 3, H, W) float32 in [0, 1].
    """
    r, g, b = x.unbind(dim=1)  # (B, H, W) each
    maxc, minc = x.amax(dim=1), x.amin(dim=1)  # (B, H, W); faster than aminmax / max on CPU
    chroma = maxc - minc
    # Which channel is the max, first one winning ties; float masks because arithmetic on them is
    # several times faster than torch.where with a full-size condition on CPU.
    is_r = maxc == r
    is_g = (maxc == g) & ~is_r
    is_b = (~(is_r | is_g)).float()
    is_r, is_g = is_r.float(), is_g.float()
    num = (g - b) * is_r + (b - r) * is_g + (r - g) * is_b  # (B, H, W)
    sector = 2.0 * is_g + 4.0 * is_b
    divisor = chroma + (chroma == 0).float()  # gray pixels: num = 0, hue 0, output = max
    hue6 = num / divisor + sector + 6.0 * shift.view(-1, 1, 1)  # 6 * hue, plus the shift
    hue6 = torch.remainder(hue6, 6.0).unsqueeze(1)  # (B, 1, H, W) in [0, 6)
    centres = torch.tensor(_HUE_CENTRES, device=x.device).view(1, 3, 1, 1)
    dist = (hue6 - centres).abs_()  # (B, 3, H, W)
    dist = torch.minimum(dist, 6.0 - dist)  # circular distance on the wheel
    weight = (2.0 - dist).clamp_(0.0, 1.0)
    return torch.addcmul(maxc.unsqueeze(1), chroma.unsqueeze(1), weight, value=-1.0)


def _adjust_brightness(x: Tensor, factor: Tensor) -> Tensor:
    """x: (B, 3, H, W) in [0, 1], factor: (B,) -> (B, 3, H, W); torchvision's adjust_brightness."""
    return _blend(x, torch.full_like(factor, _BRIGHTNESS, dtype=torch.long), factor)


def _adjust_contrast(x: Tensor, factor: Tensor) -> Tensor:
    """x: (B, 3, H, W) in [0, 1], factor: (B,) -> (B, 3, H, W); torchvision's adjust_contrast."""
    return _blend(x, torch.full_like(factor, _CONTRAST, dtype=torch.long), factor)


def _adjust_saturation(x: Tensor, factor: Tensor) -> Tensor:
    """x: (B, 3, H, W) in [0, 1], factor: (B,) -> (B, 3, H, W); torchvision's adjust_saturation."""
    return _blend(x, torch.full_like(factor, _SATURATION, dtype=torch.long), factor)


def _adjust_hue(x: Tensor, factor: Tensor) -> Tensor:
    """x: (B, 3, H, W) in [0, 1], factor: (B,) -> (B, 3, H, W); torchvision's adjust_hue."""
    return _hue_shift(x, factor)


def _jitter_with(x: Tensor, factors: Tensor, order: Tensor, with_hue: bool = True) -> Tensor:
    """Apply the four colour ops with given per-sample factors in a given per-sample order.

    The order is vectorised by putting hue, the one non-linear op, in a fixed middle slot and the
    three blend ops in three slots before and three after it (unused slots are exact identities):
    a sample whose hue comes at position p runs its first p ops before and the rest after. This costs
    6 cheap blends + 1 hue instead of 3 + 1, and no per-order gather or host synchronisation.

    Args:
        x: (B, 3, H, W) float32 in [0, 1].
        factors: (B, 4) brightness, contrast, saturation factors and hue shift; identity values
            are (1, 1, 1, 0).
        order: (B, 4) long, a permutation of (0, 1, 2, 3) per sample: op ids in application order.
        with_hue: False skips the hue op (and its HSV round trip) altogether.

    Returns:
        (B, 3, H, W) float32 in [0, 1].
    """
    n = x.shape[0]
    if with_hue:
        pos = torch.arange(4, device=x.device).expand(n, 4)  # (B, 4)
        p_hue = (order == _HUE).to(torch.long).argmax(dim=1, keepdim=True)  # (B, 1)
        # Slot of each op in the fixed schedule [blend, blend, blend, hue, blend, blend, blend].
        slot = torch.where(pos < p_hue, pos, torch.where(pos == p_hue, 3, 3 + pos - p_hue))
        kinds = torch.full((n, 7), _IDENTITY, dtype=torch.long, device=x.device)
        kinds.scatter_(1, slot, order)  # (B, 7); column 3 is _HUE for every sample
    else:
        kinds = order  # (B, 4); hue (id 3) doubles as _IDENTITY
    for s in range(kinds.shape[1]):
        if with_hue and s == 3:
            x = _hue_shift(x, factors[:, _HUE])
            continue
        kind = kinds[:, s]  # (B,)
        factor = factors.gather(1, kind.clamp_max(2).unsqueeze(1)).squeeze(1)  # (B,)
        x = _blend(x, kind, factor)
    return x


def color_jitter(
    images: Tensor,
    brightness: float = 0.4,
    contrast: float = 0.4,
    saturation: float = 0.4,
    hue: float = 0.1,
    p: float = 0.8,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Randomly applied colour jitter with per-sample factors and per-sample random op order.

    Matches torchvision's ``RandomApply([ColorJitter(b, c, s, h)], p)``: factors uniform in
    ``[max(0, 1 - b), 1 + b]`` (likewise c, s) and hue shift uniform in ``[-h, h]``; the four
    functional ops (brightness, contrast with the image's mean luma, saturation, hue via HSV) are
    applied in a random order drawn independently for each sample. SimCLR appendix A uses
    ``(0.8s, 0.8s, 0.8s, 0.2s)`` with strength s=1 and p=0.8.

    Args:
        images: (B, 3, H, W) float in [0, 1] (uint8 is converted).
        brightness: maximal relative brightness change.
        contrast: maximal relative contrast change.
        saturation: maximal relative saturation change.
        hue: maximal hue shift, in [0, 0.5].
        p: probability that a sample is jittered at all.
        generator: source of randomness; None = global RNG of the images' device.

    Returns:
        (B, 3, H, W) float32 in [0, 1].
    """
    _check_images(images)
    if not 0.0 <= hue <= 0.5:
        raise ValueError(f"hue must be in [0, 0.5], got {hue}")
    with _no_autocast(images.device):
        x = _unit_float(images)
        n = x.shape[0]
        u = _rand(n, x, generator, 5)  # (B, 5): 4 factors, apply
        factors = torch.stack(
            (
                _uniform(max(0.0, 1 - brightness), 1 + brightness, u[:, 0]),
                _uniform(max(0.0, 1 - contrast), 1 + contrast, u[:, 1]),
                _uniform(max(0.0, 1 - saturation), 1 + saturation, u[:, 2]),
                _uniform(-hue, hue, u[:, 3]),
            ),
            dim=1,
        )  # (B, 4)
        apply = u[:, 4] < p  # (B,)
        order = _rand(n, x, generator, 4).argsort(dim=1)  # (B, 4) random permutation per sample
        out = _jitter_with(x, factors, order, with_hue=hue > 0)
        return torch.where(apply.view(-1, 1, 1, 1), out, x)


# --------------------------------------------------------------------------- grayscale, solarize


def random_grayscale(
    images: Tensor, p: float = 0.2, generator: torch.Generator | None = None
) -> Tensor:
    """Convert a random subset of samples to 3-channel grayscale (ITU-R 601-2 luma, as torchvision).

    Args:
        images: (B, 3, H, W) float in [0, 1] (uint8 is converted).
        p: probability per sample.
        generator: source of randomness; None = global RNG of the images' device.

    Returns:
        (B, 3, H, W) float32 in [0, 1].
    """
    _check_images(images)
    with _no_autocast(images.device):
        x = _unit_float(images)
        apply = (_rand(x.shape[0], x, generator) < p).view(-1, 1, 1, 1)
        return torch.where(apply, _gray(x).expand_as(x), x)


def solarize(
    images: Tensor,
    p: float = 0.0,
    threshold: float = 0.5,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Randomly solarise samples: invert pixels at or above ``threshold`` (torchvision semantics).

    Args:
        images: (B, 3, H, W) float in [0, 1] (uint8 is converted).
        p: probability per sample (BYOL uses 0.0 / 0.2 for its two views).
        threshold: pixels ``>= threshold`` become ``1 - x``.
        generator: source of randomness; None = global RNG of the images' device.

    Returns:
        (B, 3, H, W) float32 in [0, 1].
    """
    _check_images(images)
    with _no_autocast(images.device):
        x = _unit_float(images)
        apply = (_rand(x.shape[0], x, generator) < p).view(-1, 1, 1, 1)
        return torch.where(apply & (x >= threshold), 1.0 - x, x)
