"""MAE: patch bookkeeping, the masked-only loss, what the encoder sees, and a training step."""

import math

import numpy as np
import pytest
import torch

from selfsup.methods import METHODS, BuildContext
from selfsup.methods.decoders import MaskedTokenDecoder, sincos_pos_embed_2d
from selfsup.methods.mae import mae_loss, normalise_patches, patchify, unpatchify
from selfsup.views.masking import random_patch_mask

TINY = {"decoder_dim": 32, "decoder_depth": 1, "decoder_heads": 2}


@pytest.fixture(scope="module")
def mae():
    torch.manual_seed(0)
    return METHODS.get("mae").build(
        BuildContext("vit_tiny_patch4", image_size=16, batch_size=4), **TINY
    )


def _batch(b=4, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "image": torch.randint(0, 256, (b, 3, size, size), dtype=torch.uint8, generator=g),
        "label": torch.full((b,), -1),
        "index": torch.arange(b),
    }


def test_patchify_lists_patches_row_by_row_and_inverts():
    x = torch.randn(2, 3, 8, 8)
    p = patchify(x, 4)  # (2, 4, 48)
    assert p.shape == (2, 4, 48)
    # patch 1 is the top-right 4x4 square, its pixels row by row with channels last
    assert torch.equal(p[1, 1], x[1, :, 0:4, 4:8].permute(1, 2, 0).reshape(-1))
    assert torch.equal(unpatchify(p, 4, 8), x)


