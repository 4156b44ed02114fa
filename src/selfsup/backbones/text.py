"""Text encoders over ``transformers`` models: pooling of token states into one vector, the
``TextEncoder`` of a registered size (:mod:`selfsup.backbones.text_configs` names them), and a
quiet ``save_pretrained`` for exports."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from transformers import BertConfig, BertModel, PreTrainedModel

from selfsup.backbones.text_configs import build_text_config


def mean_pool(hidden: Tensor, attention_mask: Tensor) -> Tensor:
    """Average of ``hidden: (B, L, D)`` over positions where ``attention_mask: (B, L)`` is 1.

    Returns ``(B, D)``; a row with no real token gives zeros.
    """
    weights = attention_mask.to(hidden.dtype).unsqueeze(-1)  # (B, L, 1)
    total = (hidden * weights).sum(dim=1)  # (B, D)
    return total / weights.sum(dim=1).clamp_min(1.0)


POOLINGS = ("mean", "cls", "last")


def pool(hidden: Tensor, attention_mask: Tensor, pooling: str) -> Tensor:
    """One ``(B, D)`` vector per sequence from token states ``hidden: (B, L, D)``.

    Args:
        hidden: final hidden states.
        attention_mask: ``(B, L)``, 1 at real tokens, padding on the right.
        pooling: ``"mean"`` over real tokens, ``"cls"`` the first token's state (BERT's [CLS]),
            ``"last"`` the last real token's state (the only one a causal model lets see the
            whole text).
    """
    if pooling == "mean":
        return mean_pool(hidden, attention_mask)
    if pooling == "cls":
        return hidden[:, 0]
    if pooling == "last":
        last = (attention_mask.sum(dim=1) - 1).clamp_min(0)  # (B,)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    raise ValueError(f"unknown pooling {pooling!r}; valid: {', '.join(POOLINGS)}")


class TextEncoder(nn.Module):
    """A BERT encoder giving one ``(B, D)`` feature vector per sequence.

    Args:
        bert: a ``BertConfig`` (a new randomly initialised ``BertModel`` without pooler is
            built) or an existing ``BertModel`` to wrap (its weights are shared, not copied).
        pooling: ``"mean"`` (average over non-padding tokens, special tokens included) or
            ``"cls"`` (the final hidden state of the first token).
    """

    def __init__(self, bert: BertConfig | BertModel, pooling: str = "mean") -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; valid: {', '.join(POOLINGS)}")
        self.bert = (
            bert if isinstance(bert, BertModel) else BertModel(bert, add_pooling_layer=False)
        )
        self.pooling = pooling

    @property
    def dim(self) -> int:
        return self.bert.config.hidden_size

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """Pooled features ``(B, D)`` of ``input_ids: (B, L)`` (``attention_mask``: 1 = token)."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return pool(hidden, attention_mask, self.pooling)  # (B, D)


def create_text_encoder(
    name: str,
    vocab_size: int,
    max_position_embeddings: int = 512,
    pooling: str = "mean",
    **overrides: Any,
) -> TextEncoder:
    """A randomly initialised ``TextEncoder`` of the registered size ``name``."""
    return TextEncoder(
        build_text_config(name, vocab_size, max_position_embeddings, **overrides), pooling
    )


class PooledEncoder(nn.Module):
    """A ``transformers`` base model as a sentence encoder: ``(B, L)`` ids -> ``(B, D)``.

    Args:
        model: a base model whose output has ``last_hidden_state (B, L, D)`` (shared, not
            copied).
        pooling: ``"mean"``, ``"cls"`` or ``"last"`` (see :func:`pool`).
    """

    def __init__(self, model: nn.Module, pooling: str = "mean") -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; valid: {', '.join(POOLINGS)}")
        self.model, self.pooling = model, pooling
        self.dim = int(model.config.hidden_size)

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Pooled features ``(B, D)``; ``attention_mask`` (B, L) is 1 at tokens."""
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return pool(hidden, attention_mask, self.pooling)


@contextmanager
def quiet_progress() -> Iterator[None]:
    """Without transformers' progress bars ("Writing model shards", "Loading weights") for the
    block, restoring the previous setting after it."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def save_pretrained(model: PreTrainedModel, path: str | Path) -> None:
    """``model.save_pretrained(path)`` (safetensors) without transformers' progress bar, which
    an export would otherwise print for a single file."""
    with quiet_progress():
        model.save_pretrained(str(path))
