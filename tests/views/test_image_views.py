"""Tests of the batched image views against torchvision's per-image functional ops."""

import itertools
import math

import pytest
import torch
import torchvision.transforms as T1
import torchvision.transforms.v2 as T
import torchvision.transforms.v2.functional as TF

from selfsup.views import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    EvalTransform,
    ViewAugment,
    ViewConfig,
    blur,
    color,
    color_jitter,
    crop,
    gaussian_blur,
    random_grayscale,
    random_resized_crop,
    solarize,
    to_float,
)


def _images(b=4, h=16, w=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, 3, h, w), generator=g, dtype=torch.uint8)


def _unit(x):
    return x.float() / 255.0


# --------------------------------------------------------------------------- shapes and dtypes

OPS = {
    "crop": lambda x, g: random_resized_crop(x, 8, generator=g),
    "jitter": lambda x, g: color_jitter(x, p=1.0, generator=g),
    "gray": lambda x, g: random_grayscale(x, p=1.0, generator=g),
    "blur": lambda x, g: gaussian_blur(x, p=1.0, kernel_frac=0.3, generator=g),
    "solarize": lambda x, g: solarize(x, p=1.0, generator=g),
}


@pytest.mark.parametrize("name", sorted(OPS))
@pytest.mark.parametrize("b", [0, 1, 3])
@pytest.mark.parametrize("as_uint8", [True, False])
def test_ops_shapes_dtypes_and_range(name, b, as_uint8):
    x = _images(b, 12, 12)
    x = x if as_uint8 else _unit(x)
    y = OPS[name](x, torch.Generator().manual_seed(0))
    side = 8 if name == "crop" else 12
    assert y.shape == (b, 3, side, side)
    assert y.dtype == torch.float32
    if b:
        assert y.min() >= 0.0 and y.max() <= 1.0


@pytest.mark.parametrize("b", [0, 1, 5])
def test_view_augment_shapes_and_normalisation(b):
    aug = ViewAugment.simclr(8, blur=True)
    y = aug(_images(b, 16, 12))
    assert y.shape == (b, 3, 8, 8) and y.dtype == torch.float32
    if b:
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        unit = y * std + mean
        assert unit.min() >= -1e-5 and unit.max() <= 1 + 1e-5


