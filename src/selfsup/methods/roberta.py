"""RoBERTa: BERT's masked language modelling, robustly optimised.

Liu, Ott, Goyal, Du, Joshi, Chen, Levy, Lewis, Zettlemoyer, Stoyanov 2019, "RoBERTa: A Robustly
Optimized BERT Pretraining Approach", https://arxiv.org/abs/1907.11692.

Against BERT: dynamic masking (a fresh 15 % 80/10/10 mask each time a sequence is seen, section
4.1), no next-sentence prediction and FULL-SENTENCES inputs (section 4.2: text packed contiguously
across document boundaries, an extra separator between documents), byte-level BPE (section 4.4),
larger batches and Adam with beta2 0.98 (section 3.1). The training data is the text kind's
default, :class:`selfsup.data.packing.PackedBlocks`: ``<s> ... </s>`` blocks of exactly ``seq_len``
tokens, documents joined with ``</s>``.

Paper defaults (RoBERTa-Base, table 9): AdamW, peak lr 6e-4, betas (0.9, 0.98), eps 1e-6, weight
decay 0.01, 24k warm-up steps of 500k then linear decay, batch 8k sequences of at most 512 tokens,
dropout 0.1, no gradient clipping, byte-level BPE of 50k tokens (``tokenizer.vocab_size`` here).

Deviations, each deliberate:

* FULL-SENTENCES packs whole sentences up to 512 tokens; blocks here are cut at exactly
  ``seq_len`` tokens, sometimes inside a sentence, so that no position is padding.
* lr 5e-4 (the paper's 6e-4 is for batches of 8k; ``mlm`` argues 5e-4 for the small models and
  short runs this library targets, and the same value keeps the BERT family comparable).
* Warm-up is 10 % of the budget (the paper's 4.8 % of 500k steps is a handful of steps in a short
  run), as for ``mlm`` and ``bert``.

``transformers``' RoBERTa numbers positions from ``pad_token_id + 1`` (fairseq's convention), so
the position table has ``max(512, seq_len) + pad_token_id + 1`` rows (514 for BERT's 512 tokens
and ``<pad>`` = 1, as roberta-base), and the pad id must be the tokenizer's.
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor, nn
from transformers import RobertaConfig, RobertaForMaskedLM

from selfsup.backbones.text_configs import encoder_fields
from selfsup.methods.base import BuildContext, OptimDefaults, register_method
from selfsup.methods.mlm import MaskedEncoder, bert_config


@register_method("roberta", "RoBERTa (Liu et al. 2019): dynamic masking, full-sentence packing")
class RobertaPretraining(MaskedEncoder):
    """RoBERTa pretraining (Liu et al. 2019): MLM with dynamic masking on packed blocks, no NSP.

    ``forward`` is :class:`~selfsup.methods.mlm.MaskedEncoder`'s: a fresh mask at every call.

    Args:
        config: the encoder's ``RobertaConfig`` (``vocab_size`` at least ``len(tokenizer)``).
        tokenizer: the fast tokenizer of the data (gives <mask>, the special ids, and is exported).
        mlm_probability, mask_replace, random_replace: the masking rates (``MaskedEncoder``).
    """

    tokenizer_kind: ClassVar[str] = "bpe"
    defaults: ClassVar[OptimDefaults] = OptimDefaults(
        optimizer="adamw",
        lr=5e-4,
        weight_decay=0.01,
        betas=(0.9, 0.98),
        eps=1e-6,
        warmup=0.1,
        schedule="linear",
    )

    @classmethod
    def model_config(
        cls, ctx: BuildContext, max_position_embeddings: int | None, **config_overrides: Any
    ) -> RobertaConfig:
        """The backbone's ``BertConfig`` (with ``config_overrides``, ``BertConfig`` field names)
        as a ``RobertaConfig``. ``max_position_embeddings`` is the longest input (default
        ``max(512, seq_len)``); the position table gets ``pad_token_id + 1`` more rows.
        """
        bert = bert_config(ctx, "roberta", max_position_embeddings, **config_overrides)
        tokenizer = ctx.tokenizer
        fields = encoder_fields(bert)
        fields["max_position_embeddings"] += tokenizer.pad_token_id + 1  # positions after pad
        fields["type_vocab_size"] = 1  # no segments
        fields["layer_norm_eps"] = config_overrides.get("layer_norm_eps", 1e-5)  # fairseq's
        return RobertaConfig(
            **fields,
            bos_token_id=tokenizer.cls_token_id,
            eos_token_id=tokenizer.sep_token_id,
        )

    def create_model(self, config: RobertaConfig) -> RobertaForMaskedLM:
        # encoder .roberta (no pooler) + head .lm_head, decoder tied to the input embeddings
        return RobertaForMaskedLM(config)

    @property
    def encoder(self) -> nn.Module:
        return self.model.roberta

    def mlm_head(self, hidden: Tensor) -> Tensor:
        return self.model.lm_head(hidden)
