"""MoCo v3: symmetric momentum contrast over the batch, with a predictor; stable for ViTs.

Chen, Xie, He. "An Empirical Study of Training Self-Supervised Vision Transformers". ICCV 2021.
https://arxiv.org/abs/2104.02057

Algorithm (paper, Algorithm 1): two views x1, x2; the base encoder (backbone, projector,
predictor) gives q1, q2, the momentum encoder (an EMA of backbone and projector) gives k1, k2;
loss ``ctr(q1, k2) + ctr(q2, k1)``, where ctr is InfoNCE over the keys of the whole (gathered)
batch, positives on the diagonal, multiplied by 2 tau. No memory queue.

Paper defaults, used here:
    projector: MLP, hidden 4096, output 256; predictor: 2-layer MLP 256 -> 4096 -> 256, batch
        norm after every hidden layer. The ViT setting (3-layer projector, "all layers in both
        MLPs have BN", so also on both outputs, without affine parameters) and the authors'
        ResNet-50 setting (2-layer projector with BN on its output, predictor without) differ;
        ``proj_layers=None`` picks by backbone family.
    momentum 0.99, raised to 1 on a cosine schedule.
    temperature: 0.2 for ViT, 1.0 for ResNet-50 (the paper's two recipes); ``None`` picks by
        backbone family.
    ViT: the patch projection stays at its random initialisation (frozen; section 4.2, "random
        patch projection"), which stabilises training.
    augmentation: BYOL's (asymmetric blur 1.0 / 0.1 and solarisation 0 / 0.2, crop scale 0.08-1;
        see :func:`selfsup.methods.byol.byol_views`); blur off for images of 64 px or less, as
        SimCLR does on CIFAR-10.
    optimizer: one recipe per class, so we take the ResNet one, matching the project's default
        ResNet backbones: LARS, lr 0.3 per 256 samples, weight decay 1e-6. The ViT recipe is
        AdamW, lr 1.5e-4 per 256 samples, weight decay 0.1, 40 warm-up epochs: set
        ``optim.name=adamw optim.lr=1.5e-4 optim.weight_decay=0.1`` with a ViT backbone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from selfsup.heads import ProjectionHead
from selfsup.losses import gather_no_grad, world_info
from selfsup.methods.base import OptimDefaults, register_method
from selfsup.methods.byol import byol_views
from selfsup.methods.image import ImageMethod, architecture
from selfsup.methods.momentum import cosine_momentum, ema_update, momentum_copy


def mocov3_contrastive(q: Tensor, k: Tensor, temperature: float) -> Tensor:
    """``ctr(q, k)`` of MoCo v3: InfoNCE of each query against the keys of the global batch,
    its positive being the key of the same image, multiplied by ``2 * temperature``.

    Under data parallelism the keys are gathered from every process (without gradient: they come
    from the momentum encoder), so the positive of local query i is global key ``rank * B + i``.

    Args:
        q: (B, D) queries.
        k: (B, D) keys, row i the positive of ``q[i]``.
        temperature: softmax temperature tau.

    Returns:
        Scalar loss.
    """
    with torch.autocast(q.device.type, enabled=False):  # logits / 0.2 in fp32, even under bf16
        q = F.normalize(q.float(), dim=1)
        keys = F.normalize(gather_no_grad(k.detach().float()), dim=1)  # (W*B, D)
        rank, _ = world_info()
        logits = q @ keys.T / temperature  # (B, W*B)
        labels = torch.arange(q.shape[0], device=q.device) + rank * q.shape[0]
        return F.cross_entropy(logits, labels) * 2 * temperature


@register_method("mocov3", "MoCo v3 (Chen, Xie, He 2021): symmetric momentum contrast, predictor")
class MoCoV3(ImageMethod):
    """MoCo v3 on images, ResNet or ViT. Batches: ``{"image": uint8 (B, 3, S, S)}``.

    Args:
        backbone: vision backbone name.
        image_size: side S of the input images.
        temperature: InfoNCE temperature; ``None`` picks 0.2 for a ViT, 1.0 for a ResNet.
        proj_hidden_dim: hidden width of the projector.
        proj_layers: linear layers of the projector; ``None`` = 3 for a ViT, 2 for a ResNet.
        proj_dim: output dimension of projector and predictor.
        pred_hidden_dim: hidden width of the predictor.
        base_momentum: momentum of the momentum encoder at step 0.
        freeze_patch_embed: keep a ViT's patch projection at its random initialisation.
        blur: Gaussian blur in the views; ``None`` picks on for images larger than 64 px.
    """

    fp32_state = True
    defaults = OptimDefaults(optimizer="lars", lr=0.3, weight_decay=1e-6, scale_lr=True)

    def __init__(
        self,
        backbone: str = "resnet18",
        image_size: int = 32,
        temperature: float | None = None,
        proj_hidden_dim: int = 4096,
        proj_dim: int = 256,
        pred_hidden_dim: int = 4096,
        proj_layers: int | None = None,
        base_momentum: float = 0.99,
        freeze_patch_embed: bool = True,
        blur: bool | None = None,
    ) -> None:
        super().__init__()
        self.setup_encoder(backbone, image_size)
        vit = architecture(self.backbone) == "vit"
        if vit and freeze_patch_embed:
            self.backbone.model.patch_embed.requires_grad_(False)
        self.temperature = temperature if temperature is not None else (0.2 if vit else 1.0)
        self.base_momentum = base_momentum
        dim = self.backbone.dim
        layers = proj_layers if proj_layers is not None else (3 if vit else 2)
        self.projector = ProjectionHead(
            dim, proj_hidden_dim, proj_dim, num_layers=layers, last_bn=True
        )
        self.predictor = ProjectionHead(proj_dim, pred_hidden_dim, proj_dim, last_bn=vit)
        self.momentum_backbone = momentum_copy(self.backbone)
        self.momentum_projector = momentum_copy(self.projector)
        self.augment1, self.augment2 = byol_views(
            image_size, blur if blur is not None else image_size > 64
        )

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        images = batch["image"]  # (B, 3, S, S) uint8
        views = torch.cat([self.augment1(images), self.augment2(images)])  # (2B, 3, S, S)
        # One pass over both views (as SimCLR here): batch-norm statistics cover all 2B views.
        q1, q2 = self.predictor(self.projector(self.backbone(views))).chunk(2)  # (B, D) each
        with torch.no_grad():
            k1, k2 = self.momentum_projector(self.momentum_backbone(views)).chunk(2)  # (B, D)
        t = self.temperature
        loss = mocov3_contrastive(q1, k2, t) + mocov3_contrastive(q2, k1, t)
        return {"loss": loss}

    def after_step(self, step: int, total_steps: int) -> None:
        m = cosine_momentum(step, total_steps, self.base_momentum)
        ema_update(self.momentum_backbone, self.backbone, m)
        ema_update(self.momentum_projector, self.projector, m)
