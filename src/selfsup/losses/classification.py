"""Cross entropy for pretext classifiers (rotation, jigsaw, relative patch location) and for masked
token prediction (BERT's masked-LM head, ELECTRA's generator)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from selfsup.losses.distributed import global_mean


def classification_loss(logits: Tensor, labels: Tensor) -> dict[str, Tensor]:
    """Cross entropy and accuracy of a pretext classifier, in fp32 even under autocast.

    Args:
        logits: (N, K) class scores.
        labels: (N,) int64 classes in [0, K).

    Returns:
        ``{"loss": mean cross entropy, "accuracy": fraction of argmax hits}`` (scalars).
    """
    with torch.autocast(logits.device.type, enabled=False):
        logits = logits.float()
        loss = F.cross_entropy(logits, labels)
    accuracy = (logits.detach().argmax(dim=1) == labels).float().mean()
    return {"loss": loss, "accuracy": accuracy}


def masked_lm_loss(logits: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """Mean cross-entropy and accuracy of the predictions at the masked positions.

    Under DDP the mean is over every process's masked tokens (:func:`global_mean`): the processes
    draw different numbers of them (at 15 % of 32 x 128 tokens, about 614 +- 23 each), and a
    per-process mean would weight the tokens of a process that drew fewer more. With gradient
    accumulation each micro-batch is a mean over its own tokens, and the micro-batches count
    alike.

    Args:
        logits: ``(N, V)`` scores over the vocabulary at the N selected positions of the batch.
        targets: ``(N,)`` original token ids there.

    Returns:
        ``(loss, accuracy)`` scalars; both 0 when N = 0 (the loss still depends on ``logits``, so
        backward works and gives zero gradients).
    """
    loss = F.cross_entropy(logits.float(), targets, reduction="sum")
    hits = (logits.detach().argmax(dim=-1) == targets).sum().float()
    loss, accuracy = global_mean(torch.stack([loss, hits]), targets.numel()).unbind()
    return loss, accuracy.detach()


def replaced_token_detection_loss(
    logits: Tensor, replaced: Tensor, attention_mask: Tensor
) -> tuple[Tensor, Tensor]:
    """ELECTRA's discriminator loss: binary cross-entropy averaged over the real tokens (of every
    process under DDP, :func:`global_mean`).

    Args:
        logits: ``(B, L)`` scores, positive = "replaced".
        replaced: ``(B, L)`` bool labels, True = replaced by the generator.
        attention_mask: ``(B, L)`` 1 = real token, 0 = padding (left out of loss and accuracy).

    Returns:
        ``(loss, accuracy)`` scalars over the real tokens.
    """
    weights = attention_mask.float()  # (B, L)
    losses = F.binary_cross_entropy_with_logits(
        logits.float(), replaced.float(), reduction="none"
    )  # (B, L)
    correct = ((logits.detach() > 0) == replaced).float()
    sums = torch.stack([(losses * weights).sum(), (correct * weights).sum()])
    loss, accuracy = global_mean(sums, weights.sum()).unbind()
    return loss, accuracy.detach()
