"""Vision backbones from timm behind one interface.

Every backbone maps normalised images ``(B, 3, H, W)`` to pooled features ``(B, D)`` and exposes
``.dim``. ResNets trained on small images (side <= 64 px, e.g. CIFAR) get the "CIFAR stem" used by
SimCLR's CIFAR-10 experiments (Chen et al. 2020, appendix B.9): the 7x7 stride-2 first convolution
becomes 3x3 stride 1 and the first max-pool is removed.

Any timm model can be used as ``timm:NAME``; the short names below are the ones we test.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import timm
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from torch.nn import functional as F

from selfsup.registry import Registry

VISION_BACKBONES: Registry = Registry("backbone")

# Written into the exported config so the encoder can be rebuilt with timm alone (see README).
CIFAR_STEM_RECIPE = {
    "conv1": "torch.nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)",
    "maxpool": "torch.nn.Identity()",
}


def _register_timm(name: str, description: str) -> None:
    VISION_BACKBONES.register(name, description)(lambda **kw: {"timm_name": name, **kw})


_register_timm("resnet18", "ResNet-18 (He et al. 2016), 512-d features; CIFAR stem below 64 px")
_register_timm("resnet34", "ResNet-34, 512-d features; CIFAR stem below 64 px")
_register_timm("resnet50", "ResNet-50, 2048-d features; CIFAR stem below 64 px")
_register_timm("vit_tiny_patch16_224", "ViT-Ti/16 (Dosovitskiy et al. 2021), 192-d CLS features")
_register_timm("vit_small_patch16_224", "ViT-S/16, 384-d CLS features")
_register_timm("vit_base_patch16_224", "ViT-B/16, 768-d CLS features")


def _register_small_patch_vit(name: str, timm_name: str, patch: int, description: str) -> None:
    spec = {"timm_name": timm_name, "model_kwargs": {"patch_size": patch}}
    VISION_BACKBONES.register(name, description)(lambda **kw: {**spec, **kw})


# 16-pixel patches leave a 32-pixel image with 4 tokens; CIFAR-scale ViTs use 4-pixel patches
# (64 tokens at 32 px), as in the ViT-on-CIFAR baselines of MAE-style work.
_register_small_patch_vit(
    "vit_tiny_patch4", "vit_tiny_patch16_224", 4, "ViT-Ti with 4x4 patches for 32-64 px images"
)
_register_small_patch_vit(
    "vit_small_patch4", "vit_small_patch16_224", 4, "ViT-S with 4x4 patches for 32-64 px images"
)


def apply_cifar_stem(model: nn.Module) -> None:
    """Replace a timm ResNet's 7x7 stride-2 stem convolution and max-pool for small images."""
    width = model.conv1.out_channels
    model.conv1 = nn.Conv2d(3, width, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()


class OnePixelConv2d(nn.Conv2d):
    """A "same"-padded convolution that, on a 1x1 input, applies only its centre tap.

    With padding ``k // 2`` a k x k kernel over a 1 x 1 map sees the pixel only through its centre
    weight, the rest meets zero padding: the result is exactly a 1x1 convolution with
    ``weight[:, :, c, c]``, at 1/k^2 of the cost. The rewrite also avoids a oneDNN fault seen with
    torch 2.14 on an AMD EPYC CPU (AVX512-BF16, no AMX): under bf16 the weight gradient of a
    stride-2 3x3 convolution over a 1 x 1 input sometimes holds NaN in the taps that only meet
    padding (about 1 call in 30), which stops a run. ResNet stages reach 1 x 1 maps on small
    patches (jigsaw tiles, context prediction). Larger inputs take the ordinary path; parameters and state-dict keys are unchanged.
    """

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-2:] == (1, 1) and self._centre is not None:
            c = self._centre
            return F.conv2d(
                x, self.weight[:, :, c : c + 1, c : c + 1], self.bias, 1, 0, 1, self.groups
            )
        return super().forward(x)

    @property
    def _centre(self) -> int | None:
        k = self.kernel_size[0]
        same = self.padding == (k // 2, k // 2) and self.padding_mode == "zeros"
        square_odd = self.kernel_size == (k, k) and k % 2 == 1 and k > 1
        return k // 2 if same and square_odd and self.dilation == (1, 1) else None


def use_one_pixel_convs(model: nn.Module) -> None:
    """Make every plain ``nn.Conv2d`` of ``model`` an :class:`OnePixelConv2d`, in place."""
    for module in model.modules():
        if type(module) is nn.Conv2d:
            module.__class__ = OnePixelConv2d


class VisionBackbone(nn.Module):
    """A timm model without its classifier, returning pooled features.

    Args:
        timm_name: timm model name, e.g. ``"resnet18"``.
        image_size: input side; ViTs are built for it, ResNets choose their stem from it.
        cifar_stem: ``True``/``False`` to force, ``None`` for automatic (ResNet and side <= 64).
        model_kwargs: extra keyword arguments for ``timm.create_model``.
    """

    def __init__(
        self,
        timm_name: str,
        image_size: int = 224,
        cifar_stem: bool | None = None,
        model_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        kwargs = dict(model_kwargs or {})
        if not timm.is_model(timm_name):
            raise ValueError(f"timm has no model {timm_name!r}")
        try:  # models with a fixed input size (ViT, DeiT, EVA, ...) take it as img_size
            self.model = timm.create_model(
                timm_name, pretrained=False, num_classes=0, img_size=image_size, **kwargs
            )
            kwargs["img_size"] = image_size
        except TypeError:  # convolutional nets accept any size and reject the keyword
            self.model = timm.create_model(timm_name, pretrained=False, num_classes=0, **kwargs)
        # a ResNet whose stem is one convolution (the deep-stem variants, resnet18d, resnet10t,
        # keep their 3-convolution stem)
        is_resnet = isinstance(getattr(self.model, "conv1", None), nn.Conv2d) and hasattr(
            self.model, "maxpool"
        )
        if cifar_stem is None:
            cifar_stem = is_resnet and image_size <= 64
        if cifar_stem:
            if not is_resnet:
                raise ValueError(
                    f"cifar_stem applies to ResNets with a one-convolution stem, not {timm_name!r}"
                )
            apply_cifar_stem(self.model)
        if is_resnet:
            use_one_pixel_convs(self.model)
        self.timm_name = timm_name
        self.image_size = image_size
        self.cifar_stem = bool(cifar_stem)
        self.model_kwargs = kwargs
        self.dim: int = self.model.num_features
        # Channels-last lets oneDNN (CPU) and cuDNN (GPU) pick their fast convolution kernels:
        # about 1.3x on this project's 2-core CPU under bf16 (benchmarks/simclr.md).
        self.channels_last = is_resnet
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, 3, H, W) normalised images -> (B, D) features."""
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.model(x)

    def _stem_recipe(self) -> dict[str, str]:
        """:data:`CIFAR_STEM_RECIPE` with this model's stem width."""
        width = self.model.conv1.out_channels
        conv = f"torch.nn.Conv2d(3, {width}, kernel_size=3, stride=1, padding=1, bias=False)"
        return {**CIFAR_STEM_RECIPE, "conv1": conv}

    def export(
        self,
        path: Path,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        extra: dict[str, Any] | None = None,
    ) -> None:
        """Write ``model.safetensors`` and ``config.json`` that rebuild the encoder with timm.

        ``extra`` adds keys to ``config.json`` (e.g. how a method's inputs differ from RGB).
        """
        path.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        save_file(state, str(path / "model.safetensors"))
        config = {
            "format": "timm",
            "model_name": self.timm_name,
            "model_kwargs": {"num_classes": 0, **self.model_kwargs},
            "cifar_stem": self.cifar_stem,
            "replace_modules": self._stem_recipe() if self.cifar_stem else {},
            "feature_dim": self.dim,
            "image_size": self.image_size,
            "mean": list(mean),
            "std": list(std),
            **(extra or {}),
        }
        (path / "config.json").write_text(json.dumps(config, indent=2))


def create_vision_backbone(name: str, image_size: int, **kwargs: Any) -> VisionBackbone:
    """Build a registered backbone, or any timm model given as ``timm:NAME``."""
    if name.startswith("timm:"):
        spec = {"timm_name": name.removeprefix("timm:")}
    else:
        spec = VISION_BACKBONES.create(name)
    # A registered backbone's own timm arguments (e.g. patch_size) merge with the caller's.
    model_kwargs = {**spec.pop("model_kwargs", {}), **(kwargs.pop("model_kwargs", None) or {})}
    return VisionBackbone(image_size=image_size, **spec, model_kwargs=model_kwargs, **kwargs)


def load_exported_vision(path: str | Path) -> nn.Module:
    """Rebuild an exported vision encoder from its folder (timm + safetensors, no selfsup state)."""
    path = Path(path)
    config = json.loads((path / "config.json").read_text())
    model = timm.create_model(config["model_name"], pretrained=False, **config["model_kwargs"])
    if config.get("cifar_stem"):
        apply_cifar_stem(model)
    model.load_state_dict(load_file(str(path / "model.safetensors")))
    return model.eval()
