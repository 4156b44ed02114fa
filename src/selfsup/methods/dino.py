"""DINO: self-distillation with no labels, a momentum teacher and multi-crop.

Caron, Touvron, Misra, Jegou, Mairal, Bojanowski, Joulin. "Emerging Properties in Self-Supervised
Vision Transformers". ICCV 2021. https://arxiv.org/abs/2104.14294

Algorithm (paper, algorithm 1): the student (encoder + head) sees every crop, the teacher (an EMA
of the student) only the two global crops; the student's softmax at temperature 0.1 matches the
teacher's centred, sharpened softmax on every pair of different crops; the centre is an EMA of the
teacher's batch-mean output, updated after the loss.

Paper defaults, used here:
    backbone: ViT-S/16 (``vit_small_patch16_224``; ``vit_small_patch4`` at 64 px or less); ResNets
        work too (ResNet-50 in the paper, with batch norm in the head).
    multi-crop: 2 x S px (scale 0.4-1) with BYOL's asymmetric augmentation + 8 x 96/224 S px
        (scale 0.05-0.4); blur off at 64 px or less (a 10 % kernel is a few pixels).
    head: 3-layer MLP (2048 hidden, GELU, no BN for ViT), bottleneck 256, L2 normalisation, then a
        weight-normalised linear layer to 65536 whose norm g is fixed to 1 (i.e. unit-norm rows).
    teacher: EMA with momentum cosine from 0.996 to 1 over training.
    temperatures: student 0.1; teacher linear warm-up 0.04 -> 0.07 over the first 30 of 300
        epochs (``teacher_temp_warmup`` = 0.1 of the run), then 0.07. Centre momentum 0.9.
    last layer frozen during the first epoch (``freeze_last_layer_steps``; default one epoch when
        the data size is known, else 0): zero gradient, kept in DDP's graph, then dropped
        before the optimizer step (``frozen_parameters``) so that AdamW skips the layer and its
        moments start when the freeze ends, as in the reference code.
    optimizer: AdamW, lr 5e-4 x batch / 256, weight decay 0.04. The paper ramps the weight decay
        from 0.04 to 0.4 with a cosine schedule; our optimizer keeps it constant at 0.04. The
        paper also clips gradients at norm 3 (``optim.clip_grad`` in the run config).
Evaluation and export use the teacher's backbone, as the paper does (section 3.1: the teacher
performs better throughout training); ``evaluate_teacher=False`` uses the student's instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.backbones import VisionBackbone
from selfsup.losses.dino import dino_loss, teacher_temperature, updated_center
from selfsup.methods.base import BuildContext, OptimDefaults, register_method
from selfsup.methods.image import ImageEncoder, ImageMethod, architecture
from selfsup.methods.momentum import cosine_momentum, ema_update, momentum_copy
from selfsup.views.multicrop import MultiCrop, dynamic_size_backbone, local_crop_size, patch_size


class DINOHead(nn.Module):
    """MLP -> L2 normalisation -> weight-normalised linear layer with unit-norm rows.

    Args:
        in_dim: backbone feature dimension.
        out_dim: output dimension K.
        hidden_dim: width of the hidden layers.
        bottleneck_dim: output of the MLP, input of the last layer.
        num_layers: linear layers in the MLP (>= 2).
        batch_norm: batch norm after each hidden linear layer (ResNet setting).
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int = 65536,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        num_layers: int = 3,
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (num_layers - 1)
        layers: list[nn.Module] = []
        for d_in, d_out in zip(dims[:-1], dims[1:], strict=True):
            layers += [nn.Linear(d_in, d_out)]
            layers += [nn.BatchNorm1d(d_out)] if batch_norm else []
            layers += [nn.GELU()]
        self.mlp = nn.Sequential(*layers, nn.Linear(dims[-1], bottleneck_dim))
        for m in self.mlp.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        # Weight normalisation with g = 1 reduces to normalising each row of v.
        self.last_weight = nn.Parameter(torch.empty(out_dim, bottleneck_dim))  # v: (K, bottleneck)
        nn.init.kaiming_uniform_(self.last_weight, a=5**0.5)  # nn.Linear's initialisation

    def forward(self, x: Tensor, freeze_last: bool = False) -> Tensor:
        """x: (N, in_dim) -> (N, K) float32 logits; ``freeze_last`` gives the last layer a zero
        gradient (the method also lists it in ``frozen_parameters``, so the optimizer skips it)."""
        v = self.last_weight
        if freeze_last:
            v = v.detach() + 0.0 * v  # same values, zero gradient: frozen yet in DDP's graph
        x = self.mlp(x)  # (N, bottleneck)
        with torch.autocast(x.device.type, enabled=False):  # logits / 0.04 need fp32
            return F.normalize(x.float(), dim=-1) @ F.normalize(v.float(), dim=1).T  # (N, K)


