"""Decoders of the reconstruction methods, and the encoder's spatial feature map they start from.

* :class:`MaskedTokenDecoder`: MAE's lightweight Transformer decoder (He et al. 2022, section 3),
  with a learned mask token and fixed 2-D sine-cosine positional embeddings
  (:func:`sincos_pos_embed_2d`).
* :class:`ChannelwiseFC`: the context encoder's channel-wise fully-connected layer (Pathak et al.
  2016, section 3.1), which lets every decoder unit see the whole feature map of its channel.
* :class:`UpConvDecoder`: a stack of stride-2 up-convolutions (4x4 transposed convolutions with
  batch norm and ReLU, as in Pathak et al.'s decoder and DCGAN) from a feature map to an output map.
"""

from __future__ import annotations

import math
from functools import partial

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Block
from torch import Tensor, nn

from selfsup.backbones import VisionBackbone


def sincos_pos_embed_2d(dim: int, grid: tuple[int, int], cls_token: bool = False) -> Tensor:
    """Fixed 2-D sine-cosine positional embeddings (Vaswani et al. 2017's 1-D code per axis).

    The first half of the channels encodes the row, the second half the column, each as
    ``[sin(p * w_i), cos(p * w_i)]`` with frequencies ``w_i = 10000 ** (-i / (dim / 4))``.

    Args:
        dim: embedding width, a multiple of 4.
        grid: (rows, columns) of the patch grid, patches listed row by row.
        cls_token: prepend an all-zero embedding for a class token.

    Returns:
        ([1 +] rows * columns, dim) float32.
    """
    if dim % 4:
        raise ValueError(f"sin-cos embeddings need a width divisible by 4, got {dim}")
    quarter = dim // 4
    freq = 10000.0 ** (-torch.arange(quarter, dtype=torch.float64) / quarter)  # (dim/4,)
    rows, cols = torch.meshgrid(
        torch.arange(grid[0], dtype=torch.float64),
        torch.arange(grid[1], dtype=torch.float64),
        indexing="ij",
    )  # (H, W) each

    def encode(pos: Tensor) -> Tensor:
        angle = pos.reshape(-1, 1) * freq  # (HW, dim/4)
        return torch.cat([angle.sin(), angle.cos()], dim=1)  # (HW, dim/2)

    table = torch.cat([encode(rows), encode(cols)], dim=1)  # (HW, dim)
    if cls_token:
        table = torch.cat([torch.zeros(1, dim, dtype=table.dtype), table])  # (1 + HW, dim)
    return table.float()


