"""Multi-crop views: per-resolution batches in crop-major order, the paper recipes, and encoders
that take every crop size."""

import pytest
import torch

from selfsup.backbones import create_vision_backbone
from selfsup.views import IMAGENET_MEAN, IMAGENET_STD, ViewAugment
from selfsup.views.multicrop import MultiCrop, dynamic_size_backbone, local_crop_size, patch_size


def _plain(size, scale):
    """Crop and flip only, so that a flat image stays flat."""
    return ViewAugment(size, scale=scale, jitter_p=0.0, gray_p=0.0, blur_p=0.0)


def test_crops_are_batched_per_resolution_in_crop_major_order():
    b, n = 3, 4
    colours = torch.tensor([[10, 200, 30], [120, 0, 255], [60, 60, 60]], dtype=torch.uint8)
    images = colours.view(b, 3, 1, 1).expand(b, 3, 16, 16).contiguous()  # one flat colour each
    mc = MultiCrop([_plain(16, (0.3, 1.0))] * 2, _plain(6, (0.05, 0.3)), num_local=n)
    crops = mc(images)
    assert [c.shape for c in crops] == [(2 * b, 3, 16, 16), (n * b, 3, 6, 6)]
    assert all(c.dtype == torch.float32 for c in crops)
    mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
    expected = (colours.float() / 255 - mean) / std  # (b, 3)
    for views, count in zip(crops, (2, n), strict=True):
        # row i * B + j is crop i of image j: a flat patch of image j's colour
        got = views.view(count, b, 3, -1)  # (crops, B, 3, pixels)
        want = expected.view(1, b, 3, 1).expand_as(got)
        assert torch.allclose(got, want, atol=1e-5)


def test_every_crop_is_a_fresh_random_view():
    torch.manual_seed(0)
    ramp = torch.arange(32 * 32, dtype=torch.float32).view(1, 1, 32, 32) / (32 * 32)
    images = (ramp.expand(2, 3, 32, 32) * 255).to(torch.uint8)
    crops = MultiCrop.swav(32, num_local=3, blur=False)(images)
    g1, g2 = crops[0].view(2, 2, 3, 32, 32).unbind(0)
    locals_ = crops[1].view(3, 2, 3, 14, 14)
    assert not torch.allclose(g1, g2)
    assert not torch.allclose(locals_[0], locals_[1])
    assert not torch.allclose(locals_[1], locals_[2])


def test_paper_recipes():
    swav = MultiCrop.swav(224)
    assert (swav.num_global, swav.num_local, swav.num_crops) == (2, 6, 8)
    assert all(v.config.scale == (0.14, 1.0) and v.config.size == 224 for v in swav.global_views)
    assert swav.local_view.config.scale == (0.05, 0.14) and swav.local_view.config.size == 96
    assert swav.local_view.config.jitter == (0.8, 0.8, 0.8, 0.2)
    assert all(v.config.blur_p == 0.5 for v in [*swav.global_views, swav.local_view])

    dino = MultiCrop.dino(224)
    g1, g2 = (v.config for v in dino.global_views)
    assert g1.scale == g2.scale == (0.4, 1.0) and dino.local_view.config.scale == (0.05, 0.4)
    assert (g1.blur_p, g2.blur_p, dino.local_view.config.blur_p) == (1.0, 0.1, 0.5)
    assert (g1.solarize_p, g2.solarize_p) == (0.0, 0.2)

    pair = MultiCrop.byol(32, blur=False)
    assert pair.num_crops == 2 and pair.local_view is None
    assert all(v.config.scale == (0.08, 1.0) and v.config.blur_p == 0 for v in pair.global_views)
    assert MultiCrop.dino(32, blur=False).local_view.config.blur_p == 0


def test_local_crop_size():
    assert local_crop_size(224) == 96
    assert local_crop_size(32) == 14
    assert local_crop_size(32, multiple=4) == 12
    assert local_crop_size(8, multiple=4) == 4  # never below one patch


def test_invalid_configurations_are_rejected():
    with pytest.raises(ValueError, match="local_view"):
        MultiCrop([_plain(8, (0.5, 1.0))], None, num_local=2)
    with pytest.raises(ValueError, match="one output size"):
        MultiCrop([_plain(8, (0.5, 1.0)), _plain(6, (0.5, 1.0))])


def test_dynamic_size_backbone_lets_a_vit_take_local_crops():
    vit = create_vision_backbone("vit_tiny_patch4", image_size=16)
    with pytest.raises((AssertionError, RuntimeError, ValueError)):
        vit(torch.randn(2, 3, 8, 8))  # a fixed-size ViT rejects the small crops
    vit = dynamic_size_backbone(vit)
    assert patch_size(vit) == 4
    for side in (16, 8):
        assert vit(torch.randn(2, 3, side, side)).shape == (2, 192)
    assert vit.model_kwargs["dynamic_img_size"] and vit.model_kwargs["patch_size"] == 4

    resnet = create_vision_backbone("resnet18", image_size=16)
    assert dynamic_size_backbone(resnet) is resnet and patch_size(resnet) == 1
