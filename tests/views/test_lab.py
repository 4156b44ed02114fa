"""CIE Lab conversion and the ab bins, against hand-written per-pixel formulas and known values."""

import numpy as np
import pytest
import torch

from selfsup.views.lab import ab_bins, lab_to_rgb, nearest_bins, rgb_to_lab, soft_encode


def _pixels(colours):
    """[(r, g, b), ...] in [0, 1] -> (1, 3, N, 1)."""
    return torch.tensor(colours, dtype=torch.float32).T[None, :, :, None]


def _lab_reference(rgb):
    """One colour at a time, straight from the sRGB and CIE definitions (float64)."""
    m = np.array(
        [
            [0.4124564, 0.3575761, 0.1804375],
            [0.2126729, 0.7151522, 0.0721750],
            [0.0193339, 0.1191920, 0.9503041],
        ]
    )
    white = np.array([0.95047, 1.0, 1.08883])
    out = []
    for colour in rgb:
        lin = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in colour]
        xyz = m.dot(lin) / white
        f = [t ** (1 / 3) if t > (6 / 29) ** 3 else t * (29 / 6) ** 2 / 3 + 4 / 29 for t in xyz]
        out.append([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])
    return np.array(out)


@pytest.mark.parametrize(
    "rgb, lab",
    [
        ((1.0, 1.0, 1.0), (100.0, 0.0, 0.0)),
        ((0.0, 0.0, 0.0), (0.0, 0.0, 0.0)),
        ((1.0, 0.0, 0.0), (53.24, 80.09, 67.20)),
        ((0.0, 1.0, 0.0), (87.73, -86.18, 83.18)),
        ((0.0, 0.0, 1.0), (32.30, 79.19, -107.86)),
    ],
)
def test_known_colours(rgb, lab):
    got = rgb_to_lab(_pixels([rgb]))[0, :, 0, 0]
    assert torch.allclose(got, torch.tensor(lab), atol=0.01)


def test_matches_per_pixel_formula_and_uint8_input():
    g = torch.Generator().manual_seed(0)
    rgb = torch.rand(1, 3, 200, 1, generator=g)
    rgb[0, :, :20] = torch.rand(3, 20, 1, generator=g) * 0.03  # the linear segment near black
    expected = _lab_reference(rgb[0, :, :, 0].T.double().numpy())
    got = rgb_to_lab(rgb)[0, :, :, 0].T.double().numpy()
    np.testing.assert_allclose(got, expected, atol=2e-3)
    u8 = torch.randint(0, 256, (2, 3, 4, 4), generator=g, dtype=torch.uint8)
    assert torch.allclose(rgb_to_lab(u8), rgb_to_lab(u8.float() / 255))


def test_round_trip_and_bf16_autocast():
    rgb = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        lab = rgb_to_lab(rgb)
        back = lab_to_rgb(lab)
    assert lab.dtype == torch.float32 and back.dtype == torch.float32
    assert torch.allclose(back, rgb, atol=1e-4)
    out_of_gamut = torch.tensor([50.0, 120.0, -120.0]).view(1, 3, 1, 1)
    assert lab_to_rgb(out_of_gamut).min() >= 0 and lab_to_rgb(out_of_gamut).max() <= 1


def test_ab_bins_are_the_sRGB_gamut_on_a_grid_of_10():
    bins = ab_bins()
    assert bins.shape == (262, 2)
    assert torch.equal(bins, torch.round(bins / 10) * 10)
    assert len({tuple(b) for b in bins.tolist()}) == 262
    # every random displayable colour falls in a kept bin
    rgb = torch.rand(1, 3, 100_000, 1, generator=torch.Generator().manual_seed(2))
    ab = rgb_to_lab(rgb)[0, 1:, :, 0].T
    reached = {tuple(c) for c in (torch.round(ab / 10) * 10).tolist()}
    assert reached <= {tuple(b) for b in bins.tolist()}
    assert (0.0, 0.0) in reached and len(reached) > 200
    bins[0] = 1e6  # callers get a copy
    assert ab_bins()[0, 0] != 1e6


def test_nearest_bins_and_soft_encoding_against_a_loop():
    centres = ab_bins()
    g = torch.Generator().manual_seed(3)
    ab = torch.rand(50, 2, generator=g) * 160 - 80
    dist, index = nearest_bins(ab, centres, k=5)
    z = soft_encode(ab, centres, neighbours=5, sigma=5.0)
    assert torch.allclose(z.sum(dim=1), torch.ones(50))
    assert ((z > 0).sum(dim=1) == 5).all()
    c = centres.double().numpy()
    for n, point in enumerate(ab.double().numpy()):
        d = np.sqrt(((c - point) ** 2).sum(axis=1))
        order = np.argsort(d)[:5]
        np.testing.assert_allclose(dist[n].numpy(), d[order], rtol=1e-4)
        w = np.exp(-(d[order] ** 2) / (2 * 5.0**2))
        expected = np.zeros(len(c))
        expected[order] = w / w.sum()
        np.testing.assert_allclose(z[n].double().numpy(), expected, atol=1e-5)


def test_soft_encoding_peaks_at_the_bin_of_a_centre():
    centres = ab_bins()
    z = soft_encode(centres[:10], centres)
    assert torch.equal(z.argmax(dim=1), torch.arange(10))
