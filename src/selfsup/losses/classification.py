"""Cross entropy for pretext classifiers (rotation, jigsaw, relative patch location)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


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
