"""Colorization: learn features by predicting the colours of a grayscale image.

Zhang, Isola, Efros. "Colorful Image Colorization". ECCV 2016. https://arxiv.org/abs/1603.08511

Algorithm (section 2): convert the image to CIE Lab; from the lightness L alone, predict for every
pixel a distribution over quantised ab colours; the loss is the cross-entropy against soft-encoded
true colours, each pixel weighted by the rarity of its colour (class rebalancing).

Paper defaults, used here:
    ab bins of side 10 that sRGB colours reach (Q = 262 here, computed from the sRGB gamut in
        :mod:`selfsup.views.lab`; the paper keeps 313 from its own gamut estimate).
    soft encoding: the 5 nearest bins, Gaussian weights with sigma 5.
    rebalancing: ``w ∝ ((1 - λ) p̃ + λ / Q)^-1`` with λ = 0.5 and p̃ the empirical ab distribution
        smoothed with a Gaussian of sigma 5, normalised so that ``E_p̃[w] = 1``; a pixel weighs the
        ``w`` of its nearest bin. The paper measures p̃ on all of ImageNet beforehand; here p̃ is
        the histogram of every training target seen so far (a buffer, checkpointed and summed over
        processes), updated before each step's loss.
    prediction at a quarter of the input resolution (targets: ab averaged over 4x4 pixels).
    ``loss="regression"``: the paper's L2 baseline (eq. 1) on ab, in units of 1/110 so that the
        targets lie in [-1, 1].
    optimizer: Adam, lr 3e-5, betas (0.9, 0.99), weight decay 1e-3.
Deviations:
    encoder: the backbone's last feature map and an up-convolution head instead of the paper's
        VGG-style network with dilated convolutions; the loss is averaged over pixels, not summed.
    input: L / 50 - 1, replicated to 3 channels so that any backbone takes it.
    AdamW (decoupled weight decay 1e-3) stands in for Adam with an L2 penalty: the engine has no
        coupled-decay Adam.
    augmentation is not specified in the paper: random resized crop (area 0.5-1) and flip.

The encoder expects grayscale input: the CIE lightness L / 100 (D65) of the image, replicated to 3
channels and normalised with mean 0.5 and std 0.5. :meth:`Colorization.export` writes that mean and
std and an ``"input"`` entry describing it into ``config.json``.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from selfsup.methods.base import OptimDefaults, register_method
from selfsup.methods.decoders import UpConvDecoder, feature_map, feature_map_shape
from selfsup.methods.image import ImageEncoder, ImageMethod
from selfsup.views import EvalTransform, random_resized_crop
from selfsup.views.lab import ab_bins, nearest_bins, rgb_to_lab, soft_encode

AB_SCALE = 110.0  # |a|, |b| <= 110 for sRGB colours: regression targets / AB_SCALE in [-1, 1]
GRAY_INPUT = "CIE L* (D65) / 100 replicated to 3 channels, then (x - mean) / std"


def smoothed_prior(counts: Tensor, centres: Tensor, sigma: float = 5.0) -> Tensor:
    """Empirical bin distribution smoothed with a Gaussian kernel over the ab plane.

    Args:
        counts: (Q,) how often each bin was the nearest to a target colour.
        centres: (Q, 2) bin centres.
        sigma: kernel width in ab units.

    Returns:
        (Q,) probabilities ``p̃ ∝ sum_j exp(-|c_i - c_j|^2 / (2 sigma^2)) counts_j``.
    """
    kernel = torch.exp(-torch.cdist(centres, centres).pow(2) / (2 * sigma**2))  # (Q, Q)
    smooth = kernel @ counts.to(kernel.dtype)  # (Q,)
    return smooth / smooth.sum()


def rebalance_weights(prior: Tensor, lam: float = 0.5) -> Tensor:
    """Class-rebalancing weights ``w ∝ ((1 - λ) p̃ + λ / Q)^-1`` with ``sum_q p̃_q w_q = 1``.

    Args:
        prior: (Q,) smoothed bin distribution p̃.
        lam: weight λ of the uniform distribution mixed in.

    Returns:
        (Q,) weights.
    """
    weights = 1.0 / ((1 - lam) * prior + lam / prior.numel())  # (Q,)
    return weights / (prior * weights).sum()


def colorization_loss(logits: Tensor, targets: Tensor, pixel_weights: Tensor) -> Tensor:
    """Rebalanced multinomial cross-entropy (Zhang et al. 2016, eq. 2), averaged over pixels.

    Args:
        logits: (N, Q) predicted scores of the N pixels.
        targets: (N, Q) soft-encoded true colours, rows summing to 1.
        pixel_weights: (N,) rebalancing weight of each pixel.

    Returns:
        Scalar ``mean_n v_n * (-sum_q Z_nq log softmax(logits_n)_q)``.
    """
    with torch.autocast(logits.device.type, enabled=False):
        log_p = torch.log_softmax(logits.float(), dim=1)  # (N, Q)
        return (pixel_weights * -(targets * log_p).sum(dim=1)).mean()


def lightness_input(rgb: Tensor) -> Tensor:
    """(B, 3, H, W) sRGB in [0, 1] -> (B, 3, H, W) the encoder's input ``L / 50 - 1``, x3."""
    light = rgb_to_lab(rgb)[:, :1]  # (B, 1, H, W) in [0, 100]
    return (light / 50 - 1).expand(-1, 3, -1, -1)


