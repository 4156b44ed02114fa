"""Context prediction (Doersch et al. 2015): neighbour labels, patch geometry, colour guards, a step."""

import math

import pytest
import torch

from selfsup.methods import METHODS, BuildContext
from selfsup.methods.context import NEIGHBOURS


def _build(size=16, **kw):
    torch.manual_seed(0)
    ctx = BuildContext("resnet18", image_size=size, batch_size=4)
    return METHODS.get("relative_patch").build(ctx, **{"head_hidden_dim": 16, **kw})


def _coordinate_images(b, size):
    """Pixel (r, c) holds r in channel 0 and c in channel 1: a patch tells where it came from."""
    r = torch.arange(size).view(size, 1).expand(size, size)
    c = torch.arange(size).view(1, size).expand(size, size)
    return torch.stack([r, c, r * 0]).to(torch.uint8).expand(b, 3, size, size).contiguous()


@pytest.mark.parametrize("size", [16, 32, 64])
def test_label_is_the_neighbours_offset_and_patches_are_disjoint_and_inside(size):
    method = _build(size, crop_scale=(1.0, 1.0))  # the grid on the whole image: exact positions
    cell, p, j = size // 3, method.patch_size, method.jitter
    assert (p, j) == {16: (3, 0), 32: (7, 1), 64: (14, 1)}[size]
    images = _coordinate_images(400, size)
    patches, labels = method.pairs(images)
    assert patches.shape == (400, 2, 3, p, p)
    pix = (patches * 255).round().long()
    for b in range(400):
        (rc, cc), (rn, cn) = pix[b, :, :2, 0, 0].tolist()
        dy, dx = NEIGHBOURS[int(labels[b])]
        assert abs(rn - rc - dy * cell) <= 2 * j and abs(cn - cc - dx * cell) <= 2 * j
        assert abs(rc - cell) <= size - 3 * cell + cell - p  # the centre patch is in the centre
        for r, c in ((rc, cc), (rn, cn)):
            assert 0 <= r <= size - p and 0 <= c <= size - p
            assert torch.equal(
                pix[b, 0 if (r, c) == (rc, cc) else 1, :2],
                images[b, :2, r : r + p, c : c + p].long(),
            )
        gap = max(abs(rn - rc), abs(cn - cc)) - p  # along the axis that separates them
        assert gap >= cell - p - 2 * j >= 1
    assert sorted(set(labels.tolist())) == list(range(8))


def test_random_crop_moves_the_grid_so_absolute_position_does_not_give_the_label_away():
    method = _build(32)
    images = _coordinate_images(400, 32)
    patches, labels = method.pairs(images)
    pix = (patches * 255).round()  # channel 0: source row, channel 1: source column
    centre_rows = pix[:, 0, 0, 0, 0]
    assert centre_rows.max() - centre_rows.min() >= 6  # without the crop: within 2 pixels
    # a given label comes from many source regions
    rows_label0 = pix[labels == 0, 1, 0, 0, 0]
    assert rows_label0.max() - rows_label0.min() >= 4


def test_neighbour_offsets_are_the_eight_cells_around_the_centre():
    assert len(set(NEIGHBOURS)) == 8 and (0, 0) not in NEIGHBOURS
    assert all(max(abs(dy), abs(dx)) == 1 for dy, dx in NEIGHBOURS)


def test_color_dropping_reaches_the_backbone():
    method = _build()
    seen = []
    method.backbone.register_forward_pre_hook(lambda mod, args: seen.append(args[0].detach()))
    method({"image": torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)})
    x = seen[0]  # (2B, 3, P, P)
    assert x.shape == (8, 3, 3, 3)
    spread = x.flatten(2).std(dim=2)  # (2B, 3)
    kept = spread.argmax(dim=1)
    for i in range(8):  # one channel carries the patch, the other two are 1/100-scale noise
        others = [spread[i, c] for c in range(3) if c != kept[i]]
        assert all(s < 0.05 * spread[i, kept[i]] for s in others)


def test_projection_option_and_bad_color():
    method = _build(color="project")
    patches, _ = method.pairs(torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8))
    axis = torch.tensor([-1.0, 2.0, -1.0]) / math.sqrt(6)
    assert float((patches * axis.view(1, 1, 3, 1, 1)).sum(dim=2).abs().max()) < 1e-5
    with pytest.raises(ValueError, match="color"):
        _build(color="gray")


def test_relative_patch_step():
    method = _build()
    g = torch.Generator().manual_seed(0)
    batch = {
        "image": torch.randint(0, 256, (4, 3, 16, 16), generator=g, dtype=torch.uint8),
        "label": torch.full((4,), -1),
        "index": torch.arange(4),
    }
    out = method(batch)
    assert math.isfinite(float(out["loss"].detach())) and 0 <= float(out["accuracy"]) <= 1
    out["loss"].backward()
    missing = [n for n, p in method.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing
    method.after_step(1, 10)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert math.isfinite(float(method(batch)["loss"].detach()))
    method.eval()
    feats = method.embed(batch)
    assert feats.shape == (4, 512) and torch.isfinite(feats).all()
