"""Instance discrimination: every image is its own class, scored against a memory bank.

Wu, Xiong, Yu, Lin. "Unsupervised Feature Learning via Non-Parametric Instance Discrimination".
CVPR 2018. https://arxiv.org/abs/1805.01978

Algorithm (section 3): one augmented view per image -> backbone -> linear projection to 128 ->
L2 normalisation gives f. A memory bank holds one unit vector v_j per training image. The
non-parametric softmax ``P(i | f) = exp(v_i . f / t) / Z`` over all N images is approximated by
NCE: the image's own bank entry is the data sample, K entries drawn uniformly (``Pn = 1 / N``)
are noise, and ``Z ~ N * mean exp(v_j . f / t)`` is a Monte Carlo estimate over the batch's noise
samples (section 3.2). After the step each image's entry moves towards its new feature:
``v_i <- normalise(m v_i + (1 - m) f_i)``. Section 3.4's proximal term ``lambda ||f_i - v_i||^2``
is available as ``proximal`` (off by default, see Deviations).

Paper defaults, used here:
    embedding 128-d, temperature t = 0.07, K = 4096 noise samples, bank momentum m = 0.5,
        bank initialised with random unit vectors.
    augmentation: random resized crop, colour jitter, random grayscale, horizontal flip. The
        paper names the operations but not their strengths; we use the values this recipe is
        commonly run with (MoCo v1 adopts Wu et al.'s augmentation): crop scale 0.2-1, jitter
        0.4 on all four channels always applied, grayscale p = 0.2, no blur. Nothing in it
        depends on the image size, so 32 px images use it unchanged.
    optimizer: SGD, momentum 0.9, lr 0.03 for a batch of 256 (scaled linearly with the batch
        here), weight decay 5e-4. The paper's step decay is replaced by the engine's schedule.

Deviations:
    * ``head_bn=True`` (default) ends the 128-d projection in batch norm without affine
      parameters. With the paper's plain linear layer, a freshly initialised ResNet's features
      share a large common component; the rows just written to the bank carry it while the
      positives (random rows early in training) do not, so every query is pushed the same way
      and the linear layer's bias absorbs that push: on the CIFAR-10 shards the mean cosine
      between embeddings in a batch rose from 0.69 to 0.99 within 5 steps and never recovered
      (kNN fell below the random-init floor). Centring each dimension over the batch removes
      the common component, as the projectors of SimSiam and MoCo v3 do. ``head_bn=False``
      gives the paper's head.
    * ``Z`` is re-estimated on every batch (``z_momentum=0``) instead of once on the first
      batch and then kept fixed (the paper's, ``z_momentum=1``). With the fixed Z, estimated while
      the bank holds random vectors, the noise term grows as the features organise (the bank
      rows' mean ``exp(v . f / t)`` rose about 100-fold over 4 epochs on 10,000 CIFAR-10
      images): the 4,096 noise terms swamp the positive one, every feature is pushed away from
      the bank including its own row, and kNN accuracy fell from 29.0 (random init) to 23.6
      after 4 epochs. Re-estimated per batch, NCE learns (31.7 after 4 epochs, the same as the
      softmax form); a moving average (``z_momentum=0.99``) lags behind and reached 26.6. The
      proximal term (lambda = 50) did not help with the fixed Z (19.0).
    * ``loss="softmax"`` replaces NCE by cross entropy over the positive and the K sampled
      entries (the form the authors' later memory-bank model and MoCo use); NCE is the default.
    * The K noise entries are drawn once per batch and shared by its queries rather than
per query (each query still sees K uniform samples; a (K, D) matrix instead of a (B, K, D) copy).
The proximal term of section 3.4 is off by default (``proximal=0``); the bank momentum plays that
smoothing role.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.losses.distributed import gather_no_grad
from selfsup.losses.nce import binary_nce
from selfsup.methods.base import BuildContext, OptimDefaults, register_method
from selfsup.methods.image import ImageMethod
from selfsup.views import ViewAugment


@register_method(
    "instdisc", "Instance discrimination (Wu et al. 2018): memory bank, NCE against 4096 entries"
)
class InstDisc(ImageMethod):
    """Non-parametric instance discrimination with a memory bank and NCE.

    Batches: ``{"image": uint8 (B, 3, S, S), "index": int64 (B,)}`` with every index a stable
    sample id in ``[0, num_samples)``.

    Args:
        num_samples: training images N (one bank row each); set by the pipeline.
        backbone: vision backbone name.
        image_size: side S of the input images.
        feature_dim: dimension of the embedding and of the bank rows.
        temperature: softmax temperature t.
        num_negatives: noise samples K per batch.
        bank_momentum: m in ``v_i <- normalise(m v_i + (1 - m) f_i)``.
        head_bn: end the projection in batch norm without affine parameters (see Deviations).
        loss: "nce" (the paper's) or "softmax" over the positive and the K sampled entries.
        proximal: lambda of the proximal term ``lambda ||f_i - v_i||^2`` (section 3.4; 0: off).
        z_momentum: NCE's normalising constant after each training batch is
            ``z_momentum * Z + (1 - z_momentum) * estimate``: 0 re-estimates it every batch
            (default), 1 keeps the first batch's estimate (the paper's; see Deviations).
    """

    kind = "image"
    replicated_buffers = ("bank",)  # updated with gathered features, alike on every process
    fp32_state = True  # the memory bank
    defaults = OptimDefaults(optimizer="sgd", lr=0.03, weight_decay=5e-4, scale_lr=True)
    provided_args = frozenset({"num_samples"})

    def __init__(
        self,
        num_samples: int,
        backbone: str = "resnet18",
        image_size: int = 32,
        feature_dim: int = 128,
        temperature: float = 0.07,
        num_negatives: int = 4096,
        bank_momentum: float = 0.5,
        head_bn: bool = True,
        loss: str = "nce",
        proximal: float = 0.0,
        z_momentum: float = 0.0,
    ) -> None:
        super().__init__()
        if num_samples < 2 or num_negatives < 1 or not 0.0 <= bank_momentum < 1.0:
            raise ValueError(
                "instdisc needs num_samples >= 2, num_negatives >= 1 and 0 <= bank_momentum < 1"
            )
        if proximal < 0 or not 0.0 <= z_momentum <= 1.0:
            raise ValueError("instdisc needs proximal >= 0 and 0 <= z_momentum <= 1")
        if loss not in ("nce", "softmax"):
            raise ValueError(f"instdisc loss must be 'nce' or 'softmax', got {loss!r}")
        self.setup_encoder(backbone, image_size)
        self.head: nn.Module = (
            nn.Sequential(
                nn.Linear(self.backbone.dim, feature_dim, bias=False),
                nn.BatchNorm1d(feature_dim, affine=False),
            )
            if head_bn
            else nn.Linear(self.backbone.dim, feature_dim)
        )
        self.loss = loss
        self.proximal = proximal
        self.z_momentum = z_momentum
        self.augment = ViewAugment(
            image_size, scale=(0.2, 1.0), jitter=(0.4, 0.4, 0.4, 0.4), jitter_p=1.0, blur_p=0.0
        )
        self.temperature = temperature
        self.num_negatives = num_negatives
        self.bank_momentum = bank_momentum
        self.register_buffer("bank", F.normalize(torch.randn(num_samples, feature_dim), dim=1))
        self.register_buffer("z", torch.zeros(()))  # normalising constant; 0 = not estimated yet
        # (index, feature) of the micro-batches since the last optimizer step, written to the
        # bank once per step in after_step (not per micro-batch under gradient accumulation).
        self._pending: list[tuple[Tensor, Tensor]] = []

    @classmethod
    def build(cls, ctx: BuildContext, **kwargs: Any) -> InstDisc:
        if ctx.num_samples is None:
            raise ValueError(
                "instdisc keeps one memory-bank row per training image and needs the number of "
                "training samples, which this data source does not report (e.g. streamed or "
                "compressed shards); use a source of known size"
            )
        return cls(
            ctx.num_samples,
            backbone=cls.backbone_for(ctx),
            image_size=ctx.image_size,
            **kwargs,
        )

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        index = self._check_index(batch)  # (B,)
        f = self.head(self.backbone(self.augment(batch["image"])))  # (B, feature_dim)
        with torch.autocast(f.device.type, enabled=False):  # exp(s / 0.07) needs fp32
            f = F.normalize(f.float(), dim=1)
            noise = self._draw_noise(f.device)  # (K,) bank rows
            pos = (f * self.bank[index]).sum(1) / self.temperature  # (B,)
            neg = f @ self.bank[noise].T / self.temperature  # (B, K)
            if self.loss == "softmax":
                loss = F.cross_entropy(
                    torch.cat([pos[:, None], neg], dim=1),
                    torch.zeros_like(index),  # the positive is column 0
                )
            else:
                if not bool(self.z > 0) or (self.training and self.z_momentum < 1.0):
                    self._estimate_z(neg.detach())
                log_z = self.z.log()
                loss = binary_nce(pos - log_z, neg - log_z, noise_prob=1.0 / self.bank.shape[0])
            if self.proximal > 0:  # lambda ||f - v_i||^2 = lambda (2 - 2 f.v_i) on unit vectors
                loss = loss + self.proximal * (2.0 - 2.0 * pos * self.temperature).mean()
        if self.training and torch.is_grad_enabled():
            self._pending.append((index, f.detach()))
        return {"loss": loss, "positive_similarity": pos.detach().mean() * self.temperature}

    def discard_step(self) -> None:
        self._pending = []  # a skipped step's features never reach the bank

    @torch.no_grad()
    def after_step(self, step: int, total_steps: int) -> None:
        pending, self._pending = self._pending, []
        m = self.bank_momentum
        for index, f in pending:  # one micro-batch at a time: its indices are distinct
            index, f = (
                gather_no_grad(index),
                gather_no_grad(f),
            )  # (W*B,), (W*B, D): same on every rank
            self.bank[index] = F.normalize(m * self.bank[index] + (1.0 - m) * f, dim=1)

    def _draw_noise(self, device: torch.device) -> Tensor:
        """K bank rows drawn uniformly with replacement (Pn = 1 / N), shared by the batch."""
        return torch.randint(0, self.bank.shape[0], (self.num_negatives,), device=device)

    @torch.no_grad()
    def _estimate_z(self, neg: Tensor) -> None:
        """``Z = N * mean_{b, k} exp(neg)`` from (B, K) scaled scores, averaged over processes."""
        log_mean = torch.logsumexp(neg.flatten(), 0) - math.log(neg.numel())
        z = self.bank.shape[0] * log_mean.exp()
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(z)
            z /= dist.get_world_size()
        if bool(self.z > 0):
            z = self.z_momentum * self.z + (1.0 - self.z_momentum) * z
        self.z.copy_(z)

    def _check_index(self, batch: dict[str, Tensor]) -> Tensor:
        index = batch.get("index")
        n = self.bank.shape[0]
        if index is None or bool((index < 0).any()) or bool((index >= n).any()):
            raise ValueError(
                f"instdisc needs batch['index'], each image's id in [0, {n}), to address its "
                "memory-bank row; this data source gives none (index -1, e.g. compressed shards)"
                " or ids beyond num_samples"
            )
        return index
