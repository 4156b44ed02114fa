"""Vision backbones: the one-pixel convolution rewrite is exact and keeps the weights' names."""

import pytest
import torch
from torch import nn

from selfsup.backbones.vision import OnePixelConv2d, create_vision_backbone


@pytest.mark.parametrize("stride", [1, 2])
def test_one_pixel_conv_equals_plain_conv(stride):
    torch.manual_seed(0)
    plain = nn.Conv2d(8, 16, 3, stride, 1, bias=True)
    rewritten = OnePixelConv2d(8, 16, 3, stride, 1, bias=True)
    rewritten.load_state_dict(plain.state_dict())
    for side in (1, 2, 5):  # 1x1 takes the centre tap, larger maps the ordinary path
        x = torch.randn(4, 8, side, side)
        x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
        y1, y2 = plain(x1), rewritten(x2)
        torch.testing.assert_close(y2, y1)
        y1.square().sum().backward()
        y2.square().sum().backward()
        torch.testing.assert_close(x2.grad, x1.grad)
        torch.testing.assert_close(rewritten.weight.grad, plain.weight.grad)
        plain.zero_grad()
        rewritten.zero_grad()


def test_one_pixel_conv_keeps_unsupported_shapes_on_the_plain_path():
    assert OnePixelConv2d(4, 4, 3, padding=0)._centre is None  # 'valid' padding: output is empty
    assert OnePixelConv2d(4, 4, 1)._centre is None  # a 1x1 kernel has nothing to skip
    assert OnePixelConv2d(4, 4, 3, padding=2, dilation=2)._centre is None
    assert OnePixelConv2d(4, 4, 5, padding=2)._centre == 2


def test_resnet_backbone_uses_it_and_keeps_timm_keys():
    import timm

    backbone = create_vision_backbone("resnet18", image_size=16)
    convs = [m for m in backbone.model.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(type(m) is OnePixelConv2d for m in convs)
    reference = timm.create_model("resnet18", pretrained=False, num_classes=0)
    assert backbone.model.state_dict().keys() == reference.state_dict().keys()


def test_bf16_weight_gradients_stay_finite_on_one_pixel_maps():
    """A 3x3 stride-2 convolution over 1x1 maps (layer4 on 3-pixel patches) under CPU bf16."""
    torch.manual_seed(0)
    conv = OnePixelConv2d(128, 256, 3, 2, 1, bias=False).to(memory_format=torch.channels_last)
    x = torch.randn(16, 128, 1, 1).contiguous(memory_format=torch.channels_last)
    for _ in range(30):
        conv.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = conv(x)
        y.float().sum().backward()
        assert torch.isfinite(conv.weight.grad).all()
        assert conv.weight.grad[:, :, 0].abs().sum() == 0  # taps that only meet padding


def test_deep_stem_resnets_keep_their_stem_and_plain_ones_record_its_width():
    deep = create_vision_backbone("timm:resnet10t", image_size=16)  # a 3-convolution stem
    assert not deep.cifar_stem and deep(torch.zeros(2, 3, 16, 16)).shape == (2, deep.dim)
    with pytest.raises(ValueError, match="one-convolution stem"):
        create_vision_backbone("timm:resnet10t", image_size=16, cifar_stem=True)
    narrow = create_vision_backbone("timm:resnet18", image_size=16)
    narrow.model.conv1 = nn.Conv2d(3, 32, 3, padding=1, bias=False)  # as a narrower ResNet's
    assert "Conv2d(3, 32," in narrow._stem_recipe()["conv1"]
