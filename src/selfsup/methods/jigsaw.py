"""Jigsaw puzzles: learn features by recovering the permutation that shuffled nine image tiles.

Noroozi, Favaro. "Unsupervised Learning of Visual Representations by Solving Jigsaw Puzzles".
ECCV 2016. https://arxiv.org/abs/1603.09246

Algorithm: split a crop of the image into a 3x3 grid; from each cell take a
smaller tile at a jittered position (tiles are separated by gaps, so edges cannot be matched); normalise each tile on its own; shuffle the nine tiles by a permutation drawn from a
fixed set; a shared tile encoder (the "context-free network": weights shared over the 9 tiles, no
tile sees another) maps each tile to features, the nine feature vectors are concatenated in the
shuffled order, and an MLP classifies which permutation of the set was applied.

Paper defaults, used here:
    tiles: image resized to 256 and a random 225 crop split into 75 x 75 cells with a 64 x 64 tile
        per cell. We place the grid of ``3 * (S // 3)`` pixels at a random offset in the S-pixel
        image and take tiles of ``floor(cell * 64 / 75)``, made smaller where needed to leave 3
        spare pixels per cell (cells of 8 px or more). The paper places each tile anywhere in
        its cell, so two neighbours touch with probability 1/144 at its sizes; at ours that
        would happen in most puzzles. We centre each tile in its cell with a jitter of
        ``(spare - 1) // 2`` pixels, so that neighbouring tiles are always at least one pixel
        apart: 7-pixel tiles in 10-pixel cells with jitter 1 at 32 px (gaps of 1 to 5 pixels),
        4 in 5 with no jitter at 16 px.
    shortcut guards: per-tile mean and standard-deviation normalisation; 30% of the
        images in grey; the colour channels of each tile of colour images jittered by up to 2
        pixels (we scale it to the tile: ``round(2 * tile / 64)``, 0 for tiles under 16 px, where a
        pixel is a large fraction of the tile).
    permutation set: 100 permutations chosen greedily for large Hamming distance (Algorithm 1);
        see :mod:`selfsup.methods.permutations` for the selection criterion (ours keeps the
        paper's average distance and raises the minimum from 2 to 6). It is a buffer, so
        checkpoints carry it.
    head: the concatenated tile features (9 x 1024 in the paper) -> fc 4096 -> fc N. Our tile
        features are the backbone's pooled output (512 for ResNet-18, so no per-tile fc6), and the
        hidden layer has batch norm, as our other heads.
    optimizer: SGD, momentum 0.9, weight decay 5e-4, learning rate 0.01.
"""

from __future__ import annotations

import torch
from torch import Tensor

from selfsup.heads import ProjectionHead
from selfsup.losses.classification import classification_loss
from selfsup.methods.base import OptimDefaults, register_method
from selfsup.methods.image import ImageMethod
from selfsup.methods.permutations import hamming_permutations
from selfsup.views.patches import (
    crop_patches,
    grid_positions,
    jitter_channels,
    normalize_patches,
    to_gray,
)

GRID = 3  # tiles per side


def shuffle_tiles(tiles: Tensor, order: Tensor) -> Tensor:
    """Reorder the tiles of every sample: ``out[b, i] = tiles[b, order[b, i]]``.

    The inverse permutation ``order.argsort(dim=1)`` puts the tiles back.

    Args:
        tiles: (B, K, C, P, P).
        order: (B, K) int64, a permutation of ``range(K)`` per sample.

    Returns:
        (B, K, C, P, P).
    """
    index = order[:, :, None, None, None].expand_as(tiles)  # (B, K, C, P, P)
    return tiles.gather(1, index)