@register_method("colorization", "Colorization (Zhang et al. 2016): ab classes from L, rebalanced")
class Colorization(ImageMethod):
    """Colourisation on images. Batches: ``{"image": uint8 (B, 3, S, S)}``.

    Args:
        backbone: vision backbone name (ResNet or ViT); it is fed grayscale input (see module).
        image_size: side S of the input images (a multiple of 4).
        loss: ``"classification"`` (rebalanced, soft-encoded) or ``"regression"`` (L2 on ab).
        grid: ab bin side.
        neighbours: bins of each soft-encoded target.
        sigma: Gaussian width of the soft encoding and of the prior's smoothing.
        rebalance: λ of the class-rebalancing weights (1 gives uniform weights).
        head_width: channels of the head's first up-convolution.
    """

    fp32_state = True  # the running ab histogram
    defaults = OptimDefaults(optimizer="adamw", lr=3e-5, weight_decay=1e-3, betas=(0.9, 0.99))

    def __init__(
        self,
        backbone: str = "resnet18",
        image_size: int = 32,
        loss: str = "classification",
        grid: int = 10,
        neighbours: int = 5,
        sigma: float = 5.0,
        rebalance: float = 0.5,
        head_width: int = 256,
    ) -> None:
        super().__init__()
        if loss not in ("classification", "regression"):
            raise ValueError(f"loss must be 'classification' or 'regression', got {loss!r}")
        if image_size % 4:
            raise ValueError(f"colourisation predicts at 1/4 resolution: {image_size} % 4 != 0")
        self.setup_encoder(backbone, image_size)
        self.preprocess = EvalTransform(image_size, mean=(0.0,) * 3, std=(1.0,) * 3)  # [0, 1]
        self.register_buffer("centres", ab_bins(grid))  # (Q, 2)
        q = self.centres.shape[0]
        # float64: a float32 count stops growing exactly after 2^24 pixels of one bin
        self.register_buffer("bin_counts", torch.zeros(q, dtype=torch.float64))
        channels, side = feature_map_shape(self.backbone, image_size)
        out = q if loss == "classification" else 2
        self.head = UpConvDecoder(channels, side, out, image_size // 4, head_width)
        self.image_size = image_size
        self.objective = loss
        self.neighbours = neighbours
        self.sigma = sigma
        self.rebalance = rebalance

    def predict(self, rgb: Tensor) -> Tensor:
        """(B, 3, S, S) sRGB in [0, 1] -> (B, Q or 2, S/4, S/4) ab logits or ab / 110."""
        return self.head(feature_map(self.backbone, lightness_input(rgb)))

    @torch.no_grad()
    def observe(self, nearest: Tensor) -> None:
        """Add target pixels' nearest bins (N,) to the running histogram, summed over processes."""
        counts = torch.bincount(nearest, minlength=self.bin_counts.numel()).to(self.bin_counts)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(counts)
        self.bin_counts += counts

    def pixel_weights(self, nearest: Tensor) -> Tensor:
        """(N,) rebalancing weights of pixels whose nearest bins are ``nearest`` (N,)."""
        seen = self.bin_counts.sum() > 0  # before any training step, a uniform prior
        counts = torch.where(seen, self.bin_counts, torch.ones_like(self.bin_counts))
        prior = smoothed_prior(counts, self.centres.double(), self.sigma)
        return rebalance_weights(prior, self.rebalance).float()[nearest]

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        rgb = random_resized_crop(batch["image"], self.image_size, scale=(0.5, 1.0))  # (B, 3, S, S)
        ab = F.avg_pool2d(rgb_to_lab(rgb)[:, 1:], 4)  # (B, 2, S/4, S/4)
        pred = self.predict(rgb)  # (B, Q or 2, S/4, S/4)
        if self.objective == "regression":
            with torch.autocast(pred.device.type, enabled=False):
                return {"loss": F.mse_loss(pred.float(), ab / AB_SCALE)}
        ab = ab.permute(0, 2, 3, 1).reshape(-1, 2)  # (N, 2), N = B * S/4 * S/4
        logits = pred.permute(0, 2, 3, 1).reshape(ab.shape[0], -1)  # (N, Q)
        nearest = nearest_bins(ab, self.centres)[1][:, 0]  # (N,)
        if self.training:
            self.observe(nearest)
        targets = soft_encode(ab, self.centres, self.neighbours, self.sigma)  # (N, Q)
        return {"loss": colorization_loss(logits, targets, self.pixel_weights(nearest))}

    @torch.no_grad()
    def embed(self, batch: dict[str, Tensor]) -> Tensor:
        """Pooled encoder features of the grayscale input it was trained on: (B, D)."""
        return self.backbone(lightness_input(self.preprocess(batch["image"])))

    def encoder_for_finetuning(self) -> ImageEncoder:
        """The backbone on the grayscale input it was trained on."""
        return ImageEncoder(self.preprocess, self.backbone, lightness_input)

    def export(self, path: Path) -> None:
        """Write the encoder; ``config.json`` records that it expects grayscale input."""
        # (L / 100 - 0.5) / 0.5 = L / 50 - 1
        self.backbone.export(path, (0.5,) * 3, (0.5,) * 3, extra={"input": GRAY_INPUT})
