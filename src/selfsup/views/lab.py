"""CIE Lab colour space on the device, and the quantised ab grid of colourisation.

sRGB (IEC 61966-2-1, D65 white) -> linear RGB -> CIE XYZ -> CIE L*a*b*, and back. The constants are
the standard ones (the sRGB primaries' matrix and the D65 reference white Xn = 0.95047, Yn = 1,
Zn = 1.08883), with which sRGB red is Lab (53.24, 80.09, 67.20), white (100, 0, 0), black (0, 0, 0).

The ab grid follows Zhang, Isola, Efros 2016, "Colorful Image Colorization" (section 2.1): the ab
plane is quantised into bins of side 10 centred on multiples of 10, and only the bins that a
displayable colour can reach are kept (the paper keeps the 313 bins seen in ImageNet). Here the set
is computed once: the sRGB cube's surface, sampled on a 384 x 384 grid per face, is converted to
Lab and every sample is rounded to its bin. The surface suffices because the projection of the
gamut solid onto the ab plane is the projection of its boundary; finer sampling adds no bin. With
grid 10 this gives Q = 262 bins, fewer than the paper's 313 (its own in-gamut estimate).

Every function computes in float32 with autocast disabled: the cube root and the 2.4 power lose
too much in bfloat16.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from selfsup.views.common import _no_autocast

__all__ = ["ab_bins", "lab_to_rgb", "nearest_bins", "rgb_to_lab", "soft_encode"]

# Linear sRGB -> XYZ (D65), rows X, Y, Z.
_RGB_TO_XYZ = (
    (0.4124564, 0.3575761, 0.1804375),
    (0.2126729, 0.7151522, 0.0721750),
    (0.0193339, 0.1191920, 0.9503041),
)
_WHITE_D65 = (0.95047, 1.0, 1.08883)
_DELTA = 6.0 / 29.0  # the knee of the Lab companding function f
# Samples per edge of each cube face; 256 misses one bin that a corner of the gamut just enters.
_SAMPLES = 384


def _matrix(rows: tuple[tuple[float, ...], ...], x: Tensor) -> Tensor:
    return torch.tensor(rows, dtype=torch.float32, device=x.device)


def rgb_to_lab(rgb: Tensor) -> Tensor:
    """Convert sRGB images to CIE Lab.

    Args:
        rgb: (B, 3, H, W) sRGB in [0, 1] (uint8 in [0, 255] is scaled).

    Returns:
        (B, 3, H, W) float32: L in [0, 100], a and b roughly in [-110, 110].
    """
    with _no_autocast(rgb.device):
        x = rgb.float() / 255.0 if rgb.dtype == torch.uint8 else rgb.float()
        linear = torch.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055).pow(2.4))
        xyz = torch.einsum("kc,bchw->bkhw", _matrix(_RGB_TO_XYZ, x), linear)  # k: X, Y, Z
        white = torch.tensor(_WHITE_D65, device=x.device).view(1, 3, 1, 1)
        t = xyz / white
        f = torch.where(t > _DELTA**3, t.clamp_min(1e-12).pow(1 / 3), t / (3 * _DELTA**2) + 4 / 29)
        fx, fy, fz = f.unbind(dim=1)  # (B, H, W) each
        return torch.stack((116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)), dim=1)


def lab_to_rgb(lab: Tensor, clamp: bool = True) -> Tensor:
    """Convert CIE Lab images to sRGB, the inverse of :func:`rgb_to_lab`.

    Args:
        lab: (B, 3, H, W) L, a, b.
        clamp: clip the result to [0, 1] (Lab values outside the sRGB gamut leave it).

    Returns:
        (B, 3, H, W) float32 sRGB.
    """
    with _no_autocast(lab.device):
        lab = lab.float()
        light, a, b = lab.unbind(dim=1)  # (B, H, W) each
        fy = (light + 16) / 116
        f = torch.stack((fy + a / 500, fy, fy - b / 200), dim=1)  # (B, 3, H, W) fx, fy, fz
        t = torch.where(f > _DELTA, f.pow(3), 3 * _DELTA**2 * (f - 4 / 29))
        xyz = t * torch.tensor(_WHITE_D65, device=lab.device).view(1, 3, 1, 1)
        to_rgb = torch.linalg.inv(_matrix(_RGB_TO_XYZ, lab).double()).float()
        linear = torch.einsum("ck,bkhw->bchw", to_rgb, xyz)  # c: R, G, B; k: X, Y, Z
        rgb = torch.where(
            linear <= 0.0031308,
            12.92 * linear,
            1.055 * linear.clamp_min(0.0031308).pow(1 / 2.4) - 0.055,
        )
        return rgb.clamp(0.0, 1.0) if clamp else rgb


@functools.lru_cache(maxsize=4)
def _gamut_bins(grid: int) -> Tensor:
    levels = torch.linspace(0.0, 1.0, _SAMPLES)
    u, v = torch.meshgrid(levels, levels, indexing="ij")  # (n, n) each
    u, v = u.reshape(-1), v.reshape(-1)  # (n^2,)
    faces = []
    for channel in range(3):  # the six faces of the cube: one channel fixed at 0 or 1
        for value in (0.0, 1.0):
            free = [u, v]
            face = [free.pop(0) if c != channel else torch.full_like(u, value) for c in range(3)]
            faces.append(torch.stack(face))  # (3, n^2)
    rgb = torch.cat(faces, dim=1)[None, :, :, None]  # (1, 3, N, 1)
    ab = rgb_to_lab(rgb)[0, 1:, :, 0].T  # (N, 2)
    cells = torch.unique(torch.round(ab / grid).long(), dim=0)  # (Q, 2), sorted by a then b
    return cells.float() * grid


def ab_bins(grid: int = 10, device: torch.device | str | None = None) -> Tensor:
    """Centres of the quantised ab bins reachable by sRGB colours.

    Args:
        grid: bin side in ab units (10 in the paper).
        device: where to put the result.

    Returns:
        (Q, 2) float32 bin centres (a, b), multiples of ``grid``, sorted by a then b; Q = 262 for
        ``grid=10``.
    """
    return _gamut_bins(grid).to(device, copy=True)  # a copy: callers may not edit the cache


def nearest_bins(ab: Tensor, centres: Tensor, k: int = 1) -> tuple[Tensor, Tensor]:
    """The ``k`` bin centres nearest to each ab value.

    Args:
        ab: (N, 2) ab values.
        centres: (Q, 2) bin centres.
        k: number of neighbours.

    Returns:
        ``(distances, indices)``, each (N, k), nearest first; distances are Euclidean.
    """
    with _no_autocast(ab.device):
        dist = torch.cdist(ab.float(), centres.float())  # (N, Q)
        values, indices = dist.topk(k, dim=1, largest=False)  # (N, k) each
        return values, indices


def soft_encode(ab: Tensor, centres: Tensor, neighbours: int = 5, sigma: float = 5.0) -> Tensor:
    """Soft-encode ab values on the bin grid (Zhang et al. 2016, section 2.1).

    Each value spreads over its ``neighbours`` nearest bins with weights proportional to a Gaussian
    of the distance, ``exp(-d^2 / (2 sigma^2))``; the other bins get 0.

    Args:
        ab: (N, 2) ab values.
        centres: (Q, 2) bin centres.
        neighbours: bins per value (5 in the paper).
        sigma: Gaussian width in ab units (5 in the paper).

    Returns:
        (N, Q) float32 rows summing to 1.
    """
    with _no_autocast(ab.device):
        dist, index = nearest_bins(ab, centres, neighbours)  # (N, k) each
        weight = torch.softmax(-dist.pow(2) / (2 * sigma**2), dim=1)  # (N, k), normalised Gaussian
        out = torch.zeros(ab.shape[0], centres.shape[0], device=ab.device)  # (N, Q)
        return out.scatter_(1, index, weight)