@register_method("jigsaw", "Jigsaw puzzles (Noroozi & Favaro 2016): classify the 3x3 tile shuffle")
class Jigsaw(ImageMethod):
    """Jigsaw puzzle solving. Batches: ``{"image": uint8 (B, 3, S, S)}``.

    Args:
        backbone: vision backbone name (a ResNet: tiles are far smaller than a ViT's patch grid).
        image_size: side S of the input images.
        num_permutations: size of the permutation set (the number of classes).
        permutation_seed: seed of the permutation set.
        permutation_criterion: ``"maximin"`` or ``"mean"`` (the paper's); see
            :func:`~selfsup.methods.permutations.hamming_permutations`.
        tile_size: tile side in pixels, below ``cell = S // 3``; None = ``floor(cell * 64 / 75)``,
            at most ``cell - 3`` for cells of 8 pixels or more (see the module docstring).
        gray_p: probability that an image is turned grey.
        channel_jitter: largest shift of a tile's colour channels in pixels; None = scaled from
            the paper's 2 pixels for 64-pixel tiles.
        head_hidden_dim: hidden width of the classifier MLP.
    """

    architectures = frozenset({"resnet"})
    defaults = OptimDefaults(
        optimizer="sgd", lr=0.01, weight_decay=5e-4, momentum=0.9, scale_lr=False
    )

    def __init__(
        self,
        backbone: str = "resnet18",
        image_size: int = 32,
        num_permutations: int = 100,
        permutation_seed: int = 0,
        permutation_criterion: str = "maximin",
        tile_size: int | None = None,
        gray_p: float = 0.3,
        channel_jitter: int | None = None,
        head_hidden_dim: int = 4096,
    ) -> None:
        super().__init__()
        self.setup_encoder(backbone, image_size)
        cell = image_size // GRID
        if tile_size is None:
            tile_size = cell * 64 // 75
            if cell >= 8:  # room for a jitter that keeps tiles apart
                tile_size = min(tile_size, cell - 3)
        self.tile_size = tile_size
        if not 1 <= self.tile_size < cell:
            raise ValueError(f"tile_size must be in [1, {cell - 1}], got {self.tile_size}")
        # centred jitter that keeps neighbouring tiles >= 1 pixel apart
        self.jitter = max(0, (cell - self.tile_size - 1) // 2)
        self.gray_p = gray_p
        self.channel_jitter = (
            round(2 * self.tile_size / 64) if channel_jitter is None else channel_jitter
        )
        perms = hamming_permutations(
            num_permutations, GRID * GRID, permutation_seed, permutation_criterion
        )
        self.register_buffer("permutations", perms)  # (N, 9) int64
        self.classifier = ProjectionHead(
            GRID * GRID * self.backbone.dim, head_hidden_dim, num_permutations
        )

    def puzzles(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Cut every image into nine tiles and shuffle them by a random permutation of the set.

        Args:
            images: (B, 3, S, S) uint8.

        Returns:
            (tiles, labels): tiles (B, 9, 3, T, T) float32 in [0, 1], not yet normalised, in
            shuffled order (tile i comes from grid cell ``permutations[labels[b], i]``, cells in
            raster order); labels (B,) int64 indices into ``self.permutations``.
        """
        b, side, device, t = images.shape[0], images.shape[-1], images.device, self.tile_size
        x = images.float() / 255.0  # (B, 3, S, S)
        gray = torch.rand(b, device=device) < self.gray_p  # (B,) True = grey image
        x = to_gray(x, gray)
        top, left = grid_positions(b, side, t, GRID, self.jitter, device=device)  # (B, 9) each
        if self.channel_jitter > 0:  # colour images only: a grey image has no aberration
            top_c, left_c = jitter_channels(top, left, self.channel_jitter, side, t)
            colour = ~gray[:, None, None]
            top = torch.where(colour, top_c, top[..., None])  # (B, 9, 3)
            left = torch.where(colour, left_c, left[..., None])  # (B, 9, 3)
        tiles = crop_patches(x, top, left, t)  # (B, 9, 3, T, T)
        labels = torch.randint(len(self.permutations), (b,), device=device)  # (B,)
        return shuffle_tiles(tiles, self.permutations[labels]), labels

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        tiles, labels = self.puzzles(batch["image"])  # (B, 9, 3, T, T), (B,)
        b = tiles.shape[0]
        # All 9B tiles in one pass of the shared encoder; no tile sees another.
        feats = self.backbone(normalize_patches(tiles).flatten(0, 1))  # (9B, D)
        logits = self.classifier(feats.view(b, -1))  # (B, 9 * D) in shuffled order -> (B, N)
        return classification_loss(logits, labels)
