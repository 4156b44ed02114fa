"""Contrastive losses as pure functions of tensors, with thin modules holding hyperparameters.

Index legend: B local batch, W world size, D embedding dimension.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.losses.distributed import gather_with_grad, world_info


def nt_xent(z1: Tensor, z2: Tensor, temperature: float, gather: bool = True) -> Tensor:
    """Normalised temperature-scaled cross entropy (SimCLR, Chen et al. 2020, eq. 1).

    Each of the 2N embeddings (N = global batch) is a query whose positive is the other view of the
    same image and whose negatives are the other 2N - 2 embeddings; the self-similarity is masked
    out of the softmax. The loss is averaged over all 2N queries (both orderings of each pair).

    Under data parallelism the keys are gathered from every process with gradients and each process
    computes the loss of its own queries, so the mean over processes equals the global loss.

    Args:
        z1: (B, D) embeddings of the first view (not necessarily normalised).
        z2: (B, D) embeddings of the second view, row i the positive of ``z1[i]``.
        temperature: softmax temperature tau.
        gather: gather keys across processes when distributed.

    Returns:
        Scalar loss.
    """
    with torch.autocast(z1.device.type, enabled=False):  # logits / tau in fp32, even under bf16
        return _nt_xent(
            F.normalize(z1.float(), dim=1), F.normalize(z2.float(), dim=1), temperature, gather
        )


def _nt_xent(z1: Tensor, z2: Tensor, temperature: float, gather: bool) -> Tensor:
    b = z1.shape[0]
    rank, world = world_info() if gather else (0, 1)
    k1 = gather_with_grad(z1) if gather else z1  # (W*B, D)
    k2 = gather_with_grad(z2) if gather else z2  # (W*B, D)
    queries = torch.cat([z1, z2], dim=0)  # (2B, D)
    keys = torch.cat([k1, k2], dim=0)  # (2WB, D)
    logits = queries @ keys.T / temperature  # (2B, 2WB)

    n = world * b  # global batch: the positive of key i is key i + n (mod 2n)
    local = torch.arange(b, device=z1.device) + rank * b  # global index of local rows
    self_index = torch.cat([local, local + n])  # (2B,)
    positive = torch.cat([local + n, local])  # (2B,)
    rows = torch.arange(2 * b, device=z1.device)
    logits[rows, self_index] = float("-inf")
    return F.cross_entropy(logits, positive)


def clip_loss(image: Tensor, text: Tensor, logit_scale: Tensor, gather: bool = True) -> Tensor:
    """Symmetric InfoNCE over image-text pairs (CLIP, Radford et al. 2021, figure 3).

    Args:
        image: (B, D) image embeddings.
        text: (B, D) text embeddings, row i paired with ``image[i]``.
        logit_scale: scalar tensor, the *multiplier* applied to cosine similarities
            (``exp`` of the learnable log-temperature).
        gather: gather the other processes' embeddings (with gradients) as extra negatives.

    Returns:
        Scalar loss: mean of image->text and text->image cross entropies.
    """
    with torch.autocast(image.device.type, enabled=False):  # a scale of 100 needs fp32 logits
        return _clip_loss(
            F.normalize(image.float(), dim=1),
            F.normalize(text.float(), dim=1),
            logit_scale.float(),
            gather,
        )


def _clip_loss(image: Tensor, text: Tensor, logit_scale: Tensor, gather: bool) -> Tensor:
    rank, world = world_info() if gather else (0, 1)
    all_image = gather_with_grad(image) if gather else image  # (W*B, D)
    all_text = gather_with_grad(text) if gather else text  # (W*B, D)
    labels = torch.arange(image.shape[0], device=image.device) + rank * image.shape[0]
    logits_i2t = logit_scale * image @ all_text.T  # (B, W*B)
    logits_t2i = logit_scale * text @ all_image.T  # (B, W*B)
    return (F.cross_entropy(logits_i2t, labels) + F.cross_entropy(logits_t2i, labels)) / 2


class NTXentLoss(nn.Module):
    """Module wrapper of :func:`nt_xent` holding the temperature."""

    def __init__(self, temperature: float = 0.1, gather: bool = True) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.temperature = temperature
        self.gather = gather

    def forward(self, z1: Tensor, z2: Tensor) -> Tensor:
        """z1, z2: (B, D) embeddings of two views -> scalar loss."""
        return nt_xent(z1, z2, self.temperature, self.gather)


class ClipLoss(nn.Module):
    """CLIP's loss with its learnable temperature.

    The log of the logit scale is a parameter initialised to ``log(1 / 0.07)`` and clamped so that
    the scale never exceeds 100 (Radford et al. 2021, section 2.5); call :meth:`clamp_` after each
    optimizer step.
    """

    def __init__(self, init_temperature: float = 0.07, max_scale: float = 100.0) -> None:
        super().__init__()
        if not init_temperature > 0:
            raise ValueError(f"init_temperature must be > 0, got {init_temperature}")
        self.log_scale = nn.Parameter(torch.tensor(math.log(1 / init_temperature)))
        self.max_log_scale = math.log(max_scale)

    @torch.no_grad()
    def clamp_(self) -> None:
        self.log_scale.clamp_(max=self.max_log_scale)

    def forward(self, image: Tensor, text: Tensor) -> Tensor:
        """image, text: (B, D) paired embeddings -> scalar loss."""
        return clip_loss(image, text, self.log_scale.exp())
