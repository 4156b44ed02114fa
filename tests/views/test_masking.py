"""Patch and region masks: counts, polarity, inverse permutations, geometry."""

import pytest
import torch

from selfsup.views.masking import center_mask, random_block_mask, random_patch_mask, shrink_mask


@pytest.mark.parametrize("length", [16, 49, 64])
def test_patch_mask_counts_polarity_and_inverse(length):
    b = 6
    m = random_patch_mask(b, length, 0.75, generator=torch.Generator().manual_seed(0))
    n_masked = round(0.75 * length)
    assert m.mask.dtype == torch.bool and m.mask.shape == (b, length)
    assert (m.mask.sum(dim=1) == n_masked).all()
    assert m.keep.shape == (b, length - n_masked)
    k = length - n_masked
    for i in range(b):
        visible = set(torch.nonzero(~m.mask[i]).flatten().tolist())
        assert set(m.keep[i].tolist()) == visible  # True = masked: kept ones are the False ones
    # restore is a permutation; it sends visible positions to the first K slots (the encoded
    # tokens, restore[keep[j]] == j) and masked positions to the mask-token slots K..L-1
    assert torch.equal(m.restore.sort(dim=1).values, torch.arange(length).expand(b, length))
    assert torch.equal(m.restore.gather(1, m.keep), torch.arange(k).expand(b, k))
    assert (m.restore[m.mask] >= k).all() and (m.restore[~m.mask] < k).all()
    assert not torch.equal(m.mask[0], m.mask[1])


def test_patch_mask_is_uniform_over_positions():
    m = random_patch_mask(4000, 16, 0.75, generator=torch.Generator().manual_seed(1))
    freq = m.mask.float().mean(dim=0)
    assert torch.allclose(freq, torch.full((16,), 0.75), atol=0.03)


def test_patch_mask_rejects_bad_ratios():
    for ratio in (-0.1, 1.0):
        with pytest.raises(ValueError, match="ratio"):
            random_patch_mask(2, 16, ratio)
    with pytest.raises(ValueError, match="no visible"):
        random_patch_mask(2, 4, 0.9)


def test_center_mask_is_the_central_quarter():
    m = center_mask(2, 16)
    assert m.shape == (2, 1, 16, 16) and m.dtype == torch.bool
    assert m.float().mean() == 0.25
    assert m[0, 0, 4:12, 4:12].all() and not m[0, 0, :4].any() and not m[0, 0, :, 12:].any()


def test_random_blocks_cover_at_most_a_quarter_and_are_blocks():
    g = torch.Generator().manual_seed(2)
    m = random_block_mask(64, 32, generator=g)
    cover = m.float().mean(dim=(1, 2, 3))
    assert m.shape == (64, 1, 32, 32)
    assert (cover <= 0.25).all() and (cover >= 64 / 1024).all()  # at least one 8x8 block
    assert cover.mean() > 0.15  # usually several blocks
    # the union of 8x8 squares: every masked pixel lies in a fully masked 8x8 window
    windows = torch.nn.functional.avg_pool2d(m.float(), 8, stride=1) == 1  # (B, 1, 25, 25)
    covered = torch.nn.functional.max_pool2d(
        torch.nn.functional.pad(windows.float(), (7, 7, 7, 7)), 8, stride=1
    ).bool()
    assert torch.equal(covered, m)
    again = random_block_mask(64, 32, generator=torch.Generator().manual_seed(2))
    assert torch.equal(m, again)


def test_shrink_mask_erodes_inner_sides_only():
    m = center_mask(1, 16)
    assert torch.equal(shrink_mask(m, 0), m)
    inner = shrink_mask(m, 1)
    assert inner.sum() == 36 and inner[0, 0, 5:11, 5:11].all()
    corner = torch.zeros(1, 1, 8, 8, dtype=torch.bool)
    corner[..., :4, :4] = True  # touches the top and left image borders
    eroded = shrink_mask(corner, 1)
    assert eroded[0, 0, :3, :3].all() and eroded.sum() == 9
