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
vocabulary. Sizes come from the run's backbone (``selfsup.backbones.text_configs``, default ``bert-mini``).

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

:class:`SentencePairPretraining` is this algorithm for any binary pair task (``pair_task``) and
``transformers`` model: :class:`BertPretraining` is it with NSP and ``BertForPreTraining``;
``albert`` (:mod:`selfsup.methods.albert`) with sentence-order prediction and ALBERT's model.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch.nn.functional as F
from torch import Tensor, nn
from transformers import BertConfig, BertForPreTraining, PretrainedConfig

from selfsup.data.segments import LABEL_KEYS, PairCollate, SentencePairs
from selfsup.losses.classification import masked_lm_loss
from selfsup.methods.base import BuildContext, OptimDefaults, register_method
from selfsup.methods.mlm import MaskedEncoder, bert_config
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


class SentencePairPretraining(MaskedEncoder):
    """Masked LM plus a binary task on sentence pairs: BERT's NSP, ALBERT's SOP.

    The encoder reads ``[CLS] A [SEP] B [SEP]`` pairs of the task ``pair_task`` (see
    :class:`~selfsup.data.segments.SentencePairs`); :meth:`pair_head` scores the pooled ``[CLS]``
    output. Loss = mean MLM cross-entropy + pair-task cross-entropy. A subclass sets
    ``method_name`` and ``pair_task`` and defines, besides ``MaskedEncoder``'s ``model_config`` (a
    ``BertConfig`` here), ``create_model``, ``encoder`` and ``mlm_head``, the ``pair_head``.

    Args:
        config: the encoder's config (``vocab_size`` at least ``len(tokenizer)``).
        tokenizer: the fast tokenizer of the data (gives [MASK], the special ids, and is exported).
        short_seq_prob: probability of a shorter target length when building pairs.
        **kwargs: the masking rates of :class:`~selfsup.methods.mlm.MaskedEncoder`.
    """

    method_name: ClassVar[str]  # the registered name, for errors
    pair_task: ClassVar[str]  # "nsp" or "sop": the pairs, their label key and the logged names
    segment_ids: ClassVar[bool] = True
    # BERT's recipe with this module's deviations (lr 5e-4, 10 % warm-up); ALBERT has its own
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
        config: PretrainedConfig,
        tokenizer: Any,  # noqa: ANN401
        *,
        short_seq_prob: float = 0.1,
        **kwargs: float,
    ) -> None:
        super().__init__(config, tokenizer, **kwargs)
        self.short_seq_prob = short_seq_prob

    @classmethod
    def build(
        cls, ctx: BuildContext, *, short_seq_prob: float = 0.1, **kwargs: Any
    ) -> SentencePairPretraining:
        """``MaskedEncoder.build`` (the masking rates, ``max_position_embeddings``, config fields
        and ``model_config``'s own arguments) with ``short_seq_prob`` for the pairs."""
        method = super().build(ctx, **kwargs)
        method.short_seq_prob = short_seq_prob
        return method

    @classmethod
    def model_config(
        cls, ctx: BuildContext, max_position_embeddings: int | None, **config_overrides: Any
    ) -> BertConfig:
        """The backbone's ``BertConfig``: ``max_position_embeddings`` defaults to
        ``max(512, ctx.seq_len)``; ``config_overrides`` are ``BertConfig`` fields."""
        return bert_config(ctx, cls.method_name, max_position_embeddings, **config_overrides)

    def pair_head(self, pooled: Tensor) -> Tensor:  # pragma: no cover
        """Scores ``(B, 2)`` of the pair task from the pooled ``[CLS]`` output ``(B, D)``."""
        raise NotImplementedError

    def training_data(
        self,
        dataset: Any,  # noqa: ANN401
        tokenizer: Any,  # noqa: ANN401
        seq_len: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
    ) -> tuple[SentencePairs, PairCollate]:
        """Sentence pairs of the documents for ``pair_task`` (NSP: IsNext / NotNext; SOP:
        in-order / swapped consecutive segments), padded to each batch's longest.

        The pairs' random stream is seeded by the source's ``seed`` (the run's seed), the epoch,
        the rank and the DataLoader worker.
        """
        pairs = SentencePairs(
            dataset,
            tokenizer,
            seq_len,
            task=self.pair_task,
            short_seq_prob=self.short_seq_prob,
            seed=getattr(dataset, "seed", 0),
            rank=rank,
            world_size=world_size,
        )
        return pairs, PairCollate(tokenizer.pad_token_id)

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        # (B,) NSP: 1 = NotNext; SOP: 1 = swapped
        pair_label = pair_labels(batch, LABEL_KEYS[self.pair_task], self.method_name)
        masked, labels, attention_mask = self.mask(batch)
        out = self.encoder(
            input_ids=masked,
            attention_mask=attention_mask,
            token_type_ids=batch.get("token_type_ids"),
        )
        selected = labels != IGNORE_INDEX  # (B, L) True = masked, predicted
        mlm_logits = self.mlm_head(out.last_hidden_state[selected])  # (N, V)
        mlm_loss, mlm_acc = masked_lm_loss(mlm_logits, labels[selected])
        task_logits = self.pair_head(out.pooler_output)  # (B, 2)
        task_loss, task_acc = pair_loss(task_logits, pair_label)
        task = self.pair_task
        return {
            "loss": mlm_loss + task_loss,
            "mlm_loss": mlm_loss.detach(),
            f"{task}_loss": task_loss.detach(),
            "mlm_acc": mlm_acc,
            f"{task}_acc": task_acc,
        }


@register_method("bert", "BERT (Devlin et al. 2019): masked LM + next-sentence prediction")
class BertPretraining(SentencePairPretraining):
    """BERT pretraining (Devlin et al. 2019): MLM + next-sentence prediction on sentence pairs.

    Args:
        config: the encoder's ``BertConfig`` (``vocab_size`` at least ``len(tokenizer)``).
        tokenizer: the fast tokenizer of the data (gives [MASK], the special ids, and is exported).
        short_seq_prob: probability of a shorter target length when building pairs.
        mlm_probability, mask_replace, random_replace: the masking rates (``MaskedEncoder``).
    """

    method_name: ClassVar[str] = "bert"
    pair_task: ClassVar[str] = "nsp"  # IsNext / NotNext pairs
    tokenizer_kind: ClassVar[str] = "wordpiece"

    def create_model(self, config: BertConfig) -> BertForPreTraining:
        # encoder .bert (with the pooler NSP reads) + heads .cls.predictions / .cls.seq_relationship
        return BertForPreTraining(config)

    @property
    def encoder(self) -> nn.Module:
        return self.model.bert

    def mlm_head(self, hidden: Tensor) -> Tensor:
        return self.model.cls.predictions(hidden)

    def pair_head(self, pooled: Tensor) -> Tensor:
        return self.model.cls.seq_relationship(pooled)
