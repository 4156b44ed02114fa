"""BERT-family text encoders, built from ``transformers.BertConfig`` with random initialisation.

The sizes are the compact BERTs of Turc et al. 2019 ("Well-Read Students Learn Better") and BERT-Base
(Devlin et al. 2019); the feed-forward width is 4x the hidden size throughout. Nothing is
downloaded: a name gives a config, and the weights are trained here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from transformers import BertConfig, BertModel

from selfsup.registry import Registry

TEXT_BACKBONES: Registry[Callable[..., BertConfig]] = Registry("text backbone")


def _bert(name: str, layers: int, hidden: int, heads: int, note: str) -> None:
    def build(vocab_size: int, max_position_embeddings: int = 512, **overrides: Any) -> BertConfig:
        width = overrides.get("hidden_size", hidden)
        sizes = {
            "num_hidden_layers": layers,
            "hidden_size": hidden,
            "num_attention_heads": heads,
            "intermediate_size": 4 * width,
        }
        return BertConfig(
            vocab_size=vocab_size,
            max_position_embeddings=max_position_embeddings,
            **{**sizes, **overrides},
        )

    TEXT_BACKBONES.register(name, f"{note}: {layers} layers, {hidden} hidden, {heads} heads")(build)


_bert("bert-tiny", 2, 128, 2, "BERT-Tiny (Turc et al. 2019)")
_bert("bert-mini", 4, 256, 4, "BERT-Mini (Turc et al. 2019)")
_bert("bert-small", 4, 512, 8, "BERT-Small (Turc et al. 2019)")
_bert("bert-medium", 8, 512, 8, "BERT-Medium (Turc et al. 2019)")
_bert("bert-base", 12, 768, 12, "BERT-Base (Devlin et al. 2019)")


def build_text_config(
    name: str, vocab_size: int, max_position_embeddings: int = 512, **overrides: Any
) -> BertConfig:
    """The ``BertConfig`` of the text backbone ``name``.

    Args:
        name: a registered name (``selfsup list`` shows them); unknown names list the valid ones.
        vocab_size: rows of the token embedding, usually ``len(tokenizer)``.
        max_position_embeddings: longest sequence the encoder accepts.
        **overrides: ``BertConfig`` fields to change (``hidden_size``, ``num_hidden_layers``,
            ``pad_token_id``, ``hidden_dropout_prob``, ...). Overriding ``hidden_size`` alone
            keeps the feed-forward width at 4x the new size.

    Raises:
        TypeError: an override is not a ``BertConfig`` field (BertConfig itself would accept it
            silently, hiding a typo).
    """
    builder = TEXT_BACKBONES.get(name)
    known = {*BertConfig().to_dict(), "attn_implementation"}  # the latter is kept private
    unknown = sorted(k for k in overrides if k not in known)
    if unknown:
        raise TypeError(f"not BertConfig fields: {', '.join(unknown)}")
    return builder(
        vocab_size=vocab_size, max_position_embeddings=max_position_embeddings, **overrides
    )


def mean_pool(hidden: Tensor, attention_mask: Tensor) -> Tensor:
    """Average of ``hidden: (B, L, D)`` over positions where ``attention_mask: (B, L)`` is 1.

    Returns ``(B, D)``; a row with no real token gives zeros.
    """
    weights = attention_mask.to(hidden.dtype).unsqueeze(-1)  # (B, L, 1)
    total = (hidden * weights).sum(dim=1)  # (B, D)
    return total / weights.sum(dim=1).clamp_min(1.0)


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
        if pooling not in ("mean", "cls"):
            raise ValueError(f"unknown pooling {pooling!r}; valid: cls, mean")
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
        if self.pooling == "cls":
            return hidden[:, 0]  # (B, D)
        return mean_pool(hidden, attention_mask)  # (B, D)


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