def test_bf16_autocast_computes_in_float32():
    x = _images(3, 16, 16)
    aug = ViewAugment.simclr(16, blur=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = aug(x, generator=torch.Generator().manual_seed(1))
        x_bf16 = gaussian_blur(_unit(x).bfloat16(), p=1.0, kernel_frac=0.3)
    assert y.dtype == torch.float32 and x_bf16.dtype == torch.float32
    ref = aug(x, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(y, ref)


def test_to_float_normalises_uint8_and_float_alike():
    x = _images(2)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    expected = (_unit(x) - mean) / std
    torch.testing.assert_close(to_float(x), expected)
    torch.testing.assert_close(to_float(_unit(x)), expected)


def test_rejects_non_rgb_batches():
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        random_grayscale(torch.zeros(2, 1, 4, 4))


# --------------------------------------------------------------------------- crop and flip


def test_full_crop_without_flip_is_identity():
    x = _unit(_images(3, 10, 10))
    y = random_resized_crop(x, 10, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_p=0.0)
    torch.testing.assert_close(y, x, atol=1e-6, rtol=0)


def test_flip_p_one_is_horizontal_flip():
    x = _unit(_images(3, 10, 10))
    y = random_resized_crop(x, 10, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_p=1.0)
    torch.testing.assert_close(y, torch.flip(x, dims=[3]), atol=1e-6, rtol=0)


def test_flip_is_drawn_per_sample():
    x = _unit(_images(1, 6, 6)).expand(400, 3, 6, 6)
    g = torch.Generator().manual_seed(0)
    y = random_resized_crop(x, 6, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_p=0.3, generator=g)
    same = (y - x).abs().amax(dim=(1, 2, 3)) < 1e-6
    flipped = (y - torch.flip(x, dims=[3])).abs().amax(dim=(1, 2, 3)) < 1e-6
    assert torch.all(same ^ flipped)
    assert abs(flipped.float().mean().item() - 0.3) < 0.07


def test_resized_crop_matches_torchvision_per_box():
    x = _unit(_images(3, 12, 16))
    boxes = torch.tensor([[0.0, 0.0, 12.0, 16.0], [2.0, 3.0, 5.0, 7.0], [5.0, 1.0, 7.0, 4.0]])
    flip = torch.tensor([False, True, False])
    y = crop._resized_crop(x, boxes, flip, 20)  # upscaling: torchvision needs no antialias
    for i, (top, left, h, w) in enumerate(boxes.int().tolist()):
        ref = TF.resized_crop(x[i], top, left, h, w, [20, 20], antialias=False)
        ref = torch.flip(ref, dims=[2]) if flip[i] else ref
        torch.testing.assert_close(y[i], ref, atol=1e-5, rtol=0)


def test_crop_boxes_follow_torchvision_distribution():
    n, height, width = 4000, 32, 32
    scale, ratio = (0.08, 1.0), (3 / 4, 4 / 3)
    g = torch.Generator().manual_seed(0)
    img = torch.zeros(1, 3, height, width)
    boxes = crop._crop_boxes(n, height, width, scale, ratio, img, g)  # (n, 4)
    top, left, h, w = boxes.unbind(1)
    assert torch.equal(boxes, boxes.round())
    assert (h >= 1).all() and (w >= 1).all()
    assert (top >= 0).all() and (left >= 0).all()
    assert (top + h <= height).all() and (left + w <= width).all()
    area = h * w / (height * width)
    # integer rounding of w and h lets the area fall slightly under the lower bound
    assert area.min() >= 0.08 * 0.7 and area.max() <= 1.0
    aspect = w / h
    assert aspect.min() >= 0.75 * 0.7 and aspect.max() <= (4 / 3) / 0.7

    torch.manual_seed(0)
    ref = torch.tensor(
        [math.prod(T1.RandomResizedCrop.get_params(img[0], scale, ratio)[2:]) for _ in range(1000)],
        dtype=torch.float32,
    ) / (height * width)
    assert abs(area.mean().item() - ref.mean().item()) < 0.03
    assert abs(area.std().item() - ref.std().item()) < 0.03
    # offsets are uniform over the free range: the mean relative offset is about 1/2
    free = (height - h).clamp_min(1)
    assert abs((top / free)[h < height].mean().item() - 0.5) < 0.03


def test_fixed_scale_and_ratio_give_fixed_box_size():
    g = torch.Generator().manual_seed(0)
    img = torch.zeros(1, 3, 32, 32)
    boxes = crop._crop_boxes(200, 32, 32, (0.25, 0.25), (1.0, 1.0), img, g)
    assert torch.all(boxes[:, 2:] == 16.0)
    assert boxes[:, :2].min() == 0 and boxes[:, :2].max() == 16  # whole offset range is reached


def test_crop_falls_back_to_centre_when_no_candidate_fits():
    # Wide images with a square-only ratio and full area never fit: fallback is a central crop.
    g = torch.Generator().manual_seed(0)
    img = torch.zeros(1, 3, 10, 20)
    boxes = crop._crop_boxes(5, 10, 20, (1.0, 1.0), (1.0, 1.0), img, g)
    expected = torch.tensor([[0.0, 5.0, 10.0, 10.0]]).expand(5, 4)
    torch.testing.assert_close(boxes, expected)


# --------------------------------------------------------------------------- colour ops vs torchvision

ADJUST = {
    "brightness": (color._adjust_brightness, TF.adjust_brightness, (0.2, 1.8)),
    "contrast": (color._adjust_contrast, TF.adjust_contrast, (0.2, 1.8)),
    "saturation": (color._adjust_saturation, TF.adjust_saturation, (0.2, 1.8)),
    "hue": (color._adjust_hue, TF.adjust_hue, (-0.5, 0.5)),
}


@pytest.mark.parametrize("name", sorted(ADJUST))
def test_colour_op_matches_torchvision_per_image(name):
    ours, theirs, (lo, hi) = ADJUST[name]
    x = _unit(_images(6, 9, 11))
    x[0] = 0.5  # gray image: zero chroma, hue undefined
    x[1, :, :4] = 1.0  # saturated white block
    factors = torch.linspace(lo, hi, 6)
    y = ours(x, factors)
    for i in range(6):
        ref = theirs(x[i], factors[i].item())
        torch.testing.assert_close(y[i], ref, atol=2e-6, rtol=0, msg=f"{name} sample {i}")


def test_jitter_order_per_sample_matches_torchvision_sequence():
    perms = list(itertools.permutations(range(4)))  # all 24 orders, one per sample
    n = len(perms)
    x = _unit(_images(n, 7, 7, seed=3))
    g = torch.Generator().manual_seed(0)
    u = torch.rand(n, 4, generator=g)
    factors = torch.stack(
        (0.3 + 1.4 * u[:, 0], 0.3 + 1.4 * u[:, 1], 0.3 + 1.4 * u[:, 2], u[:, 3] - 0.5), 1
    )
    order = torch.tensor(perms)
    y = color._jitter_with(x, factors, order)
    fns = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)
    for i in range(n):
        ref = x[i]
        for op in perms[i]:
            ref = fns[op](ref, factors[i, op].item())
        torch.testing.assert_close(y[i], ref, atol=1e-5, rtol=0, msg=f"order {perms[i]}")


def test_jitter_without_hue_applies_blends_in_order():
    x = _unit(_images(2, 6, 6))
    factors = torch.tensor([[1.5, 0.5, 1.7, 0.0], [0.4, 1.6, 0.2, 0.0]])
    order = torch.tensor([[3, 2, 1, 0], [0, 3, 1, 2]])
    y = color._jitter_with(x, factors, order, with_hue=False)
    fns = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation)
    for i in range(2):
        ref = x[i]
        for op in order[i].tolist():
            ref = fns[op](ref, factors[i, op].item()) if op < 3 else ref
        torch.testing.assert_close(y[i], ref, atol=1e-6, rtol=0)


