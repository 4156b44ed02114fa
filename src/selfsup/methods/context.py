"""Context prediction: learn features by predicting where a patch lies relative to another.

Doersch, Gupta, Efros. "Unsupervised Visual Representation Learning by Context Prediction".
ICCV 2015. https://arxiv.org/abs/1505.05192

Algorithm: on a 3x3 grid of patches separated by gaps, take the centre patch
and one of its 8 neighbours; each patch is jittered by a few pixels so that lines cannot be
continued across the gap; both go through the same encoder ("late fusion": neither sees the
other), their features are concatenated and an MLP classifies the neighbour's position (8 ways).

Paper defaults, used here:
    patches: 96 x 96 with gaps of 48 pixels and a jitter of up to 7 pixels per axis, on images
        resized to 150K-450K pixels. We use the whole S-pixel image as the grid: cells of
        ``S // 3`` pixels (96 + 48 = 144 in the paper), patches of ``round(cell * 96 / 144)`` and
        a jitter of ``max(1, round(cell * 7 / 144))`` pixels, capped so that patches never touch:
        7-pixel patches in 10-pixel cells with jitter 1 at 32 px (gaps of 1 to 5 pixels); 3 in 5
        with no jitter at 16 px.
    chromatic aberration guard: colour dropping (the default here): per patch, 2 of the 3
        channels are replaced by Gaussian noise with 1/100 of the kept channel's standard
        deviation; ``color="project"`` projects colours off the green-magenta axis instead.
    patches are normalised (per-channel mean, per-patch spread), as the authors' code does.
    pair positions: the paper samples patch pairs anywhere in a large image, so a patch's absolute
        position says nothing about its label. Our grid covers the whole small image, so we first
        take a random crop (area ``crop_scale``, aspect 3/4-4/3, resized back to S): without it
        label k would always come from the same image region and absolute-position cues
        (centred objects, vignetting) would give it away.
    head: per-patch fc6 (4096), concatenation, fc7 4096 (batch norm), fc8 4096, fc9 8. Our
        per-patch features are the backbone's pooled output, so no fc6; fc7-fc9 follow.
Deviations:
    the paper also down-samples a third of the patches to as few as 100 pixels against
        pixelation shortcuts; our patches are smaller than that, so we do not.
    optimizer: the paper trains a batch-normalised network with SGD; the authors' released code
        uses a fixed rate of 1e-5 on a loss *summed* over thousands of pairs, no weight decay,
        which does not carry over to a mean loss on a ResNet. We use the classic pretext recipe
        of the jigsaw paper instead: SGD, momentum 0.9, learning rate 0.01, weight decay 5e-4.
"""

from __future__ import annotations

import torch
from torch import Tensor

from selfsup.heads import ProjectionHead
from selfsup.losses.classification import classification_loss
from selfsup.methods.base import OptimDefaults, register_method
from selfsup.methods.image import ImageMethod
from selfsup.views.crop import random_resized_crop
from selfsup.views.patches import (
    crop_patches,
    drop_channels,
    grid_positions,
    normalize_patches,
    project_green_magenta,
)

GRID = 3
CENTRE = 4  # index of the centre cell in raster order
# (row, column) offset of the neighbour from the centre, per label: raster order without the centre.
NEIGHBOURS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))


@register_method(
    "relative_patch",
    "Context prediction (Doersch et al. 2015): classify a patch's position among 8 neighbours",
)
class RelativePatch(ImageMethod):
    """Relative patch location. Batches: ``{"image": uint8 (B, 3, S, S)}``.

    Args:
        backbone: vision backbone name (a ResNet: patches are far smaller than a ViT's grid).
        image_size: side S of the input images.
        patch_size: patch side in pixels; None = ``round(cell * 96 / 144)``, ``cell = S // 3``.
        jitter: largest jitter per axis in pixels; None = ``max(1, round(cell * 7 / 144))``,
            capped at ``(cell - patch_size - 1) // 2`` so that gaps stay >= 1 pixel.
        color: chromatic aberration guard: ``"drop"``, ``"project"`` or ``"none"``.
        noise: standard deviation of the dropped channels' noise, relative to the kept channel.
        head_hidden_dim: width of the two hidden layers of the classifier.
        crop_scale: area range of the random crop the grid is laid on (see the module docstring).
    """

    architectures = frozenset({"resnet"})
    defaults = OptimDefaults(
        optimizer="sgd", lr=0.01, weight_decay=5e-4, momentum=0.9, scale_lr=False
    )

    def __init__(
        self,
        backbone: str = "resnet18",
        image_size: int = 32,
        patch_size: int | None = None,
        jitter: int | None = None,
        color: str = "drop",
        noise: float = 0.01,
        head_hidden_dim: int = 4096,
        crop_scale: tuple[float, float] = (0.3, 1.0),
    ) -> None:
        super().__init__()
        if color not in ("drop", "project", "none"):
            raise ValueError(f"color must be 'drop', 'project' or 'none', got {color!r}")
        self.setup_encoder(backbone, image_size)
        cell = image_size // GRID
        self.patch_size = patch_size or round(cell * 96 / 144)
        if not 1 <= self.patch_size <= cell:
            raise ValueError(f"patch_size must be in [1, {cell}], got {self.patch_size}")
        if jitter is None:  # capped so that neighbouring patches never touch (gap >= 1 pixel)
            jitter = min(max(1, round(cell * 7 / 144)), (cell - self.patch_size - 1) // 2)
        self.jitter = jitter
        self.crop_scale = tuple(crop_scale)
        self.color = color
        self.noise = noise
        self.classifier = ProjectionHead(2 * self.backbone.dim, head_hidden_dim, 8, num_layers=3)

    def pairs(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """The centre patch and a random neighbour of every image, with the neighbour's label.

        Args:
            images: (B, 3, S, S) uint8.

        Returns:
            (patches, labels): patches (B, 2, 3, P, P) float32, centre first, in [0, 1] (off it
            after green-magenta projection), not yet normalised; labels (B,) int64 in [0, 8),
            the neighbour's offset being ``NEIGHBOURS[label]``.
        """
        b, side, device = images.shape[0], images.shape[-1], images.device
        if self.crop_scale[0] < 1.0:
            x = random_resized_crop(images, side, self.crop_scale, flip_p=0.0)  # (B, 3, S, S)
        else:  # (1, 1): the grid on the whole image
            x = images.float() / 255.0  # (B, 3, S, S) in [0, 1]
        if self.color == "project":
            x = project_green_magenta(x)
        top, left = grid_positions(
            b, side, self.patch_size, GRID, self.jitter, device=device
        )  # (B, 9) each
        labels = torch.randint(8, (b,), device=device)  # (B,)
        cells = torch.stack([torch.full_like(labels, CENTRE), labels + (labels >= CENTRE)], 1)
        top, left = top.gather(1, cells), left.gather(1, cells)  # (B, 2) each
        return crop_patches(x, top, left, self.patch_size), labels  # (B, 2, 3, P, P)

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        patches, labels = self.pairs(batch["image"])  # (B, 2, 3, P, P), (B,)
        patches = normalize_patches(patches)
        if self.color == "drop":
            patches = drop_channels(patches, self.noise)
        b = patches.shape[0]
        feats = self.backbone(patches.flatten(0, 1))  # (2B, D): one pass over both patches
        logits = self.classifier(feats.view(b, -1))  # (B, 2D) centre then neighbour -> (B, 8)
        return classification_loss(logits, labels)
