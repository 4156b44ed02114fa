"""MAE: masked autoencoders that reconstruct the pixels of randomly removed patches.

He, Chen, Xie, Li, Dollár, Girshick. "Masked Autoencoders Are Scalable Vision Learners". CVPR 2022.
https://arxiv.org/abs/2111.06377

Algorithm (section 3): cut the image into L patches and remove a random 75% of them per sample;
a ViT encoder sees only the visible patches (with their positional embeddings); a lightweight
Transformer decoder receives the encoded patches plus a shared, learned mask token in every removed
position, adds positional embeddings again and predicts the pixels of every patch; the loss is the
mean squared error over the removed patches only.

Paper defaults, used here:
    mask ratio 0.75, uniform per-sample masking by sorting random noise.
    targets: per-patch normalised pixels (``norm_pix_loss``: each target patch minus its mean,
        divided by the square root of its variance + 1e-6; section 3 and table 1c).
    positional embeddings: fixed 2-D sine-cosine in the decoder and in the encoder (appendix A.1):
        the timm ViT's learned ``pos_embed`` is overwritten with them and frozen.
    decoder: 8 blocks, width 512, 16 heads, Xavier-uniform linear layers (appendix A.1). For images
        of 64 px or less (ViT-Ti with 4 px patches) we default to 2 blocks, width 256, 8 heads:
        per token that costs 0.3x the ViT-Ti encoder, as the paper's decoder does beside ViT-B (the
        paper's own would cost 4.7x), and table 1a,b shows that shallower and narrower decoders
        fine-tune as well (linear probing loses some accuracy).
    augmentation: random resized crop (scale 0.2-1) and horizontal flip only (our crop resizes
        bilinearly, the paper's bicubically).
    optimizer: AdamW, betas (0.9, 0.95), lr 1.5e-4 x batch / 256, weight decay 0.05, warm-up then
        cosine decay (appendix A.1).
Deviation: the encoder keeps timm's ViT initialisation (truncated normal, std 0.02) rather than
    the paper's Xavier-uniform; only the decoder, which is ours, is initialised as in the paper.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from selfsup.methods.base import BuildContext, OptimDefaults, register_method
from selfsup.methods.decoders import MaskedTokenDecoder, sincos_pos_embed_2d
from selfsup.methods.image import ImageMethod
from selfsup.views import ViewAugment
from selfsup.views.masking import random_patch_mask


def patchify(images: Tensor, patch: int) -> Tensor:
    """(B, C, H, W) -> (B, L, patch * patch * C), patches row by row, pixels (row, column, C)."""
    b, c, h, w = images.shape
    x = images.reshape(b, c, h // patch, patch, w // patch, patch)  # (B, C, gh, p, gw, p)
    x = x.permute(0, 2, 4, 3, 5, 1)  # (B, gh, gw, p, p, C)
    return x.reshape(b, (h // patch) * (w // patch), patch * patch * c)  # (B, L, p*p*C)


def unpatchify(patches: Tensor, patch: int, size: int) -> Tensor:
    """Inverse of :func:`patchify` for square images: (B, L, p*p*C) -> (B, C, size, size)."""
    b, _, dim = patches.shape
    g, c = size // patch, dim // (patch * patch)
    x = patches.reshape(b, g, g, patch, patch, c)  # (B, gh, gw, p, p, C)
    return x.permute(0, 5, 1, 3, 2, 4).reshape(b, c, size, size)  # (B, C, gh*p, gw*p)


def normalise_patches(patches: Tensor, eps: float = 1e-6) -> tuple[Tensor, Tensor, Tensor]:
    """Per-patch normalisation of MAE's targets.

    Args:
        patches: (B, L, P) pixel values.
        eps: added to the variance.

    Returns:
        ``(normalised, mean, std)`` with mean and std (B, L, 1) over each patch's P values (the
        biased variance) and ``normalised = (patches - mean) / std``, ``std = sqrt(var + eps)``.
    """
    mean = patches.mean(dim=-1, keepdim=True)  # (B, L, 1)
    std = (patches.var(dim=-1, keepdim=True, unbiased=False) + eps).sqrt()  # (B, L, 1)
    return (patches - mean) / std, mean, std


def mae_loss(pred: Tensor, target: Tensor, mask: Tensor, norm_pix: bool = True) -> Tensor:
    """MSE over the masked patches only (He et al. 2022, section 3).

    Args:
        pred: (B, L, P) predicted patches.
        target: (B, L, P) image patches (normalised images, see :func:`patchify`).
        mask: (B, L) bool, True = masked (the only patches that count).
        norm_pix: predict per-patch normalised pixels (:func:`normalise_patches`).

    Returns:
        Scalar: the mean over masked patches of the mean squared error over each patch's values.
    """
    with torch.autocast(pred.device.type, enabled=False):
        pred, target = pred.float(), target.float()
        if norm_pix:
            target = normalise_patches(target)[0]
        per_patch = (pred - target).pow(2).mean(dim=-1)  # (B, L)
        weight = mask.float()  # (B, L)
        return (per_patch * weight).sum() / weight.sum()


@register_method(
    "mae", "MAE (He et al. 2022): ViT encodes 25% of patches, decoder predicts the rest"
)
class MAE(ImageMethod):
    """Masked autoencoder on images. Batches: ``{"image": uint8 (B, 3, S, S)}``.

    Args:
        backbone: a ViT backbone name (e.g. ``vit_tiny_patch4`` for 32 px images).
        image_size: side S of the input images.
        mask_ratio: fraction of patches removed per sample.
        norm_pix_loss: regress per-patch normalised pixels.
        decoder_dim: decoder width; None = 512, or 256 for images of 64 px or less.
        decoder_depth: decoder blocks; None = 8, or 2 for images of 64 px or less.
        decoder_heads: decoder attention heads; None = 16, or 8 for images of 64 px or less.
    """

    defaults = OptimDefaults(
        optimizer="adamw", lr=1.5e-4, weight_decay=0.05, scale_lr=True, betas=(0.9, 0.95)
    )
    architectures = frozenset({"vit"})

    def __init__(
        self,
        backbone: str = "vit_tiny_patch4",
        image_size: int = 32,
        mask_ratio: float = 0.75,
        norm_pix_loss: bool = True,
        decoder_dim: int | None = None,
        decoder_depth: int | None = None,
        decoder_heads: int | None = None,
    ) -> None:
        super().__init__()
        small = image_size <= 64
        try:
            self.setup_encoder(backbone, image_size)
        except ValueError as error:
            raise ValueError(
                f"{error}. MAE masks the patches of a Vision Transformer: use a ViT backbone, "
                "e.g. backbone='vit_tiny_patch4' for 32 px images"
            ) from error
        vit = self.backbone.model
        if vit.cls_token is None or vit.num_prefix_tokens != 1 or vit.no_embed_class:
            raise ValueError(
                f"MAE needs a ViT with one class token and no register tokens: {backbone}"
            )
        self.grid: tuple[int, int] = tuple(vit.patch_embed.grid_size)
        self.patch: int = vit.patch_embed.patch_size[0]
        with torch.no_grad():  # fixed sin-cos positions in the encoder too (appendix A.1)
            vit.pos_embed.copy_(sincos_pos_embed_2d(self.backbone.dim, self.grid, True)[None])
        vit.pos_embed.requires_grad_(False)
        self.decoder = MaskedTokenDecoder(
            self.backbone.dim,
            self.grid,
            self.patch * self.patch * 3,
            dim=decoder_dim or (256 if small else 512),
            depth=decoder_depth or (2 if small else 8),
            heads=decoder_heads or (8 if small else 16),
        )
        patches = self.grid[0] * self.grid[1]
        if not 0.0 <= mask_ratio < 1.0 or patches - round(mask_ratio * patches) < 1:
            raise ValueError(f"mask_ratio must be in [0, 1) and leave one of the {patches} "
                             f"patches visible, got {mask_ratio}")  # fmt: skip
        self.mask_ratio = mask_ratio
        self.norm_pix_loss = norm_pix_loss
        self.augment = ViewAugment(
            image_size, scale=(0.2, 1.0), jitter_p=0.0, gray_p=0.0, blur_p=0.0
        )

    @classmethod
    def build(cls, ctx: BuildContext, **kwargs: Any) -> MAE:
        return cls(backbone=cls.backbone_for(ctx), image_size=ctx.image_size, **kwargs)

    @classmethod
    def backbone_for(cls, ctx: BuildContext) -> str | None:
        """``ctx.backbone``, else ViT-Tiny with 4-pixel patches up to 64 px, ViT-Base/16 above."""
        default = "vit_tiny_patch4" if ctx.image_size <= 64 else "vit_base_patch16_224"
        return ctx.backbone or default

    def encode_visible(self, images: Tensor, keep: Tensor) -> Tensor:
        """Encode only the visible patches.

        Args:
            images: (B, 3, S, S) normalised images.
            keep: (B, K) indices of the visible patches.

        Returns:
            (B, 1 + K, D) the class token then the K visible patches, after the final norm.
        """
        vit = self.backbone.model
        x = vit.patch_embed(images) + vit.pos_embed[:, 1:]  # (B, L, D)
        x = x.gather(1, keep[..., None].expand(-1, -1, x.shape[2]))  # (B, K, D)
        cls = (vit.cls_token + vit.pos_embed[:, :1]).expand(x.shape[0], -1, -1)  # (B, 1, D)
        x = vit.norm_pre(vit.pos_drop(torch.cat([cls, x], dim=1)))  # (B, 1 + K, D)
        return vit.norm(vit.blocks(x))

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        images = self.augment(batch["image"])  # (B, 3, S, S) normalised
        m = random_patch_mask(
            images.shape[0], self.grid[0] * self.grid[1], self.mask_ratio, images.device
        )
        pred = self.decoder(self.encode_visible(images, m.keep), m.restore)  # (B, L, P)
        return {"loss": mae_loss(pred, patchify(images, self.patch), m.mask, self.norm_pix_loss)}

    def report_panels(self, batch: dict[str, Tensor]) -> list[Any]:
        """The paper's figure 2: masked input, reconstruction and original of 8 images."""
        from selfsup.report.panels import Panel

        generator = torch.Generator(device=batch["image"].device).manual_seed(0)
        masked, recon, original = self.reconstruct(batch["image"][:8], generator)
        rows = {"masked": masked.cpu(), "reconstruction": recon.cpu(), "original": original.cpu()}
        caption = (
            f"{self.mask_ratio:.0%} of the patches masked at random; the reconstruction keeps "
            "the visible patches and shows the decoder's prediction for the masked ones."
        )
        return [Panel("Masked input, reconstruction, original", "images", rows, caption=caption)]

    @torch.no_grad()
    def reconstruct(
        self, images: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Mask, encode and decode evaluation views, for figures like the paper's figure 2.

        Args:
            images: (B, 3, S, S) uint8.
            generator: source of the masks' randomness.

        Returns:
            ``(masked_input, reconstruction, original)``, each (B, 3, S, S) float in [0, 1]: the
            masked patches of the input are shown in the normalisation mean's grey; the
            reconstruction keeps the visible patches and fills the masked ones with predictions,
            de-normalised with each target patch's own mean and std when ``norm_pix_loss``.
        """
        x = self.preprocess(images)  # (B, 3, S, S) normalised
        size = x.shape[-1]
        target = patchify(x, self.patch)  # (B, L, P)
        m = random_patch_mask(x.shape[0], target.shape[1], self.mask_ratio, x.device, generator)
        pred = self.decoder(self.encode_visible(x, m.keep), m.restore).float()  # (B, L, P)
        if self.norm_pix_loss:
            _, mean, std = normalise_patches(target)
            pred = pred * std + mean
        hidden = m.mask[..., None]  # (B, L, 1), True = masked
        masked = torch.where(hidden, torch.zeros_like(target), target)
        recon = torch.where(hidden, pred, target)
        mean = torch.tensor(self.preprocess.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.preprocess.std, device=x.device).view(1, 3, 1, 1)

        def to_pixels(patches: Tensor) -> Tensor:
            return (unpatchify(patches, self.patch, size) * std + mean).clamp(0.0, 1.0)

        return to_pixels(masked), to_pixels(recon), to_pixels(target)