def test_normalised_targets_have_zero_mean_unit_variance_per_patch():
    t = torch.randn(2, 5, 48) * 3 + 7
    n, mean, std = normalise_patches(t)
    ref = t.double().numpy()
    ref_mean = ref.mean(axis=-1, keepdims=True)
    ref_std = np.sqrt(((ref - ref_mean) ** 2).mean(axis=-1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(n.double().numpy(), (ref - ref_mean) / ref_std, atol=1e-4)
    assert torch.allclose(mean, torch.as_tensor(ref_mean).float(), atol=1e-4)
    assert torch.allclose(std, torch.as_tensor(ref_std).float(), atol=1e-4)


@pytest.mark.parametrize("norm_pix", [True, False])
def test_loss_is_mse_over_masked_patches_only(norm_pix):
    g = torch.Generator().manual_seed(0)
    pred, target = torch.randn(3, 6, 12, generator=g), torch.randn(3, 6, 12, generator=g)
    mask = torch.rand(3, 6, generator=g) > 0.5
    mask[:, 0] = True
    errors = []
    for b in range(3):
        for i in range(6):
            if mask[b, i]:
                t = target[b, i].double().numpy()
                if norm_pix:
                    t = (t - t.mean()) / math.sqrt(t.var() + 1e-6)
                errors.append(((pred[b, i].double().numpy() - t) ** 2).mean())
    got = mae_loss(pred, target, mask, norm_pix)
    assert got.item() == pytest.approx(float(np.mean(errors)), rel=1e-5)
    visible_changed = torch.where(mask[..., None], pred, pred + 100.0)
    assert mae_loss(visible_changed, target, mask, norm_pix).item() == pytest.approx(got.item())


def test_sincos_embedding_formula():
    table = sincos_pos_embed_2d(8, (3, 4), cls_token=True)  # (13, 8)
    assert table.shape == (13, 8) and (table[0] == 0).all()
    row, col = 2, 3
    vec = table[1 + row * 4 + col]
    freqs = [1.0, 0.01]  # 10000 ** (-i / 2)
    expected = [math.sin(row * f) for f in freqs] + [math.cos(row * f) for f in freqs]
    expected += [math.sin(col * f) for f in freqs] + [math.cos(col * f) for f in freqs]
    assert torch.allclose(vec, torch.tensor(expected), atol=1e-6)


def test_encoder_sees_only_visible_patches(mae):
    vit = mae.backbone.model
    x = mae.preprocess(_batch()["image"])
    m = random_patch_mask(4, 16, 0.75, generator=torch.Generator().manual_seed(0))
    seen = []
    handle = vit.blocks[0].register_forward_hook(lambda mod, inp, out: seen.append(inp[0].shape))
    out = mae.encode_visible(x, m.keep)
    handle.remove()
    assert m.keep.shape == (4, 4) and out.shape == (4, 1 + 4, 192) and seen == [(4, 5, 192)]
    # the masked patches' pixels do not matter
    hidden = torch.repeat_interleave(torch.repeat_interleave(m.mask.view(4, 1, 4, 4), 4, 2), 4, 3)
    scribbled = torch.where(hidden, torch.randn_like(x) * 5, x)
    assert torch.allclose(mae.encode_visible(scribbled, m.keep), out, atol=1e-5)
    # with every patch visible, the encoder is timm's own forward pass
    all_patches = torch.arange(16).expand(4, 16)
    assert torch.allclose(mae.encode_visible(x, all_patches), vit.forward_features(x), atol=1e-5)


def test_fixed_sincos_positions_in_encoder_and_decoder(mae):
    vit = mae.backbone.model
    expected = sincos_pos_embed_2d(192, (4, 4), cls_token=True)[None]
    assert not vit.pos_embed.requires_grad and torch.equal(vit.pos_embed, expected)
    assert "pos_embed" not in dict(mae.decoder.named_parameters())


def test_decoder_puts_tokens_back_in_image_order():
    torch.manual_seed(0)
    dec = MaskedTokenDecoder(8, (2, 3), 5, dim=8, depth=0, heads=2)  # no attention: per token
    m = random_patch_mask(2, 6, 0.5, generator=torch.Generator().manual_seed(1))
    tokens = torch.randn(2, 1 + 3, 8)
    out = dec(tokens, m.restore)  # (2, 6, 5)
    for b in range(2):
        for pos in range(6):
            if m.mask[b, pos]:
                x = dec.mask_token[0, 0]
            else:
                j = (m.keep[b] == pos).nonzero().item()
                x = dec.embed(tokens[b, 1 + j])
            expected = dec.pred(dec.norm(x + dec.pos_embed[0, 1 + pos]))
            assert torch.allclose(out[b, pos], expected, atol=1e-5)


def test_resnet_backbone_is_rejected_with_a_hint():
    with pytest.raises(ValueError, match="vit_tiny_patch4"):
        METHODS.get("mae").build(BuildContext("resnet18", image_size=16), **TINY)


def test_paper_defaults():
    cls = METHODS.get("mae")
    assert cls.defaults.betas == (0.9, 0.95) and cls.defaults.lr == 1.5e-4
    assert cls.defaults.weight_decay == 0.05 and cls.defaults.scale_lr


def test_training_step_and_embed(mae):
    mae.train()
    mae.zero_grad()
    batch = _batch()
    out = mae(batch)
    assert math.isfinite(out["loss"].item())
    out["loss"].backward()
    missing = [n for n, p in mae.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing
    mae.after_step(1, 10)
    mae.eval()
    feats = mae.embed(batch)
    assert feats.shape == (4, 192) and torch.isfinite(feats).all()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert math.isfinite(mae(batch)["loss"].item())


def test_reconstruct_keeps_visible_patches(mae):
    images = _batch()["image"]
    g = torch.Generator().manual_seed(3)
    masked, recon, original = mae.reconstruct(images, generator=g)
    assert masked.shape == recon.shape == original.shape == (4, 3, 16, 16)
    assert 0 <= recon.min() and recon.max() <= 1
    assert torch.allclose(original, images.float() / 255, atol=1e-5)
    mask = random_patch_mask(4, 16, 0.75, generator=torch.Generator().manual_seed(3)).mask
    hidden = torch.repeat_interleave(torch.repeat_interleave(mask.view(4, 1, 4, 4), 4, 2), 4, 3)
    hidden = hidden.expand(-1, 3, -1, -1)
    assert torch.allclose(recon[~hidden], original[~hidden])
    assert torch.allclose(masked[~hidden], original[~hidden])
    grey = torch.tensor(mae.preprocess.mean).view(1, 3, 1, 1).expand(4, 3, 16, 16)
    assert torch.allclose(masked[hidden], grey[hidden])
    assert not torch.allclose(recon[hidden], original[hidden], atol=0.05)
