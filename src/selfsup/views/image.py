"""Batched, on-device image augmentation with per-sample random parameters.

Datasets return uint8 images ``(B, 3, H, W)`` of one fixed size; every function here acts on the whole
batch at once on the batch's device (CPU or GPU), drawing one set of random parameters per sample.
No function loops over the batch in Python.

The recipe and its defaults follow SimCLR: Chen et al. 2020, "A Simple Framework for Contrastive
Learning of Visual Representations", appendix A (random resized crop with flip, colour distortion =
colour jitter with p=0.8 plus grayscale with p=0.2, Gaussian blur with p=0.5 and a kernel of 10% of
the image side). Solarisation (BYOL, Grill et al. 2020) is available but off by default.

Every op keeps pixel values in ``[0, 1]`` and computes in float32, also under autocast; only
:func:`to_float` normalises with mean and std. Randomness comes from ``torch.rand(..., generator=g,
device=images.device)``: with ``generator=None`` the global RNG of the images' device is used, so
saving and restoring torch's RNG state reproduces the views.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

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

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

# ITU-R 601-2 luma weights, exactly as torchvision's rgb_to_grayscale (they sum to 0.9999).
_LUMA = (0.2989, 0.587, 0.114)

# Operation ids of colour jitter, in torchvision's ColorJitter order.
_BRIGHTNESS, _CONTRAST, _SATURATION, _HUE = 0, 1, 2, 3
_IDENTITY = 3  # in a slot of linear (blend) ops, id 3 means "do nothing"


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


# --------------------------------------------------------------------------- crop and flip


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


# --------------------------------------------------------------------------- grayscale, blur, solarize


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


def blur_kernel_size(side: int, kernel_frac: float = 0.1) -> int:
    """Odd kernel size of about ``kernel_frac`` of the image side, as SimCLR's code (23 for 224).

    Args:
        side: image side in pixels.
        kernel_frac: fraction of the side.

    Returns:
        ``2 * floor(side * kernel_frac / 2) + 1`` (1 = no blur for sides under 20 at 0.1).
    """
    return 2 * int(side * kernel_frac / 2) + 1


def _gaussian_blur_sigma(x: Tensor, sigma: Tensor, kernel_size: int) -> Tensor:
    """Separable Gaussian blur with per-sample sigma and reflect padding (torchvision semantics).

    Args:
        x: (B, 3, H, W) float32.
        sigma: (B,) standard deviations in pixels; sigma <= 0 gives an exact identity.
        kernel_size: odd number of taps.

    Returns:
        (B, 3, H, W) float32.
    """
    n, c, height, width = x.shape
    half = kernel_size // 2
    if half == 0:
        return x
    t = torch.linspace(-half, half, kernel_size, device=x.device)  # (k,)
    sig = sigma.clamp_min(1e-12).view(-1, 1)  # (B, 1)
    kern = torch.exp(-0.5 * (t / sig) ** 2)  # (B, k); underflows to a delta for tiny sigma
    kern = kern / kern.sum(dim=1, keepdim=True)
    delta = (t == 0).to(kern.dtype).expand_as(kern)
    kern = torch.where((sigma > 0).view(-1, 1), kern, delta)
    kern = kern.repeat_interleave(c, dim=0)  # (B*3, k)
    # Depthwise conv: fold the batch into channels so every (sample, channel) has its own kernel.
    y = x.reshape(1, n * c, height, width)
    y = F.pad(y, (half, half, half, half), mode="reflect")
    y = F.conv2d(y, kern.view(n * c, 1, 1, kernel_size), groups=n * c)  # horizontal
    y = F.conv2d(y, kern.view(n * c, 1, kernel_size, 1), groups=n * c)  # vertical
    return y.view(n, c, height, width)


def gaussian_blur(
    images: Tensor,
    p: float = 0.5,
    kernel_frac: float = 0.1,
    sigma: tuple[float, float] = (0.1, 2.0),
    generator: torch.Generator | None = None,
) -> Tensor:
    """Randomly applied Gaussian blur with per-sample sigma (SimCLR appendix A).

    SimCLR blurs with p=0.5, sigma uniform in [0.1, 2.0] and a kernel of 10% of the image side;
    it omits blur on CIFAR-10. Non-blurred samples get a delta kernel, so they pass unchanged.

    Args:
        images: (B, 3, H, W) float in [0, 1] (uint8 is converted).
        p: probability per sample.
        kernel_frac: kernel size as a fraction of the image height (made odd, see
            :func:`blur_kernel_size`).
        sigma: range of the Gaussian's standard deviation in pixels.
        generator: source of randomness; None = global RNG of the images' device.

    Returns:
        (B, 3, H, W) float32 in [0, 1].
    """
    _check_images(images)
    with _no_autocast(images.device):
        x = _unit_float(images)
        n = x.shape[0]
        u = _rand(n, x, generator, 2)  # (B, 2): apply, sigma
        sig = _uniform(sigma[0], sigma[1], u[:, 1])
        sig = torch.where(u[:, 0] < p, sig, 0.0)  # sigma 0 = identity
        if n == 0:
            return x
        k = blur_kernel_size(x.shape[2], kernel_frac)
        k = min(k, 2 * (min(x.shape[2], x.shape[3]) - 1) + 1)  # reflect padding needs pad < side
        return _gaussian_blur_sigma(x, sig, k).clamp_(0.0, 1.0)


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


# --------------------------------------------------------------------------- composed pipelines


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