class MaskedTokenDecoder(nn.Module):
    """MAE decoder: encoded visible tokens + mask tokens -> pixels of every patch.

    Args:
        in_dim: encoder width.
        grid: (rows, columns) of the patch grid (L = rows * columns patches).
        patch_dim: values predicted per patch (``patch_size ** 2 * 3``).
        dim: decoder width (512 in the paper).
        depth: Transformer blocks (8 in the paper).
        heads: attention heads (16 in the paper).
        mlp_ratio: hidden width of the blocks' MLP over ``dim``.
    """

    def __init__(
        self,
        in_dim: int,
        grid: tuple[int, int],
        patch_dim: int,
        dim: int = 512,
        depth: int = 8,
        heads: int = 16,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        self.embed = nn.Linear(in_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.register_buffer("pos_embed", sincos_pos_embed_2d(dim, grid, cls_token=True)[None])
        norm = partial(nn.LayerNorm, eps=1e-6)
        self.blocks = nn.ModuleList(
            Block(dim, heads, mlp_ratio, qkv_bias=True, norm_layer=norm) for _ in range(depth)
        )
        self.norm = norm(dim)
        self.pred = nn.Linear(dim, patch_dim)
        nn.init.normal_(self.mask_token, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):  # the paper's initialisation (appendix A.1)
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, tokens: Tensor, restore: Tensor) -> Tensor:
        """Predict every patch from the encoded class token and visible patches.

        Args:
            tokens: (B, 1 + K, in_dim) encoder output: class token, then the K visible patches in
                the shuffled order of :func:`selfsup.views.masking.random_patch_mask`.
            restore: (B, L) the mask's inverse permutation.

        Returns:
            (B, L, patch_dim) predictions in image order (class token dropped).
        """
        x = self.embed(tokens)  # (B, 1 + K, dim)
        b, length = restore.shape
        masks = self.mask_token.expand(b, length - x.shape[1] + 1, -1)  # (B, L - K, dim)
        patches = torch.cat([x[:, 1:], masks], dim=1)  # (B, L, dim), shuffled order
        index = restore[..., None].expand(-1, -1, x.shape[2])  # (B, L, dim)
        patches = patches.gather(1, index)  # (B, L, dim), image order
        x = torch.cat([x[:, :1], patches], dim=1) + self.pos_embed  # (B, 1 + L, dim)
        for block in self.blocks:
            x = block(x)
        return self.pred(self.norm(x))[:, 1:]  # (B, L, patch_dim)


class ChannelwiseFC(nn.Module):
    """Fully connected within each channel: every output position sees its channel's whole map.

    Pathak et al. 2016 (section 3.1) join encoder and decoder this way instead of a full layer
    (``C * (hw)^2`` weights rather than ``(C * hw)^2``), then mix channels with a 1x1 convolution;
    both are done here.

    Args:
        channels: C.
        size: (h, w) of the feature map.
    """

    def __init__(self, channels: int, size: tuple[int, int]) -> None:
        super().__init__()
        positions = size[0] * size[1]
        self.size = size
        bound = 1 / math.sqrt(positions)  # nn.Linear's default initialisation, per channel
        self.weight = nn.Parameter(
            torch.empty(channels, positions, positions).uniform_(-bound, bound)
        )
        self.bias = nn.Parameter(torch.zeros(channels, positions))
        self.mix = nn.Conv2d(channels, channels, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, C, h, w) -> (B, C, h, w)."""
        flat = x.flatten(2)  # (B, C, hw)
        # b batch, c channel, p input position, q output position
        out = torch.einsum("bcp,cpq->bcq", flat, self.weight) + self.bias  # (B, C, hw)
        return self.mix(out.view_as(x))  # (B, C, h, w)


class UpConvDecoder(nn.Sequential):
    """Up-convolutions from an ``in_size`` feature map to an ``out_size`` output map.

    ``floor(log2(out_size / in_size))`` transposed convolutions (kernel 4, stride 2) with batch norm
    and ReLU double the side each; the first has ``width`` channels and each next one half as many
    (at least 32). A 3x3 convolution then gives ``out_channels``, and a bilinear resize covers a
    ratio that is not a power of two.

    Args:
        in_channels: channels of the feature map.
        in_size: its side.
        out_channels: channels of the output.
        out_size: side of the output.
        width: channels of the first up-convolution.
    """

    def __init__(
        self, in_channels: int, in_size: int, out_channels: int, out_size: int, width: int = 256
    ) -> None:
        if out_size < in_size:
            raise ValueError(f"cannot up-sample a {in_size} px map to {out_size} px")
        layers: list[nn.Module] = []
        channels, side = in_channels, in_size
        while side * 2 <= out_size:
            layers += [
                nn.ConvTranspose2d(channels, width, kernel_size=4, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
            ]
            channels, side, width = width, side * 2, max(32, width // 2)
        layers.append(nn.Conv2d(channels, out_channels, kernel_size=3, padding=1))
        super().__init__(*layers)
        self.out_size = out_size

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, in_channels, in_size, in_size) -> (B, out_channels, out_size, out_size)."""
        out = super().forward(x)
        if out.shape[-1] != self.out_size:
            out = F.interpolate(out, size=self.out_size, mode="bilinear", align_corners=False)
        return out


def feature_map(backbone: VisionBackbone, x: Tensor) -> Tensor:
    """The backbone's last spatial features, before pooling.

    Args:
        backbone: a ResNet (convolutional map) or a ViT (patch tokens, reshaped to their grid).
        x: (B, 3, H, W) normalised images.

    Returns:
        (B, C, h, w) features.
    """
    model = backbone.model
    if backbone.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    features = model.forward_features(x)
    if features.ndim == 4:
        return features  # (B, C, h, w)
    rows, cols = model.patch_embed.grid_size
    tokens = features[:, model.num_prefix_tokens :]  # (B, h*w, C)
    return tokens.transpose(1, 2).reshape(x.shape[0], -1, rows, cols)  # (B, C, h, w)


def feature_map_shape(backbone: VisionBackbone, image_size: int) -> tuple[int, int]:
    """(channels, side) of :func:`feature_map` for square images of ``image_size``."""
    probe = torch.zeros(1, 3, image_size, image_size)
    was_training = backbone.training
    backbone.eval()  # batch norm cannot run in training mode on one sample
    with torch.no_grad():
        shape = feature_map(backbone, probe).shape
    backbone.train(was_training)
    return shape[1], shape[2]