def test_color_jitter_probability_and_factor_ranges():
    x = _unit(_images(400, 4, 4))
    g = torch.Generator().manual_seed(0)
    assert torch.equal(color_jitter(x, p=0.0, generator=g), x)
    changed = (color_jitter(x, p=0.5, generator=g) - x).abs().amax(dim=(1, 2, 3)) > 1e-4
    assert 0.4 < changed.float().mean().item() < 0.6
    # brightness only, factor in [0.9, 1.1]: every pixel's ratio stays inside that range
    y = color_jitter(x, 0.1, 0.0, 0.0, 0.0, p=1.0, generator=g)
    ratio = (y / x)[(x > 0.05) & (x < 0.85)]
    assert ratio.min() >= 0.9 - 1e-5 and ratio.max() <= 1.1 + 1e-5
    assert ratio.min() < 0.92 and ratio.max() > 1.08


def test_grayscale_matches_torchvision():
    x = _unit(_images(3))
    y = random_grayscale(x, p=1.0)
    for i in range(3):
        torch.testing.assert_close(y[i], TF.rgb_to_grayscale(x[i], 3), atol=1e-6, rtol=0)
    assert torch.equal(random_grayscale(x, p=0.0), x)
    frac = random_grayscale(
        _unit(_images(2000, 2, 2)), p=0.2, generator=torch.Generator().manual_seed(0)
    )
    is_gray = (frac[:, 0] == frac[:, 1]).flatten(1).all(1) & (frac[:, 1] == frac[:, 2]).flatten(
        1
    ).all(1)
    assert abs(is_gray.float().mean().item() - 0.2) < 0.03


