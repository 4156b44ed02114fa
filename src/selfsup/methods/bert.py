"""BERT pretraining: masked language modelling plus next-sentence prediction.

Devlin, Chang, Lee, Toutanova 2019, "BERT: Pre-training of Deep Bidirectional Transformers for
Language Understanding", https://arxiv.org/abs/1810.04805 (section 3.1, appendix A.2).

The encoder reads ``[CLS] A [SEP] B [SEP]`` (token type 0 for ``[CLS] A [SEP]``, 1 for
``B [SEP]``) where B follows A in its document (IsNext) or, half of the time, is a span of another
document (NotNext); see :mod:`selfsup.data.segments`. 15 % of the tokens are selected and
corrupted (80 % [MASK], 10 % random, 10 % unchanged) and predicted from the final hidden states;
a binary classifier on the pooled ``[CLS]`` output (dense + tanh) predicts IsNext / NotNext.
Loss = mean MLM cross-entropy + NSP cross-entropy, as ``transformers.BertForPreTraining``
computes it with ``labels=`` and ``next_sentence_label=``.

Paper defaults (BERT-Base): Adam, lr 1e-4, betas (0.9, 0.999), eps 1e-6, weight decay 0.01 (none
on biases and LayerNorm), warm-up over the first 10k of 1M steps then linear decay, batch 256,
sequences of 512 tokens (128 for the first 90 % of steps), dropout 0.1, GELU, mask probability
0.15 with 80/10/10 replacement, short-sequence probability 0.1, NotNext probability 0.5, WordPiece
vocabulary. Sizes come from the run's backbone (``selfsup.backbones.text``, default ``bert-mini``).

Deviations, each deliberate:

* Dynamic masking (a fresh mask every time an example is seen, drawn on the device), not the
  paper's static masks (each sequence masked 10 ways at preprocessing time, so each mask was seen
  4 times in 40 epochs). Dynamic masking is a superset of the static scheme's coverage, needs no
  10x copy of the data, performs as well or slightly better (RoBERTa, Liu et al. 2019, table 1),
  and makes ``bert`` differ from ``mlm`` only by NSP and the sentence-pair input. Selection is a
  Bernoulli(0.15) draw per token (15 % in expectation), not exactly ``round(0.15 n)`` tokens.
* lr 5e-4, as ``mlm`` argues for the small models and short runs this library targets; use
  ``optim.lr=1e-4`` for BERT-Base.
* Warm-up is 10 % of the budget: the paper's 10k steps are 1 % of its 1M, which in a run of a few
  thousand steps is a handful of steps, too few for Adam's moment estimates at this lr.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch.nn.functional as F
from torch import Tensor, nn
from transformers import BertConfig, BertForPreTraining

from selfsup.data.segments import PairCollate, SentencePairs
from selfsup.methods.base import BuildContext, OptimDefaults, register_method
from selfsup.methods.mlm import MaskedEncoder, bert_config, bert_config_fields, masked_lm_loss
from selfsup.views.tokens import IGNORE_INDEX


def pair_loss(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Cross-entropy and accuracy of a binary sentence-pair task (NSP, SOP).

    Args:
        logits: ``(B, 2)`` scores of the two classes.
        labels: ``(B,)`` class ids (NSP: 0 = IsNext, 1 = NotNext; SOP: 0 = in order, 1 = swapped).

    Returns:
        ``(loss, accuracy)`` scalars (mean over the batch).
    """
    loss = F.cross_entropy(logits.float(), labels)
    accuracy = (logits.detach().argmax(dim=-1) == labels).float().mean()
    return loss, accuracy


def pair_labels(batch: dict[str, Tensor], key: str, method: str) -> Tensor:
    """``batch[key]``, or one clear error when the batch is not a sentence-pair batch."""
    if key not in batch:
        raise KeyError(
            f"the {method} method trains on sentence pairs: the batch has no {key!r} "
            f"(got {', '.join(sorted(batch))}); use the method's training_data"
        )
    return batch[key]


