"""Tests of the patch views: grid geometry, exact crops, channel jitter, colour guards, shifts."""

import itertools

import numpy as np
import pytest
import torch

from selfsup.views.patches import (
    GREEN_MAGENTA,
    crop_patches,
    drop_channels,
    grid_positions,
    jitter_channels,
    normalize_patches,
    project_green_magenta,
    random_crop,
    to_gray,
)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------- grid geometry


@pytest.mark.parametrize(
    "size,patch,jitter",
    [(32, 8, None), (32, 7, 1), (16, 4, None), (16, 3, 1), (225, 64, None), (64, 14, 2)],
)
def test_grid_patches_stay_in_their_cells_and_never_overlap(size, patch, jitter):
    n = 200
    top, left = grid_positions(n, size, patch, jitter=jitter, generator=_gen())
    assert top.shape == left.shape == (n, 9) and top.dtype == torch.int64
    cell = size // 3
    assert (top >= 0).all() and (left >= 0).all()
    assert (top + patch <= size).all() and (left + patch <= size).all()
    for b in range(20):
        boxes = list(zip(top[b].tolist(), left[b].tolist(), strict=True))
        # raster order: cell k is in row k // 3, column k % 3 of the grid
        rows = [t - boxes[0][0] for t, _ in boxes]
        cols = [lf - boxes[0][1] for _, lf in boxes]
        for k in range(9):
            assert abs(rows[k] - cell * (k // 3)) <= cell - patch
            assert abs(cols[k] - cell * (k % 3)) <= cell - patch
        for (t1, l1), (t2, l2) in itertools.combinations(boxes, 2):
            disjoint = t1 + patch <= t2 or t2 + patch <= t1 or l1 + patch <= l2 or l2 + patch <= l1
            assert disjoint


def test_grid_offsets_cover_the_cell_or_the_jitter_range():
    n, size, patch = 4000, 30, 6  # cell 10, no spare pixels: the grid starts at (0, 0)
    top, left = grid_positions(n, size, patch, generator=_gen())
    offsets = torch.cat([top % 10, left % 10]).unique().tolist()
    assert offsets == [0, 1, 2, 3, 4]  # anywhere in the cell: 0 .. cell - patch
    top, left = grid_positions(n, size, patch, jitter=1, generator=_gen(1))
    assert torch.cat([top % 10, left % 10]).unique().tolist() == [1, 2, 3]  # centre 2, +-1
    # gaps between horizontal neighbours: cell - patch + (offset difference) in [2, 6]
    gaps = left[:, 1] - (left[:, 0] + patch)
    assert gaps.min() == 2 and gaps.max() == 6


def test_grid_origin_uses_the_spare_pixels():
    top, left = grid_positions(3000, 32, 10, generator=_gen())  # cell 10, patch fills it
    assert torch.cat([top[:, 0], left[:, 0]]).unique().tolist() == [0, 1, 2]


def test_grid_rejects_a_patch_larger_than_the_cell():
    with pytest.raises(ValueError, match="patch_size"):
        grid_positions(2, 32, 11)


# --------------------------------------------------------------------------- crops


def test_crop_patches_copies_the_boxes_exactly():
    g = _gen()
    images = torch.randint(0, 256, (3, 3, 20, 20), generator=g, dtype=torch.uint8)
    top = torch.randint(0, 15, (3, 4), generator=g)
    left = torch.randint(0, 15, (3, 4), generator=g)
    out = crop_patches(images, top, left, 6)
    assert out.shape == (3, 4, 3, 6, 6) and out.dtype == torch.uint8
    for b, k in itertools.product(range(3), range(4)):
        t, lf = int(top[b, k]), int(left[b, k])
        assert torch.equal(out[b, k], images[b, :, t : t + 6, lf : lf + 6])


def test_crop_patches_with_one_position_per_channel():
    g = _gen(1)
    images = torch.rand(2, 3, 12, 12, generator=g)
    top = torch.randint(0, 8, (2, 5, 3), generator=g)
    left = torch.randint(0, 8, (2, 5, 3), generator=g)
    out = crop_patches(images, top, left, 4)
    for b, k, c in itertools.product(range(2), range(5), range(3)):
        t, lf = int(top[b, k, c]), int(left[b, k, c])
        assert torch.equal(out[b, k, c], images[b, c, t : t + 4, lf : lf + 4])


def test_jitter_channels_shifts_each_channel_within_range_and_image():
    top = torch.full((500, 9), 5)
    left = torch.tensor([0, 5, 12] * 3).expand(500, 9)  # first and last columns are clamped
    t, lf = jitter_channels(top, left, 2, image_size=16, size=4, generator=_gen())
    assert t.shape == (500, 9, 3)
    assert set((t - 5).unique().tolist()) == {-2, -1, 0, 1, 2}
    assert (lf >= 0).all() and (lf <= 12).all()
    assert set(lf[:, 1].unique().tolist()) == {3, 4, 5, 6, 7}
    assert (t[..., 0] != t[..., 1]).any()  # channels move independently


# --------------------------------------------------------------------------- colour guards


def test_normalize_patches_matches_numpy():
    x = torch.rand(2, 9, 3, 5, 5, generator=_gen()) * 3 + 1
    x[0, 0] = 0.7  # flat patch -> zeros, not NaN
    out = normalize_patches(x).numpy()
    a = x.double().numpy()
    for b, k in itertools.product(range(2), range(9)):
        p = a[b, k]
        centred = p - p.mean(axis=(1, 2), keepdims=True)
        rms = np.sqrt((centred**2).mean())
        ref = centred / rms if rms > 1e-5 else np.zeros_like(p)
        np.testing.assert_allclose(out[b, k], ref, atol=1e-5)


def test_drop_channels_keeps_exactly_one_channel_and_faint_noise():
    x = normalize_patches(torch.rand(300, 3, 16, 16, generator=_gen()))
    out = drop_channels(x, noise=0.01, generator=_gen(1))
    kept_count = torch.zeros(3)
    for b in range(300):
        same = [torch.equal(out[b, c], x[b, c]) for c in range(3)]
        assert sum(same) == 1
        c = same.index(True)
        kept_count[c] += 1
        kept_std = float(x[b, c].std(unbiased=False))
        for d in set(range(3)) - {c}:
            ratio = float(out[b, d].std()) / kept_std
            assert 0.006 < ratio < 0.014  # 1/100 of the kept channel, 256 samples
            assert abs(float(out[b, d].mean())) < 0.005 * kept_std
    assert (kept_count > 70).all()  # each channel kept about a third of the time


def test_green_magenta_projection_matches_the_projector():
    x = torch.rand(2, 3, 4, 4, generator=_gen())
    a = np.array(GREEN_MAGENTA)
    projector = np.eye(3) - np.outer(a, a)  # I - a a^T
    ref = np.einsum("ij,bjhw->bihw", projector, x.double().numpy())  # i, j: colour channels
    out = project_green_magenta(x)
    np.testing.assert_allclose(out.numpy(), ref, atol=1e-6)
    assert float((out * torch.tensor(a).view(1, 3, 1, 1)).sum(dim=1).abs().max()) < 1e-6
    gray = torch.full((1, 3, 2, 2), 0.4)
    assert torch.allclose(project_green_magenta(gray), gray)
    green = torch.tensor([0.0, 1.0, 0.0]).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    assert torch.allclose(project_green_magenta(green), torch.full((1, 3, 2, 2), 1 / 3))


def test_to_gray_only_changes_the_selected_samples():
    x = torch.rand(2, 3, 4, 4, generator=_gen())
    out = to_gray(x, torch.tensor([True, False]))
    luma = 0.2989 * x[0, 0] + 0.587 * x[0, 1] + 0.114 * x[0, 2]
    assert torch.allclose(out[0], luma.expand(3, 4, 4)) and torch.equal(out[1], x[1])


# --------------------------------------------------------------------------- translation


def test_random_crop_is_a_translated_possibly_flipped_window():
    images = torch.randint(1, 256, (16, 3, 8, 8), generator=_gen(), dtype=torch.uint8)
    out = random_crop(images, padding=2, generator=_gen(1))
    padded = torch.nn.functional.pad(images.float() / 255, (2, 2, 2, 2))
    seen = set()
    for b in range(16):
        matches = [
            (dy, dx, flip)
            for dy, dx, flip in itertools.product(range(5), range(5), (False, True))
            if torch.equal(
                out[b],
                padded[b, :, dy : dy + 8, dx : dx + 8].flip(-1)
                if flip
                else padded[b, :, dy : dy + 8, dx : dx + 8],
            )
        ]
        assert matches, f"sample {b} is not a window of the padded image"
        seen.update(matches)
    assert len({m[:2] for m in seen}) > 5 and {m[2] for m in seen} == {False, True}
    assert torch.equal(random_crop(images, 0, flip_p=0.0), images.float() / 255)
