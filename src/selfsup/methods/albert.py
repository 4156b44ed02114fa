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
of H = 768. Sizes come from the run's backbone (``selfsup.backbones.text_configs``, default ``bert-mini``).

Optimiser: the paper's LAMB (``selfsup.engine.optim.LAMB``), lr 0.00176, betas (0.9, 0.999),
eps 1e-6, weight decay 0.01 (none on biases and norms, which also skip the trust ratio), linear
warm-up over 2.5 % of the budget (3,125 of 125,000 steps) then linear decay. LAMB's per-layer trust
ratio makes the step size independent of the batch size, so the paper's learning rate is kept
at this project's much smaller batches.

Deviations, each deliberate:

* Standard token masking (15 %, 80/10/10, dynamic) instead of n-gram masking (spans of n <= 3
  tokens with p(n) proportional to 1/n): the paper reports no ablation of it, and token masking
  keeps ALBERT comparable with ``mlm``, ``bert`` and ``roberta``.
* Dropout 0.1 as in BERT and ALBERT's own experiments (section 4.9 removes it only for the largest
  model trained on extra data); the SOP classifier has no dropout, as in the authors' code.
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor, nn
from transformers import AlbertConfig, AlbertForPreTraining

from selfsup.backbones.text_configs import encoder_fields
from selfsup.methods.base import BuildContext, OptimDefaults, register_method
from selfsup.methods.bert import SentencePairPretraining


@register_method(
    "albert", "ALBERT (Lan et al. 2020): factorised embedding, shared layers, sentence order"
)
class AlbertPretraining(SentencePairPretraining):
    """ALBERT pretraining (Lan et al. 2020): MLM + sentence-order prediction, shared layers.

    BERT's pretraining (:class:`~selfsup.methods.bert.SentencePairPretraining`: the loss, the
    masking, the pairs and the optimiser defaults) with SOP pairs instead of NSP, a unigram
    tokenizer and ``AlbertForPreTraining``, whose config :meth:`model_config` derives.

    Args:
        config: the encoder's ``AlbertConfig`` (``vocab_size`` at least ``len(tokenizer)``).
        tokenizer: the fast tokenizer of the data (gives [MASK], the special ids, and is exported).
        short_seq_prob: probability of a shorter target length when building pairs.
        mlm_probability, mask_replace, random_replace: the masking rates (``MaskedEncoder``).
    """

    method_name: ClassVar[str] = "albert"
    defaults: ClassVar[OptimDefaults] = OptimDefaults(
        optimizer="lamb",
        lr=0.00176,
        weight_decay=0.01,
        betas=(0.9, 0.999),
        eps=1e-6,
        warmup=0.025,
        schedule="linear",
    )
    pair_task: ClassVar[str] = "sop"  # in-order / swapped consecutive segments
    tokenizer_kind: ClassVar[str] = "unigram"

    @classmethod
    def model_config(
        cls,
        ctx: BuildContext,
        max_position_embeddings: int | None,
        *,
        embedding_size: int = 128,
        num_hidden_groups: int = 1,
        **config_overrides: Any,
    ) -> AlbertConfig:
        """ALBERT's config: the backbone's ``BertConfig`` (with ``config_overrides``, ``BertConfig``
        field names) gives layers, hidden size, heads and feed-forward width. ``embedding_size``
        is E; ``num_hidden_groups`` > 1 gives groups of layers their own parameters (1 = all
        shared); both are method arguments, which ``build`` passes here.
        ``max_position_embeddings`` defaults to ``max(512, seq_len)``.
        """
        bert = super().model_config(ctx, max_position_embeddings, **config_overrides)
        tokenizer = ctx.tokenizer
        return AlbertConfig(
            **encoder_fields(bert),
            embedding_size=embedding_size,
            num_hidden_groups=num_hidden_groups,
            inner_group_num=1,
            classifier_dropout_prob=0.0,  # the authors' SOP head has no dropout
            bos_token_id=tokenizer.cls_token_id,
            eos_token_id=tokenizer.sep_token_id,
        )

    def create_model(self, config: AlbertConfig) -> AlbertForPreTraining:
        # encoder .albert (with pooler) + heads .predictions (tied to the E-dim embeddings)
        # and .sop_classifier
        return AlbertForPreTraining(config)

    @property
    def encoder(self) -> nn.Module:
        return self.model.albert

    def mlm_head(self, hidden: Tensor) -> Tensor:
        return self.model.predictions(hidden)

    def pair_head(self, pooled: Tensor) -> Tensor:
        return self.model.sop_classifier(pooled)
