"""Context encoder: learn features by painting in a removed image region from its surroundings.

Pathak, Krähenbühl, Donahue, Darrell, Efros. "Context Encoders: Feature Learning by Inpainting".
CVPR 2016. https://arxiv.org/abs/1604.07379

Algorithm (sections 3.1-3.3): remove a region of the image and fill it with the dataset mean;
encode what is left; join encoder and decoder with a channel-wise fully-connected layer; decode
with up-convolutions to pixels; penalise the squared error on the removed region.

Paper defaults, used here:
    region (``mask``): the central square of a quarter of the area (side S/2), or ``random_blocks``:
        possibly overlapping blocks (side S/4 here) covering up to a quarter of the image.
    fill: the dataset mean. Inputs are normalised with the (ImageNet) mean and std, so the fill is
        0 in normalised units.
    overlap: the hole is smaller than the predicted region by a 4 px border at 128 px, and the
        border's loss weight is 10x (the authors' recipe); we scale the border with the image,
        ``round(4 * S / 128)`` px (1 px at 32 px, none at 16 px), unless ``overlap`` is given.
    output: tanh on pixels scaled to [-1, 1], the full image predicted, loss on the region only.
    optimizer: Adam, lr 2e-4, betas (0.5, 0.999), no weight decay (AdamW with weight decay 0).
Deviations:
    the adversarial loss (weight 0.001 beside 0.999 for reconstruction) is left out: it needs a
        discriminator with its own optimizer step, which the engine's single-objective loop does not
        have; the paper's L2-only context encoder is the variant implemented.
    the encoder is our backbone's last feature map (ResNet or ViT patch grid) instead of AlexNet's
        pool5, and the decoder up-samples to the whole image rather than to the region alone.
    augmentation is not specified in the paper: random resized crop (area 0.5-1) and flip.
"""

from __future__ import annotations

import torch
from torch import Tensor

from selfsup.methods.base import OptimDefaults, register_method
from selfsup.methods.decoders import ChannelwiseFC, UpConvDecoder, feature_map, feature_map_shape
from selfsup.methods.image import ImageMethod
from selfsup.views import random_resized_crop, to_float
from selfsup.views.masking import center_mask, random_block_mask, shrink_mask


def inpainting_loss(
    pred: Tensor, target: Tensor, region: Tensor, hole: Tensor, overlap_weight: float = 10.0
) -> Tensor:
    """Weighted mean squared error over the predicted region.

    Args:
        pred: (B, C, H, W) predicted pixels.
        target: (B, C, H, W) true pixels.
        region: (B, 1, H, W) bool, True = predicted (the only pixels that count).
        hole: (B, 1, H, W) bool, True = removed from the input; a subset of ``region``. Region
            pixels outside the hole (the overlap border) weigh ``overlap_weight``, hole pixels 1.
        overlap_weight: weight of the overlap border.

    Returns:
        Scalar: ``sum(w * mean_c (pred - target)^2) / sum(w)``.
    """
    with torch.autocast(pred.device.type, enabled=False):
        error = (pred.float() - target.float()).pow(2).mean(dim=1, keepdim=True)  # (B, 1, H, W)
        border = torch.full_like(error, overlap_weight)
        weight = torch.where(hole, torch.ones_like(error), border) * region  # (B, 1, H, W)
        return (error * weight).sum() / weight.sum()


@register_method("inpainting", "Context encoder (Pathak et al. 2016): inpaint a removed region, L2")
class ContextEncoder(ImageMethod):
    """Context-encoder inpainting on images. Batches: ``{"image": uint8 (B, 3, S, S)}``.

    Args:
        backbone: vision backbone name (ResNet or ViT).
        image_size: side S of the input images.
        mask: ``"center"`` (central square) or ``"random_blocks"``.
        overlap: overlap border in pixels; None = ``round(4 * S / 128)``.
        overlap_weight: loss weight of the overlap border relative to the hole.
        decoder_width: channels of the first up-convolution (halved at each next one).
    """

    defaults = OptimDefaults(optimizer="adamw", lr=2e-4, weight_decay=0.0, betas=(0.5, 0.999))

    def __init__(
        self,
        backbone: str = "resnet18",
        image_size: int = 32,
        mask: str = "center",
        overlap: int | None = None,
        overlap_weight: float = 10.0,
        decoder_width: int = 256,
    ) -> None:
        super().__init__()
        if mask not in ("center", "random_blocks"):
            raise ValueError(f"mask must be 'center' or 'random_blocks', got {mask!r}")
        self.setup_encoder(backbone, image_size)
        channels, side = feature_map_shape(self.backbone, image_size)
        self.bottleneck = ChannelwiseFC(channels, (side, side))
        self.decoder = UpConvDecoder(channels, side, 3, image_size, decoder_width)
        self.image_size = image_size
        self.mask = mask
        self.overlap = round(4 * image_size / 128) if overlap is None else overlap
        self.overlap_weight = overlap_weight

    def regions(self, batch: int, device: torch.device) -> tuple[Tensor, Tensor]:
        """(region, hole), each (B, 1, S, S) bool: the predicted region and the removed hole."""
        if self.mask == "center":
            region = center_mask(batch, self.image_size, device)
        else:
            region = random_block_mask(batch, self.image_size, device=device)
        return region, shrink_mask(region, self.overlap)

    def inpaint(self, images: Tensor, hole: Tensor) -> Tensor:
        """Predict whole images from their context.

        Args:
            images: (B, 3, S, S) float in [0, 1].
            hole: (B, 1, S, S) bool, True = removed (filled with the mean).

        Returns:
            (B, 3, S, S) predicted pixels in [-1, 1].
        """
        context = to_float(images, self.preprocess.mean, self.preprocess.std).masked_fill(hole, 0.0)
        features = feature_map(self.backbone, context)  # (B, C, h, w)
        return torch.tanh(self.decoder(self.bottleneck(features)))

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        images = random_resized_crop(batch["image"], self.image_size, scale=(0.5, 1.0))
        region, hole = self.regions(images.shape[0], images.device)
        pred = self.inpaint(images, hole)  # (B, 3, S, S)
        loss = inpainting_loss(pred, 2 * images - 1, region, hole, self.overlap_weight)
        return {"loss": loss}