@register_method("bert", "BERT (Devlin et al. 2019): masked LM + next-sentence prediction")
class BertPretraining(MaskedEncoder):
    """BERT pretraining (Devlin et al. 2019): MLM + next-sentence prediction on sentence pairs.

    Args:
        config: the encoder's ``BertConfig`` (``vocab_size`` at least ``len(tokenizer)``).
        tokenizer: the fast tokenizer of the data (gives [MASK], the special ids, and is exported).
        mlm_probability: fraction of non-special tokens selected for prediction.
        mask_replace: fraction of selected tokens replaced by [MASK].
        random_replace: fraction of selected tokens replaced by a random regular token.
        short_seq_prob: probability of a shorter target length when building pairs.
    """

    tokenizer_kind: ClassVar[str] = "wordpiece"
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
        config: BertConfig,
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
        # encoder .bert (with the pooler NSP reads) + heads .cls.predictions / .cls.seq_relationship
        self.model = BertForPreTraining(config)

    @property
    def encoder(self) -> nn.Module:
        return self.model.bert

    def mlm_head(self, hidden: Tensor) -> Tensor:
        return self.model.cls.predictions(hidden)

    @classmethod
    def build(
        cls,
        ctx: BuildContext,
        *,
        mlm_probability: float = 0.15,
        mask_replace: float = 0.8,
        random_replace: float = 0.1,
        short_seq_prob: float = 0.1,
        max_position_embeddings: int | None = None,
        **config_overrides: Any,
    ) -> BertPretraining:
        """Build from the run's backbone (default ``bert-mini``), tokenizer and ``seq_len``.

        ``max_position_embeddings`` defaults to ``max(512, ctx.seq_len)``; other keyword arguments
        override ``BertConfig`` fields (``hidden_size``, ``num_hidden_layers``, ...).
        """
        config = bert_config(ctx, "bert", max_position_embeddings, **config_overrides)
        return cls(
            config,
            ctx.tokenizer,
            mlm_probability=mlm_probability,
            mask_replace=mask_replace,
            random_replace=random_replace,
            short_seq_prob=short_seq_prob,
        )

    @classmethod
    def argument_names(cls) -> list[str]:
        """The masking rates, ``short_seq_prob``, ``max_position_embeddings`` and any
        ``BertConfig`` field."""
        return sorted({*super().argument_names(), *bert_config_fields()})

    def training_data(
        self,
        dataset: Any,  # noqa: ANN401
        tokenizer: Any,  # noqa: ANN401
        seq_len: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> tuple[SentencePairs, PairCollate]:
        """IsNext / NotNext sentence pairs of the documents, padded to each batch's longest.

        The pairs' random stream is seeded by the source's ``seed`` (the run's seed), the epoch,
        the rank and the DataLoader worker.
        """
        pairs = SentencePairs(
            dataset,
            tokenizer,
            seq_len,
            task="nsp",
            short_seq_prob=self.short_seq_prob,
            seed=getattr(dataset, "seed", 0),
            rank=rank,
            world_size=world_size,
        )
        return pairs, PairCollate(tokenizer.pad_token_id)

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        is_random_next = pair_labels(batch, "next_sentence_label", "bert")  # (B,) 1 = NotNext
        masked, labels, attention_mask = self.mask(batch)
        out = self.model.bert(
            input_ids=masked,
            attention_mask=attention_mask,
            token_type_ids=batch.get("token_type_ids"),
        )
        selected = labels != IGNORE_INDEX  # (B, L) True = masked, predicted
        mlm_logits = self.model.cls.predictions(out.last_hidden_state[selected])  # (N, V)
        mlm_loss, mlm_acc = masked_lm_loss(mlm_logits, labels[selected])
        nsp_logits = self.model.cls.seq_relationship(out.pooler_output)  # (B, 2)
        nsp_loss, nsp_acc = pair_loss(nsp_logits, is_random_next)
        return {
            "loss": mlm_loss + nsp_loss,
            "mlm_loss": mlm_loss.detach(),
            "nsp_loss": nsp_loss.detach(),
            "mlm_acc": mlm_acc,
            "nsp_acc": nsp_acc,
        }
