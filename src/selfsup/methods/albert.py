"""ALBERT: a BERT with a factorised embedding, shared layers and sentence-order prediction.

Lan, Chen, Goodman, Gimpel, Sharma, Soricut 2020, "ALBERT: A Lite BERT for Self-supervised
Learning of Language Representations", https://arxiv.org/abs/1909.11942.

* Factorised embedding (section 3.1): tokens are embedded in E = 128 dimensions and projected to
  the hidden size H, so the vocabulary costs V x E + E x H parameters instead of V x H.
* Cross-layer parameter sharing (section 3.1): all layers share one set of attention and
  feed-forward parameters (``num_hidden_groups`` = 1; ``transformers.AlbertModel`` applies the
  one layer ``num_hidden_layers`` times).
* Sentence-order prediction (section 4.1): ``[CLS] A [SEP] B [SEP]`` where A and B are two
  consecutive segments of one document, swapped half of the time; a binary classifier on the
  pooled ``[CLS]`` output predicts the order (see :mod:`selfsup.data.segments`).
  Loss = mean MLM cross-entropy + SOP cross-entropy, as ``transformers.AlbertForPreTraining``
  computes it with ``labels=`` and ``sentence_order_label=``.

Paper defaults (section 4.1): sequences of at most 512 tokens, shorter ones with probability 0.1,
a SentencePiece vocabulary of 30k (a unigram tokenizer here, ``tokenizer_kind = "unigram"``),
n-gram masking, batch 4096, LAMB with lr 0.00176 for 125k steps, E = 128; ALBERT-Base is 12 layers
of H = 768. Sizes come from the run's backbone (``selfsup.backbones.text``, default ``bert-mini``).

Deviations, each deliberate:

* Standard token masking (15 %, 80/10/10, dynamic) instead of n-gram masking (spans of n <= 3
  tokens with p(n) proportional to 1/n): the paper reports no ablation of it, and token masking
  keeps ALBERT comparable with ``mlm``, ``bert`` and ``roberta``.
* AdamW (betas (0.9, 0.999), eps 1e-6, weight decay 0.01), lr 5e-4, warm-up 10 % then linear decay,
  instead of LAMB at lr 0.00176: LAMB exists for batches of thousands, which these runs do not use,
  and the engine has no LAMB; 5e-4 is ``mlm``'s choice for small models and short runs.
* Dropout 0.1 as in BERT and ALBERT's own experiments (section 4.9 removes it only for the largest
  model trained on extra data); the SOP classifier has no dropout, as in the authors' code.
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor, nn
from transformers import AlbertConfig, AlbertForPreTraining

from selfsup.backbones.text import bert_config_fields
from selfsup.data.segments import PairCollate, SentencePairs
from selfsup.methods.base import BuildContext, OptimDefaults, register_method
from selfsup.methods.bert import pair_labels, pair_loss
from selfsup.methods.mlm import (
    MaskedEncoder,
    bert_config,
    encoder_fields,
    masked_lm_loss,
)
from selfsup.views.tokens import IGNORE_INDEX


@register_method(
    "albert", "ALBERT (Lan et al. 2020): factorised embedding, shared layers, sentence order"
)
class AlbertPretraining(MaskedEncoder):
    """ALBERT pretraining (Lan et al. 2020): MLM + sentence-order prediction, shared layers.

    Args:
        config: the encoder's ``AlbertConfig`` (``vocab_size`` at least ``len(tokenizer)``).
        tokenizer: the fast tokenizer of the data (gives [MASK], the special ids, and is exported).
        mlm_probability: fraction of non-special tokens selected for prediction.
        mask_replace: fraction of selected tokens replaced by [MASK].
        random_replace: fraction of selected tokens replaced by a random regular token.
        short_seq_prob: probability of a shorter target length when building pairs.
    """

    tokenizer_kind: ClassVar[str] = "unigram"
    defaults: ClassVar[OptimDefaults] = OptimDefaults(
        optimizer="adamw",
        lr=5e-4,
        weight_decay=0.01,
        betas=(0.9, 0.999),
        eps=1e-6,
        warmup=0.1,
        schedule="linear",
    )

    def __init__(
        self,
        config: AlbertConfig,
        tokenizer: Any,  # noqa: ANN401
        *,
        mlm_probability: float = 0.15,
        mask_replace: float = 0.8,
        random_replace: float = 0.1,
        short_seq_prob: float = 0.1,
    ) -> None:
        super().__init__()
        self.set_masking(
            tokenizer, mlm_probability, mask_replace, random_replace, config.vocab_size
        )
        self.short_seq_prob = short_seq_prob
        # encoder .albert (with pooler) + heads .predictions (tied to the E-dim embeddings)
        # and .sop_classifier
        self.model = AlbertForPreTraining(config)

    @property
    def encoder(self) -> nn.Module:
        return self.model.albert

    def mlm_head(self, hidden: Tensor) -> Tensor:
        return self.model.predictions(hidden)

    @classmethod
    def build(
        cls,
        ctx: BuildContext,
        *,
        mlm_probability: float = 0.15,
        mask_replace: float = 0.8,
        random_replace: float = 0.1,
        short_seq_prob: float = 0.1,
        embedding_size: int = 128,
        num_hidden_groups: int = 1,
        max_position_embeddings: int | None = None,
        **config_overrides: Any,
    ) -> AlbertPretraining:
        """Build from the run's backbone (default ``bert-mini``), tokenizer and ``seq_len``.

        The backbone's ``BertConfig`` (with ``config_overrides``, ``BertConfig`` field names)
        gives layers, hidden size, heads and feed-forward width. ``embedding_size`` is E;
        ``num_hidden_groups`` > 1 gives groups of layers their own parameters (1 = all shared).
        ``max_position_embeddings`` defaults to ``max(512, seq_len)``.
        """
        bert = bert_config(ctx, "albert", max_position_embeddings, **config_overrides)
        tokenizer = ctx.tokenizer
        config = AlbertConfig(
            **encoder_fields(bert),
            embedding_size=embedding_size,
            num_hidden_groups=num_hidden_groups,
            inner_group_num=1,
            classifier_dropout_prob=0.0,  # the authors' SOP head has no dropout
            bos_token_id=tokenizer.cls_token_id,
            eos_token_id=tokenizer.sep_token_id,
        )
        return cls(
            config,
            tokenizer,
            mlm_probability=mlm_probability,
            mask_replace=mask_replace,
            random_replace=random_replace,
            short_seq_prob=short_seq_prob,
        )

    @classmethod
    def argument_names(cls) -> list[str]:
        """The masking rates, ``short_seq_prob``, ``embedding_size``, ``num_hidden_groups``,
        ``max_position_embeddings`` and any ``BertConfig`` field."""
        return sorted({*super().argument_names(), *bert_config_fields()})

    def training_data(
        self,
        dataset: Any,  # noqa: ANN401
        tokenizer: Any,  # noqa: ANN401
        seq_len: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> tuple[SentencePairs, PairCollate]:
        """In-order / swapped consecutive segments of each document, padded to each batch's
        longest; seeded by the source's ``seed``, the epoch, the rank and the worker."""
        pairs = SentencePairs(
            dataset,
            tokenizer,
            seq_len,
            task="sop",
            short_seq_prob=self.short_seq_prob,
            seed=getattr(dataset, "seed", 0),
            rank=rank,
            world_size=world_size,
        )
        return pairs, PairCollate(tokenizer.pad_token_id)

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        swapped = pair_labels(batch, "sentence_order_label", "albert")  # (B,) 1 = swapped
        masked, labels, attention_mask = self.mask(batch)
        out = self.model.albert(
            input_ids=masked,
            attention_mask=attention_mask,
            token_type_ids=batch.get("token_type_ids"),
        )
        selected = labels != IGNORE_INDEX  # (B, L) True = masked, predicted
        mlm_logits = self.model.predictions(out.last_hidden_state[selected])  # (N, V)
        mlm_loss, mlm_acc = masked_lm_loss(mlm_logits, labels[selected])
        sop_logits = self.model.sop_classifier(out.pooler_output)  # (B, 2)
        sop_loss, sop_acc = pair_loss(sop_logits, swapped)
        return {
            "loss": mlm_loss + sop_loss,
            "mlm_loss": mlm_loss.detach(),
            "sop_loss": sop_loss.detach(),
            "mlm_acc": mlm_acc,
            "sop_acc": sop_acc,
        }