@register_method(
    "dino", "DINO (Caron et al. 2021): self-distillation, momentum teacher, multi-crop"
)
class DINO(ImageMethod):
    """DINO on images. Batches: ``{"image": uint8 (B, 3, S, S)}``.

    Args:
        backbone: vision backbone name (a ViT is rebuilt to take the local crops' size).
        image_size: side S of the input images and of the global crops.
        out_dim: output dimension K of the head.
        hidden_dim: hidden width of the head's MLP.
        bottleneck_dim: bottleneck before the last layer.
        head_batch_norm: batch norm in the head; None = for ResNets only.
        num_local: local crops per image.
        local_size: side of the local crops; None = 96/224 S (a multiple of a ViT's patch).
        student_temp: student temperature.
        teacher_temp: teacher temperature after the warm-up.
        warmup_teacher_temp: teacher temperature at the start.
        teacher_temp_warmup: fraction of training over which the teacher temperature rises.
        center_momentum: EMA rate of the centre.
        momentum: initial teacher momentum (cosine to 1).
        freeze_last_layer_steps: optimizer steps during which the last layer stays as it is.
        blur: Gaussian blur in the crops; None picks on for images larger than 64 px.
        evaluate_teacher: ``embed`` and ``export`` use the teacher's backbone (else the student's).
    """

    kind = "image"
    fp32_state = True
    defaults = OptimDefaults(optimizer="adamw", lr=5e-4, weight_decay=0.04, scale_lr=True)

    def __init__(
        self,
        backbone: str = "vit_small_patch16_224",
        image_size: int = 224,
        out_dim: int = 65536,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        head_batch_norm: bool | None = None,
        num_local: int = 8,
        local_size: int | None = None,
        student_temp: float = 0.1,
        teacher_temp: float = 0.07,
        warmup_teacher_temp: float = 0.04,
        teacher_temp_warmup: float = 0.1,
        center_momentum: float = 0.9,
        momentum: float = 0.996,
        freeze_last_layer_steps: int = 0,
        blur: bool | None = None,
        evaluate_teacher: bool = True,
    ) -> None:
        super().__init__()
        self.evaluate_teacher = evaluate_teacher
        self.setup_encoder(backbone, image_size)
        self.backbone = dynamic_size_backbone(self.backbone)
        if head_batch_norm is None:
            head_batch_norm = architecture(self.backbone) == "resnet"
        self.head = DINOHead(
            self.backbone.dim, out_dim, hidden_dim, bottleneck_dim, batch_norm=head_batch_norm
        )
        self.teacher_backbone = momentum_copy(self.backbone)
        self.teacher_head = momentum_copy(self.head)
        self.multicrop = MultiCrop.dino(
            image_size,
            num_local=num_local,
            local_size=local_size or local_crop_size(image_size, patch_size(self.backbone)),
            blur=blur if blur is not None else image_size > 64,
        )
        self.student_temp = student_temp
        self.final_teacher_temp = teacher_temp
        self.warmup_teacher_temp = warmup_teacher_temp
        self.teacher_temp_warmup = teacher_temp_warmup
        self.center_momentum = center_momentum
        self.momentum = momentum
        self.freeze_last_layer_steps = freeze_last_layer_steps
        self.register_buffer("center", torch.zeros(1, out_dim))  # (1, K)
        self._pending_teacher: list[Tensor] = []  # teacher outputs since the last step
        start = teacher_temperature(0.0, teacher_temp_warmup, warmup_teacher_temp, teacher_temp)
        self.register_buffer("teacher_temp", torch.tensor(start))  # for the next step
        self.register_buffer("steps_done", torch.zeros((), dtype=torch.long))

    @classmethod
    def build(
        cls, ctx: BuildContext, freeze_last_layer_steps: int | None = None, **kwargs: Any
    ) -> DINO:
        if freeze_last_layer_steps is None:  # the paper's "first epoch"
            epoch = ctx.steps_per_epoch or 0
            freeze_last_layer_steps = epoch
        return cls(
            backbone=cls.backbone_for(ctx),
            image_size=ctx.image_size,
            freeze_last_layer_steps=freeze_last_layer_steps,
            **kwargs,
        )

    @classmethod
    def backbone_for(cls, ctx: BuildContext) -> str | None:
        """``ctx.backbone``, else ViT-S with 4-pixel patches up to 64 px, ViT-S/16 above."""
        small = ctx.image_size <= 64
        return ctx.backbone or ("vit_small_patch4" if small else "vit_small_patch16_224")

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        images = batch["image"]  # (B, 3, S, S) uint8
        b, g, v = images.shape[0], self.multicrop.num_global, self.multicrop.num_crops
        crops = self.multicrop(images)  # [(G*B, 3, S, S), (N*B, 3, s, s)]
        freeze = int(self.steps_done) < self.freeze_last_layer_steps
        features = torch.cat([self.backbone(x) for x in crops])  # (V*B, F), crop-major
        student = self.head(features, freeze_last=freeze)  # (V*B, K)
        with torch.no_grad():
            teacher = self.teacher_head(self.teacher_backbone(crops[0]))  # (G*B, K)
        temp = float(self.teacher_temp)
        loss = dino_loss(
            student.view(v, b, -1), teacher.view(g, b, -1), self.center, self.student_temp, temp
        )
        if self.training and torch.is_grad_enabled():
            # The centre moves once per optimizer step (in after_step), over every micro-batch
            # of the step: under gradient accumulation all of them see the same centre, as one
            # large batch would.
            self._pending_teacher.append(teacher.detach())
        return {"loss": loss, "teacher_temp": self.teacher_temp.clone()}

    def frozen_parameters(self) -> list[nn.Parameter]:
        """The last layer during its freeze (the reference code sets its gradient to None)."""
        frozen = int(self.steps_done) < self.freeze_last_layer_steps
        return [self.head.last_weight] if frozen else []

    def discard_step(self) -> None:
        self._pending_teacher = []

    def after_step(self, step: int, total_steps: int) -> None:
        if self._pending_teacher:
            teacher = torch.cat(self._pending_teacher)  # (k*G*B, K)
            self.center.copy_(updated_center(self.center, teacher, self.center_momentum))
            self._pending_teacher = []
        m = cosine_momentum(step, total_steps, self.momentum)
        ema_update(self.teacher_backbone, self.backbone, m)
        ema_update(self.teacher_head, self.head, m)
        progress = step / max(1, total_steps)
        self.teacher_temp.fill_(
            teacher_temperature(
                progress,
                self.teacher_temp_warmup,
                self.warmup_teacher_temp,
                self.final_teacher_temp,
            )
        )
        self.steps_done.fill_(step)

    def encoder(self) -> VisionBackbone:
        """The backbone that ``embed`` and ``export`` use: the teacher's by default."""
        return self.teacher_backbone if self.evaluate_teacher else self.backbone

    @torch.no_grad()
    def embed(self, batch: dict[str, Tensor]) -> Tensor:
        return self.encoder()(self.preprocess(batch["image"]))

    def encoder_for_finetuning(self) -> ImageEncoder:
        return ImageEncoder(self.preprocess, self.encoder())

    def export(self, path: Path) -> None:
        self.encoder().export(path, self.preprocess.mean, self.preprocess.std)
