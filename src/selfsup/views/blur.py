"""Randomly applied Gaussian blur with per-sample sigma (SimCLR appendix A)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from selfsup.views.common import _check_images, _no_autocast, _rand, _uniform, _unit_float

__all__ = ["blur_kernel_size", "gaussian_blur"]


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
