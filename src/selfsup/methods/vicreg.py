"""VICReg: variance-invariance-covariance regularisation of two views' embeddings.

Bardes, Ponce, LeCun. "VICReg: Variance-Invariance-Covariance Regularization for Self-Supervised
Learning". ICLR 2022. https://arxiv.org/abs/2105.04906

Algorithm (paper, section 3 and algorithm 1): two views -> encoder -> expander -> embeddings Z, Z';
loss ``lambda s(Z, Z') + mu [v(Z) + v(Z')] + nu [c(Z) + c(Z')]``: mean squared distance between
the views, a hinge keeping each dimension's standard deviation above 1, and the squared
off-diagonal covariances. Variance and covariance are taken over the global batch.

Paper defaults, used here:
    augmentation: BYOL's asymmetric pair (crop scale 0.08-1, blur p=1.0 / 0.1, solarisation
        p=0 / 0.2, colour jitter (0.4, 0.4, 0.2, 0.1) p=0.8, grayscale p=0.2). At 64 px or less
        the blur is off (a 10 % kernel is a few pixels; SimCLR drops it on CIFAR-10 too).
    expander: 3 linear layers of 8192 (BN + ReLU between); ``proj_hidden_dim`` defaults to
        ``proj_dim``, as the paper keeps every layer the same width.
    lambda = mu = 25, nu = 1; variance hinge gamma 1 with epsilon 1e-4; float32.
    optimizer: LARS, lr 0.2 x batch / 256, weight decay 1e-6, biases and batch-norm parameters
        excluded from LARS and weight decay; warm-up + cosine.
"""

from __future__ import annotations

from torch import Tensor

from selfsup.heads import ProjectionHead
from selfsup.losses.redundancy import vicreg_loss
from selfsup.methods.base import OptimDefaults, register_method
from selfsup.methods.image import ImageMethod
from selfsup.views.multicrop import MultiCrop


@register_method(
    "vicreg", "VICReg (Bardes et al. 2022): invariance + variance + covariance regularisation"
)
class VICReg(ImageMethod):
    """VICReg on images. Batches: ``{"image": uint8 (B, 3, S, S)}``.

    Args:
        backbone: vision backbone name.
        image_size: side S of the input images; views are cropped back to S.
        proj_dim: output dimension of the expander.
        proj_hidden_dim: hidden width of the expander; None = ``proj_dim``.
        sim_coeff: lambda, weight of the invariance term.
        std_coeff: mu, weight of the variance terms.
        cov_coeff: nu, weight of the covariance terms.
        blur: Gaussian blur in the views; None picks on for images larger than 64 px.
    """

    kind = "image"
    defaults = OptimDefaults(optimizer="lars", lr=0.2, weight_decay=1e-6, scale_lr=True)

    def __init__(
        self,
        backbone: str = "resnet18",
        image_size: int = 32,
        proj_dim: int = 8192,
        proj_hidden_dim: int | None = None,
        sim_coeff: float = 25.0,
        std_coeff: float = 25.0,
        cov_coeff: float = 1.0,
        blur: bool | None = None,
    ) -> None:
        super().__init__()
        self.setup_encoder(backbone, image_size)
        hidden = proj_hidden_dim or proj_dim
        self.projector = ProjectionHead(self.backbone.dim, hidden, proj_dim, num_layers=3)
        self.views = MultiCrop.byol(image_size, blur=blur if blur is not None else image_size > 64)
        self.sim_coeff = sim_coeff
        self.std_coeff = std_coeff
        self.cov_coeff = cov_coeff

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        (views,) = self.views(batch["image"])  # (2B, 3, S, S): view 1 of every image, then view 2
        # One pass over both views: the backbone's batch norm sees all 2B images.
        z1, z2 = self.projector(self.backbone(views)).chunk(2)  # (B, proj_dim) each
        return vicreg_loss(z1, z2, self.sim_coeff, self.std_coeff, self.cov_coeff)
