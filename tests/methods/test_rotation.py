"""Rotation prediction (Gidaris et al. 2018): loss, rotation labels, the method's batches, a step."""

import math

import pytest
import torch

from selfsup.losses.classification import classification_loss
from selfsup.methods import METHODS, BuildContext
from selfsup.methods.rotation import rotate_batch


def _batch(b=4, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "image": torch.randint(0, 256, (b, 3, size, size), generator=g, dtype=torch.uint8),
        "label": torch.full((b,), -1),
        "index": torch.arange(b),
    }


def test_classification_loss_matches_the_formula():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(7, 5, generator=g) * 3
    labels = torch.tensor([0, 4, 2, 2, 1, 3, 0])
    out = classification_loss(logits, labels)
    total, hits = 0.0, 0
    for row, y in zip(logits.tolist(), labels.tolist(), strict=True):
        total += math.log(sum(math.exp(v) for v in row)) - row[y]
        hits += max(range(5), key=lambda c: row[c]) == y
    assert math.isclose(float(out["loss"]), total / 7, rel_tol=1e-6)
    assert math.isclose(float(out["accuracy"]), hits / 7)


def test_classification_loss_is_fp32_under_bf16_autocast():
    logits = torch.randn(6, 4).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = classification_loss(logits, torch.arange(6) % 4)
    assert out["loss"].dtype == torch.float32
    ref = classification_loss(logits.float(), torch.arange(6) % 4)["loss"]
    assert torch.allclose(out["loss"], ref)


def test_rotate_batch_labels_undo_the_rotation():
    images = torch.rand(3, 3, 5, 5)
    rotated, labels = rotate_batch(images)
    assert rotated.shape == (12, 3, 5, 5)
    assert labels.tolist() == [0] * 3 + [1] * 3 + [2] * 3 + [3] * 3
    for row in range(12):
        k, i = int(labels[row]), row % 3
        assert torch.equal(torch.rot90(rotated[row], -k, dims=(1, 2)), images[i])
    # the four rotations of each image are distinct images (a random image has no symmetry)
    for i in range(3):
        views = rotated[i::3]
        assert all(not torch.equal(views[a], views[b]) for a in range(4) for b in range(a))


def _build(backbone="resnet18", **kw):
    torch.manual_seed(0)
    return METHODS.get("rotation").build(BuildContext(backbone, image_size=16, batch_size=4), **kw)


def test_forward_feeds_all_four_rotations_of_every_crop():
    method = _build()
    seen = []
    method.backbone.register_forward_pre_hook(lambda mod, args: seen.append(args[0].detach()))
    method(_batch())
    x = seen[0]
    assert x.shape == (16, 3, 16, 16)
    for k in range(4):
        for i in range(4):
            assert torch.equal(torch.rot90(x[4 * k + i], -k, dims=(1, 2)), x[i])
    assert method.padding == 2  # 16 // 8, the CIFAR 4 pixels at 32 px


@pytest.mark.parametrize(
    "backbone,kw", [("resnet18", {}), ("vit_tiny_patch4", {"head_layers": 2, "head_hidden_dim": 8})]
)
def test_rotation_step(backbone, kw):
    method = _build(backbone, **kw)
    batch = _batch()
    out = method(batch)
    assert set(out) == {"loss", "accuracy"} and math.isfinite(float(out["loss"].detach()))
    out["loss"].backward()
    missing = [n for n, p in method.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing
    method.after_step(1, 10)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert math.isfinite(float(method(batch)["loss"].detach()))
    method.eval()
    feats = method.embed(batch)
    assert feats.shape == (4, method.backbone.dim) and torch.isfinite(feats).all()


def test_defaults_are_the_papers():
    d = METHODS.get("rotation").defaults
    assert (d.optimizer, d.lr, d.weight_decay, d.momentum, d.scale_lr) == (
        "sgd",
        0.1,
        5e-4,
        0.9,
        False,
    )
