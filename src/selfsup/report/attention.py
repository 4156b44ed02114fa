"""Attention maps of a timm Vision Transformer: where the class token looks in the last block.

As in DINO's figure 1 (Caron et al. 2021): the softmax attention of the [CLS] query over the
patch tokens in the last block, averaged over heads, upsampled to the image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def vit_blocks(model: nn.Module) -> nn.Module | None:
    """The blocks of a timm ViT whose attention we can read, else None."""
    blocks = getattr(model, "blocks", None)
    if blocks is None or len(blocks) == 0:
        return None
    attn = getattr(blocks[-1], "attn", None)
    if attn is None or not hasattr(attn, "qkv") or not hasattr(attn, "num_heads"):
        return None
    return blocks


@torch.no_grad()
def cls_attention(model: nn.Module, images: Tensor) -> Tensor | None:
    """``(B, H, W)`` attention of [CLS] to each patch in the last block, scaled to [0, 1] per
    image and resized to the input; None when ``model`` is not a timm ViT with a class token.

    Args:
        model: a timm VisionTransformer.
        images: (B, 3, H, W) normalised images.
    """
    blocks = vit_blocks(model)
    prefix = int(getattr(model, "num_prefix_tokens", 0))
    if blocks is None or prefix < 1 or getattr(model, "cls_token", None) is None:
        return None
    attn = blocks[-1].attn
    captured: list[Tensor] = []
    handle = blocks[-1].norm1.register_forward_hook(lambda m, i, out: captured.append(out))
    try:
        model(images)
    finally:
        handle.remove()
    x = captured[0].float()  # (B, N, D): the input of the last attention
    b, n, d = x.shape
    heads = attn.num_heads
    bias = None if attn.qkv.bias is None else attn.qkv.bias.float()
    qkv = F.linear(x, attn.qkv.weight.float(), bias)  # (B, N, 3 D)
    q, k, _ = qkv.reshape(b, n, 3, heads, d // heads).permute(2, 0, 3, 1, 4)  # (B, h, N, d/h)
    q = attn.q_norm(q) if hasattr(attn, "q_norm") else q
    k = attn.k_norm(k) if hasattr(attn, "k_norm") else k
    scale = float(getattr(attn, "scale", (d // heads) ** -0.5))
    weights = ((q[:, :, :1] @ k.transpose(-2, -1)) * scale).softmax(dim=-1)  # (B, h, 1, N)
    cls = weights[:, :, 0, prefix:].mean(dim=1)  # (B, patches)
    side = int(round((n - prefix) ** 0.5))
    if side * side != n - prefix:
        return None
    maps = cls.reshape(b, 1, side, side)
    maps = F.interpolate(maps, size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    low = maps.flatten(1).min(dim=1).values[:, None, None]
    high = maps.flatten(1).max(dim=1).values[:, None, None]
    return (maps - low) / (high - low).clamp_min(1e-12)