def test_blur_with_tiny_sigma_is_identity():
    x = _unit(_images(3, 20, 20))
    y = gaussian_blur(x, p=1.0, sigma=(1e-3, 1e-3))
    torch.testing.assert_close(y, x, atol=1e-6, rtol=0)


def test_blur_matches_torchvision_per_sample_sigma():
    x = _unit(_images(3, 12, 10))
    sigma = torch.tensor([0.3, 1.0, 2.0])
    y = blur._gaussian_blur_sigma(x, sigma, 5)
    for i in range(3):
        ref = TF.gaussian_blur(x[i], [5, 5], [sigma[i].item()] * 2)
        torch.testing.assert_close(y[i], ref, atol=1e-5, rtol=0)
    assert not torch.allclose(y, x, atol=1e-2)


def test_blur_kernel_is_ten_percent_of_side_and_odd():
    assert blur.blur_kernel_size(224) == 23  # SimCLR's ImageNet kernel
    assert blur.blur_kernel_size(32) == 3
    assert blur.blur_kernel_size(96) == 9


def test_solarize_matches_torchvision():
    x = _unit(_images(3))
    y = solarize(x, p=1.0, threshold=0.4)
    for i in range(3):
        torch.testing.assert_close(y[i], TF.solarize(x[i], 0.4))
    assert torch.equal(solarize(x, p=0.0), x)


# --------------------------------------------------------------------------- randomness


def test_identical_images_get_different_views():
    x = _images(1, 16, 16).expand(8, 3, 16, 16)
    y = ViewAugment.simclr(16)(x, generator=torch.Generator().manual_seed(0))
    dist = torch.cdist(y.flatten(1), y.flatten(1))
    off_diagonal = dist[~torch.eye(8, dtype=torch.bool)]
    assert off_diagonal.min() > 1e-2


def test_seeded_generator_reproduces_views():
    x = _images(6, 16, 16)
    aug = ViewAugment.simclr(12)
    a = aug(x, generator=torch.Generator().manual_seed(7))
    b = aug(x, generator=torch.Generator().manual_seed(7))
    c = aug(x, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_global_rng_state_reproduces_views():
    x = _images(6, 16, 16)
    aug = ViewAugment.simclr(12)
    torch.manual_seed(3)
    a = aug(x)
    state = torch.get_rng_state()
    b = aug(x)
    torch.set_rng_state(state)
    b_again = aug(x)
    torch.manual_seed(3)
    a_again = aug(x)
    assert torch.equal(a, a_again) and torch.equal(b, b_again)
    assert not torch.allclose(a, b)


# --------------------------------------------------------------------------- config and eval


def test_simclr_recipe_defaults():
    cfg = ViewAugment.simclr(32, strength=0.5, blur=False).config
    assert cfg.jitter == pytest.approx((0.4, 0.4, 0.4, 0.1))
    assert (cfg.jitter_p, cfg.gray_p, cfg.blur_p, cfg.flip_p) == (0.8, 0.2, 0.0, 0.5)
    assert cfg.scale == (0.08, 1.0)
    assert ViewAugment.simclr(224).config.blur_p == 0.5
    assert ViewAugment.from_config(cfg).config == cfg


@pytest.mark.parametrize(
    "bad", [{"size": 0}, {"scale": (0.5, 0.1)}, {"gray_p": 1.5}, {"jitter": (0.4, 0.4, 0.4, 0.7)}]
)
def test_config_validates(bad):
    with pytest.raises(ValueError):
        ViewConfig(**{"size": 8, **bad})


@pytest.mark.parametrize("hw", [(12, 16), (20, 14), (10, 10)])
def test_eval_transform_matches_torchvision(hw):
    x = _unit(_images(2, *hw))
    ours = EvalTransform(8, resize=9)(x)
    ref = T.Compose(
        [T.Resize(9, antialias=True), T.CenterCrop(8), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    )
    for i in range(2):
        torch.testing.assert_close(ours[i], ref(x[i]), atol=1e-5, rtol=0)
    assert EvalTransform(8, resize=9)(_images(2, *hw)).dtype == torch.float32
