"""Context encoder: the weighted region loss, the hole the encoder sees, decoder pieces, a step."""

import math

import numpy as np
import pytest
import torch

from selfsup.methods import METHODS, BuildContext
from selfsup.methods.decoders import ChannelwiseFC, UpConvDecoder
from selfsup.methods.inpainting import inpainting_loss

TINY = {"decoder_width": 32}


def _build(mask="center", backbone="resnet18", size=16, **kw):
    torch.manual_seed(0)
    ctx = BuildContext(backbone, image_size=size, batch_size=4)
    return METHODS.get("inpainting").build(ctx, mask=mask, **TINY, **kw)


@pytest.fixture(scope="module")
def center16():
    return _build()


def _batch(b=4, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "image": torch.randint(0, 256, (b, 3, size, size), dtype=torch.uint8, generator=g),
        "label": torch.full((b,), -1),
        "index": torch.arange(b),
    }


def test_loss_against_a_pixel_loop():
    g = torch.Generator().manual_seed(0)
    pred, target = torch.randn(2, 3, 6, 6, generator=g), torch.randn(2, 3, 6, 6, generator=g)
    region = torch.zeros(2, 1, 6, 6, dtype=torch.bool)
    region[:, :, 1:5, 1:5] = True
    hole = torch.zeros_like(region)
    hole[:, :, 2:4, 2:4] = True
    num = den = 0.0
    for b in range(2):
        for i in range(6):
            for j in range(6):
                if region[b, 0, i, j]:
                    w = 1.0 if hole[b, 0, i, j] else 10.0
                    err = ((pred[b, :, i, j] - target[b, :, i, j]).double().numpy() ** 2).mean()
                    num, den = num + w * err, den + w
    got = inpainting_loss(pred, target, region, hole, overlap_weight=10.0)
    assert got.item() == pytest.approx(num / den, rel=1e-5)
    outside = torch.where(region, pred, pred + 50.0)
    assert inpainting_loss(outside, target, region, hole).item() == pytest.approx(got.item())


def test_center_region_and_overlap_geometry():
    m = _build(size=32)
    assert m.overlap == 1  # 4 px at 128 px, scaled
    region, hole = m.regions(2, torch.device("cpu"))
    assert region[0, 0].sum() == 16 * 16 and region[0, 0, 8:24, 8:24].all()
    assert hole[0, 0].sum() == 14 * 14 and hole[0, 0, 9:23, 9:23].all()


def test_the_encoder_never_sees_the_hole(center16):
    assert center16.overlap == 0  # round(4 * 16 / 128)
    m = center16.eval()
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    region, hole = m.regions(2, torch.device("cpu"))
    other = torch.where(hole, torch.rand_like(images), images)
    with torch.no_grad():
        assert torch.allclose(m.inpaint(images, hole), m.inpaint(other, hole), atol=1e-6)
        assert not torch.allclose(m.inpaint(images, hole), m.inpaint(1 - images, hole), atol=1e-3)


def test_channelwise_fc_against_a_loop():
    torch.manual_seed(0)
    fc = ChannelwiseFC(3, (2, 2))
    x = torch.randn(2, 3, 2, 2)
    out = fc(x)
    w, bias = fc.weight.detach().double().numpy(), fc.bias.detach().double().numpy()
    inner = np.zeros((2, 3, 4))
    for b in range(2):
        for c in range(3):
            inner[b, c] = x[b, c].reshape(-1).double().numpy() @ w[c] + bias[c]
    expected = fc.mix(torch.as_tensor(inner).float().view(2, 3, 2, 2))
    assert torch.allclose(out, expected, atol=1e-5)


@pytest.mark.parametrize("in_size, out_size", [(2, 16), (4, 4), (3, 16)])
def test_upconv_decoder_shapes(in_size, out_size):
    dec = UpConvDecoder(8, in_size, 5, out_size, width=16)
    assert dec(torch.randn(2, 8, in_size, in_size)).shape == (2, 5, out_size, out_size)


def test_unknown_mask_is_rejected():
    with pytest.raises(ValueError, match="random_blocks"):
        _build(mask="circle")


def test_paper_defaults():
    d = METHODS.get("inpainting").defaults
    assert (d.lr, d.betas, d.weight_decay, d.scale_lr) == (2e-4, (0.5, 0.999), 0.0, False)


@pytest.mark.parametrize(
    "mask, backbone", [("center", "resnet18"), ("random_blocks", "vit_tiny_patch4")]
)
def test_training_step_and_embed(mask, backbone):
    m = _build(mask, backbone)
    batch = _batch()
    out = m(batch)
    assert math.isfinite(out["loss"].item())
    out["loss"].backward()
    missing = [n for n, p in m.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing
    m.after_step(1, 10)
    m.eval()
    feats = m.embed(batch)
    assert feats.shape == (4, m.backbone.dim) and torch.isfinite(feats).all()
    m.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert math.isfinite(m(batch)["loss"].item())
