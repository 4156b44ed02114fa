"""RotNet: learn features by predicting which of four rotations was applied to an image.

Gidaris, Singh, Komodakis. "Unsupervised Representation Learning by Predicting Image Rotations".
ICLR 2018. https://arxiv.org/abs/1803.07728

Algorithm: every image of the batch is presented in all four rotations (0, 90, 180 and 270
degrees) in the same batch, which the paper finds better than one random rotation per image; the
network classifies the rotation: 4-way cross entropy over the 4B inputs.

Paper defaults (CIFAR-10 experiments), used here:
    views: the four rotations of a lightly augmented image, random crop and horizontal flip only.
        We use the usual CIFAR crop, a translation by up to ``image_size // 8`` pixels (4 at
        32 px) with zero padding.
    optimizer: SGD, momentum 0.9, weight decay 5e-4, learning rate 0.1 (for batches of 128
        images, i.e. 512 rotated inputs), not scaled with the batch. The paper divides the rate
        by 5 at epochs 30, 60 and 80 of 100 and uses Nesterov momentum; the engine's schedule is
        warm-up plus cosine and its SGD has plain momentum.
Deviation: the paper's classifier on RotNet (a network-in-network) is its last conv block followed
by global average pooling and a linear layer. Our backbones end in pooled features, so the head is
a linear layer on them (``head_layers=1``: the backbone's last stage plays the paper's last block),
or an MLP with ``head_layers >= 2``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from selfsup.heads import ProjectionHead
from selfsup.losses.classification import classification_loss
from selfsup.methods.base import OptimDefaults, register_method
from selfsup.methods.image import ImageMethod
from selfsup.views import to_float
from selfsup.views.patches import random_crop


def rotate_batch(images: Tensor) -> tuple[Tensor, Tensor]:
    """All four rotations of every image, and their labels.

    Args:
        images: (B, C, S, S) square images.

    Returns:
        (rotated, labels): rotated (4B, C, S, S), rotation-major: rows ``k * B + i`` hold image i
        rotated by ``k * 90`` degrees counter-clockwise (``torch.rot90`` with ``k``); labels (4B,)
        int64, ``k`` for those rows.
    """
    b = images.shape[0]
    rotated = torch.cat([torch.rot90(images, k, dims=(2, 3)) for k in range(4)])  # (4B, C, S, S)
    labels = torch.arange(4, device=images.device).repeat_interleave(b)  # (4B,)
    return rotated, labels


@register_method("rotation", "RotNet (Gidaris et al. 2018): classify 0/90/180/270-degree rotations")
class Rotation(ImageMethod):
    """Rotation prediction. Batches: ``{"image": uint8 (B, 3, S, S)}``.

    Args:
        backbone: vision backbone name (see ``selfsup list``).
        image_size: side S of the input images.
        head_layers: linear layers of the rotation classifier (1 = linear on pooled features).
        head_hidden_dim: hidden width when ``head_layers >= 2``; None = the backbone's width.
        padding: translation range of the crop in pixels; None = ``image_size // 8``.
    """

    defaults = OptimDefaults(
        optimizer="sgd", lr=0.1, weight_decay=5e-4, momentum=0.9, scale_lr=False
    )

    def __init__(
        self,
        backbone: str = "resnet18",
        image_size: int = 32,
        head_layers: int = 1,
        head_hidden_dim: int | None = None,
        padding: int | None = None,
    ) -> None:
        super().__init__()
        self.setup_encoder(backbone, image_size)
        dim = self.backbone.dim
        self.classifier = ProjectionHead(dim, head_hidden_dim or dim, 4, num_layers=head_layers)
        self.padding = image_size // 8 if padding is None else padding

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        images = random_crop(batch["image"], self.padding)  # (B, 3, S, S) in [0, 1]
        rotated, labels = rotate_batch(to_float(images))  # (4B, 3, S, S), (4B,)
        # One pass over the four rotations: batch-norm statistics cover all of them, as in the
        # paper's batches that hold every rotation of each image.
        return classification_loss(self.classifier(self.backbone(rotated)), labels)
