"""Jigsaw puzzles (Noroozi & Favaro 2016): permutation set, tiles, shuffles and labels, a step."""

import itertools
import math

import pytest
import torch

from selfsup.methods import METHODS, BuildContext
from selfsup.methods.jigsaw import shuffle_tiles
from selfsup.methods.permutations import hamming_permutations, pairwise_hamming

# --------------------------------------------------------------------------- permutation set


def _greedy_reference(n, num_items, first, criterion):
    """Algorithm 1 with plain Python lists, starting from candidate index ``first``."""
    cands = list(itertools.permutations(range(num_items)))
    chosen = [first]
    while len(chosen) < n:
        best, best_score = None, None
        for i, c in enumerate(cands):
            if i in chosen:
                continue
            dists = [sum(a != b for a, b in zip(c, cands[j], strict=True)) for j in chosen]
            score = (sum(dists),) if criterion == "mean" else (min(dists), sum(dists))
            if best_score is None or score > best_score:  # strict: first maximum wins
                best, best_score = i, score
        chosen.append(best)
    return torch.tensor([cands[i] for i in chosen])


@pytest.mark.parametrize("criterion", ["maximin", "mean"])
def test_permutation_set_is_what_the_greedy_algorithm_gives(criterion):
    perms = hamming_permutations(12, num_items=5, seed=3, criterion=criterion)
    cands = list(itertools.permutations(range(5)))
    first = cands.index(tuple(perms[0].tolist()))
    assert torch.equal(perms, _greedy_reference(12, 5, first, criterion))


def _min_offdiag(perms):
    d = pairwise_hamming(perms)
    return int(d[~torch.eye(len(perms), dtype=torch.bool)].min())


def test_default_permutation_set_is_large_distinct_and_far_apart():
    perms = hamming_permutations(100)
    assert perms.shape == (100, 9) and perms.dtype == torch.int64
    assert (perms.sort(dim=1).values == torch.arange(9)).all()  # every row a permutation
    assert len({tuple(p) for p in perms.tolist()}) == 100  # no duplicates
    assert torch.equal(perms, hamming_permutations(100))  # deterministic
    assert not torch.equal(perms, hamming_permutations(100, seed=1))
    assert _min_offdiag(perms) >= 6
    g = torch.Generator().manual_seed(0)
    random_set = torch.stack([torch.randperm(9, generator=g) for _ in range(100)])
    assert _min_offdiag(random_set) < _min_offdiag(perms)
    # the paper's criterion has the same average distance but a much smaller minimum
    paper = hamming_permutations(100, criterion="mean")
    assert _min_offdiag(paper) < _min_offdiag(perms)
    off = ~torch.eye(100, dtype=torch.bool)
    assert (
        pairwise_hamming(perms)[off].float().mean()
        >= pairwise_hamming(paper)[off].float().mean() - 0.01
    )


# --------------------------------------------------------------------------- tiles and labels


def test_inverse_permutation_restores_the_tiles():
    g = torch.Generator().manual_seed(0)
    tiles = torch.rand(5, 9, 3, 2, 2, generator=g)
    order = torch.stack([torch.randperm(9, generator=g) for _ in range(5)])
    shuffled = shuffle_tiles(tiles, order)
    for b, i in itertools.product(range(5), range(9)):
        assert torch.equal(shuffled[b, i], tiles[b, order[b, i]])
    assert torch.equal(shuffle_tiles(shuffled, order.argsort(dim=1)), tiles)


def _build(size=16, **kw):
    torch.manual_seed(0)
    tiny = {"num_permutations": 10, "head_hidden_dim": 16, **kw}
    return METHODS.get("jigsaw").build(
        BuildContext("resnet18", image_size=size, batch_size=4), **tiny
    )


def _coordinate_images(b, size):
    """Pixel (r, c) holds r in channel 0 and c in channel 1: a crop tells where it came from."""
    r = torch.arange(size).view(size, 1).expand(size, size)
    c = torch.arange(size).view(1, size).expand(size, size)
    return torch.stack([r, c, r + c]).to(torch.uint8).expand(b, 3, size, size).contiguous()


def test_puzzle_tiles_come_from_the_cells_the_label_says():
    method = _build(size=32, gray_p=0.0, channel_jitter=0)
    assert (method.tile_size, method.jitter) == (7, 1)  # 10-pixel cells at 32 px
    images = _coordinate_images(64, 32)
    tiles, labels = method.puzzles(images)
    assert tiles.shape == (64, 9, 3, 7, 7) and labels.shape == (64,)
    pix = (tiles * 255).round().long()
    gaps = []
    for b in range(64):
        order = method.permutations[labels[b]]
        corner = {}
        for i in range(9):
            r, c = int(pix[b, i, 0, 0, 0]), int(pix[b, i, 1, 0, 0])
            cell = int(order[i])
            assert (r // 10, c // 10) == (cell // 3, cell % 3)  # grid origin + offset <= 4 px
            assert torch.equal(pix[b, i, :2], images[b, :2, r : r + 7, c : c + 7].long())
            corner[cell] = (r, c)
        for cell in range(9):  # neighbours never touch: no edge to continue across tiles
            if cell % 3 < 2:
                gaps.append(corner[cell + 1][1] - corner[cell][1] - 7)
            if cell < 6:
                gaps.append(corner[cell + 3][0] - corner[cell][0] - 7)
    assert min(gaps) >= 1 and max(gaps) > min(gaps)  # at least one pixel apart, and jittered
    assert set(labels.tolist()) <= set(range(10)) and len(set(labels.tolist())) > 5


def test_gray_and_channel_jitter():
    method = _build(gray_p=1.0, channel_jitter=2)
    tiles, _ = method.puzzles(_batch(8)["image"])
    assert torch.equal(tiles[:, :, 0], tiles[:, :, 1]) and torch.equal(
        tiles[:, :, 1], tiles[:, :, 2]
    )
    method = _build(gray_p=0.0, channel_jitter=2)
    images = (torch.arange(16).view(1, 16) * 16 + torch.arange(16).view(16, 1)).to(torch.uint8)
    tiles, _ = method.puzzles(images.expand(8, 3, 16, 16))  # every channel encodes (r, c)
    corner = (tiles[..., 0, 0] * 255).round().long()  # (B, 9, 3) top-left pixel per channel
    dr, dc = corner % 16 - corner[..., :1] % 16, corner // 16 - corner[..., :1] // 16
    assert dr.abs().max() <= 4 and dc.abs().max() <= 4  # two shifts of at most 2
    assert (dr != 0).any() and (dc != 0).any()


def test_small_tiles_have_no_channel_jitter_and_vit_is_rejected():
    assert _build(size=32).channel_jitter == 0  # 2 px per 64-px tile rounds to 0 for 8-px tiles
    with pytest.raises(ValueError, match="resnet"):
        METHODS.get("jigsaw").build(
            BuildContext("vit_tiny_patch4", image_size=16), num_permutations=4
        )


# --------------------------------------------------------------------------- a training step


def _batch(b=4, size=16):
    g = torch.Generator().manual_seed(0)
    return {
        "image": torch.randint(0, 256, (b, 3, size, size), generator=g, dtype=torch.uint8),
        "label": torch.full((b,), -1),
        "index": torch.arange(b),
    }


def test_jigsaw_step():
    method = _build()
    assert "permutations" in method.state_dict()  # checkpoints carry the set
    batch = _batch()
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
