"""Masked language modelling: BERT (Devlin et al. 2019, "BERT: Pre-training of Deep Bidirectional
Transformers for Language Understanding").

A bidirectional Transformer encoder reads a token block in which 15 % of the tokens were selected
and corrupted (80 % -> [MASK], 10 % -> a random token, 10 % unchanged) and predicts the original
tokens at the selected positions; the loss is the cross-entropy there. Masking is dynamic
(RoBERTa, Liu et al. 2019): a fresh mask is drawn every time a block is seen, on the device, inside
``forward``. BERT's next-sentence prediction is left out, as in RoBERTa, which found it does not help
(the ``bert`` method has it).

Paper defaults (BERT-Base): AdamW, lr 1e-4, betas (0.9, 0.999), weight decay 0.01 (none on biases
and LayerNorm), linear warm-up over the first 10k of 1M steps then linear decay, batch 256 blocks
of 512 tokens (128 for the first 90 % of steps), dropout 0.1, mask probability 0.15 with 80/10/10
replacement. The sizes are in ``selfsup.backbones.text_configs`` (default ``bert-mini``).

:class:`MaskedEncoder` holds what every masked-token method of the library shares (``mlm``,
``bert``, ``roberta``, ``albert``): the masking and its rates (constructor and ``build`` keywords),
``build``, the masked-LM ``forward``, ``token_logits`` / ``predict_masked`` for the ``mlm`` and
``pseudo_perplexity`` evaluation protocols, mean-pooled ``embed`` and ``export``.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from transformers import PretrainedConfig, PreTrainedModel

from selfsup.backbones.text import PooledEncoder, save_pretrained
from selfsup.backbones.text_configs import (
    bert_config_fields,
    build_mlm_model,
    build_text_config,
    deberta_config_fields,
    mlm_model_class,
)
from selfsup.data.tokenizer import save_tokenizer
from selfsup.losses.classification import masked_lm_loss
from selfsup.methods.base import BuildContext, Method, OptimDefaults, register_method
from selfsup.views.tokens import IGNORE_INDEX, check_masking, mask_batch


def bert_config(
    ctx: BuildContext,
    method: str,
    max_position_embeddings: int | None = None,
    *,
    allow_deberta: bool = False,
    **config_overrides: Any,
) -> PretrainedConfig:
    """The ``BertConfig`` of the run's backbone (default ``bert-mini``) for ``ctx.tokenizer``.

    ``max_position_embeddings`` defaults to ``max(512, ctx.seq_len)`` so that the exported encoder
    accepts BERT's usual lengths; the pad id is the tokenizer's; ``config_overrides`` are
    ``BertConfig`` fields. ``method`` names the method in errors. With ``allow_deberta`` a
    DeBERTa backbone name gives its ``DebertaV2Config`` (the plain masked LM accepts both).
    """
    tokenizer = ctx.tokenizer
    if tokenizer is None:
        raise ValueError(f"the {method} method needs a tokenizer (BuildContext.tokenizer)")
    max_positions = max_position_embeddings or max(512, ctx.seq_len)
    if max_positions < ctx.seq_len:
        raise ValueError(f"max_position_embeddings {max_positions} < seq_len {ctx.seq_len}")
    # the pad row of the embedding gets no gradient, so it must be the tokenizer's pad id
    # (BertConfig's default 0 is <s> for a byte-level BPE tokenizer)
    overrides = {"pad_token_id": tokenizer.pad_token_id, **config_overrides}
    name = ctx.backbone or MaskedEncoder.default_backbone
    if allow_deberta:
        return build_mlm_model(name, len(tokenizer), max_positions, **overrides)[0]
    return build_text_config(name, len(tokenizer), max_positions, **overrides)


class MaskedEncoder(Method):
    """Base of the methods that train a Transformer encoder to predict masked tokens.

    It takes the masking rates (for every subclass: its constructor's and ``build``'s keywords)
    and keeps the pretraining model as ``self.model``. A subclass defines :meth:`model_config`
    (the run's context to its ``transformers`` config), :meth:`create_model` (that config to the
    model), ``encoder`` (the base model that ``export`` writes: ``BertModel``, ``RobertaModel``,
    ...) and ``mlm_head`` (hidden states to vocabulary scores). ``forward`` is the masked-LM loss;
    a subclass with a second task overrides it.

    Args:
        config: the encoder's config (``vocab_size`` at least ``len(tokenizer)``).
        tokenizer: the fast tokenizer of the data (gives [MASK], the special ids, and is exported).
        mlm_probability: fraction of non-special tokens selected for prediction.
        mask_replace: fraction of selected tokens replaced by [MASK].
        random_replace: fraction of selected tokens replaced by a random regular token.
    """

    kind: ClassVar[str] = "text"
    default_backbone: ClassVar[str | None] = "bert-mini"
    poolings: ClassVar[tuple[str, ...]] = ("mean", "cls")
    protocols: ClassVar[tuple[str, ...]] = (
        "mlm",
        "pseudo_perplexity",
        "knn",
        "linear",
        "finetune",
    )
    segment_ids: ClassVar[bool] = False  # trained with token_type_ids: the export returns them

    def __init__(
        self,
        config: PretrainedConfig,
        tokenizer: Any,  # noqa: ANN401
        *,
        mlm_probability: float = 0.15,
        mask_replace: float = 0.8,
        random_replace: float = 0.1,
    ) -> None:
        super().__init__()
        self.set_masking(
            tokenizer, mlm_probability, mask_replace, random_replace, config.vocab_size
        )
        self.model = self.create_model(config)

    @classmethod
    def build(
        cls,
        ctx: BuildContext,
        *,
        mlm_probability: float = 0.15,
        mask_replace: float = 0.8,
        random_replace: float = 0.1,
        max_position_embeddings: int | None = None,
        **config_overrides: Any,
    ) -> MaskedEncoder:
        """Build from the run's backbone (default ``bert-mini``), tokenizer and ``seq_len``.

        ``max_position_embeddings`` defaults to ``max(512, ctx.seq_len)`` so that the exported
        encoder accepts BERT's usual lengths; other keyword arguments override ``BertConfig``
        fields (``hidden_size``, ``num_hidden_layers``, ...) or are :meth:`model_config`'s own.
        """
        config = cls.model_config(ctx, max_position_embeddings, **config_overrides)
        return cls(
            config,
            ctx.tokenizer,
            mlm_probability=mlm_probability,
            mask_replace=mask_replace,
            random_replace=random_replace,
        )

    @classmethod
    def model_config(  # pragma: no cover
        cls, ctx: BuildContext, max_position_embeddings: int | None, **config_overrides: Any
    ) -> PretrainedConfig:
        """The ``transformers`` config of the run's backbone for ``ctx.tokenizer`` (see
        :func:`bert_config`); keyword-only parameters a subclass adds are method arguments."""
        raise NotImplementedError

    def create_model(self, config: PretrainedConfig) -> PreTrainedModel:  # pragma: no cover
        """The ``transformers`` pretraining model (encoder and heads) of ``config``."""
        raise NotImplementedError

    @classmethod
    def config_fields(cls) -> set[str]:
        """Names of the config fields ``build`` accepts as overrides: ``BertConfig``'s."""
        return bert_config_fields()

    @classmethod
    def argument_names(cls) -> list[str]:
        """The masking rates and ``max_position_embeddings`` (:meth:`MaskedEncoder.build`), a
        subclass's own keywords (its ``build``'s, constructor's and :meth:`model_config`'s) and
        any :meth:`config_fields` name."""

        def keywords(function: Any) -> set[str]:  # noqa: ANN401
            parameters = inspect.signature(function).parameters.values()
            return {p.name for p in parameters if p.kind is p.KEYWORD_ONLY}

        shared = keywords(MaskedEncoder.build) | keywords(cls.model_config)
        return sorted({*super().argument_names(), *shared, *cls.config_fields()})

    def set_masking(
        self,
        tokenizer: Any,  # noqa: ANN401
        mlm_probability: float,
        mask_replace: float,
        random_replace: float,
        vocab_size: int,
    ) -> None:
        """Check ``tokenizer`` against the model's ``vocab_size`` and keep the masking settings.

        Args:
            tokenizer: the fast tokenizer of the data (gives [MASK], the special ids; exported).
            mlm_probability: fraction of non-special tokens selected for prediction.
            mask_replace: fraction of selected tokens replaced by [MASK].
            random_replace: fraction of selected tokens replaced by a random regular token.
            vocab_size: rows of the model's token embedding (at least ``len(tokenizer)``).
        """
        if tokenizer.mask_token_id is None:
            raise ValueError("masked language modelling needs a tokenizer with a mask token")
        check_masking(mlm_probability, mask_replace, random_replace)
        if vocab_size < len(tokenizer):
            raise ValueError(f"config.vocab_size {vocab_size} < len(tokenizer) {len(tokenizer)}")
        self.tokenizer = tokenizer
        self.mlm_probability = mlm_probability
        self.mask_replace = mask_replace
        self.random_replace = random_replace
        self.mask_token_id = tokenizer.mask_token_id
        self.vocab_size = len(tokenizer)  # random replacements come from the tokenizer's ids only
        self.special_token_ids = sorted(set(tokenizer.all_special_ids))

    @property
    def encoder(self) -> nn.Module:  # pragma: no cover
        """The base encoder (``last_hidden_state``), without pretraining heads."""
        raise NotImplementedError

    def mlm_head(self, hidden: Tensor) -> Tensor:  # pragma: no cover
        """Vocabulary scores ``(N, V)`` of hidden states ``(N, D)``."""
        raise NotImplementedError

    def mask(
        self, batch: dict[str, Tensor], generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """BERT's 80/10/10 masking of ``batch["input_ids"]`` (a fresh draw each call).

        Args:
            batch: ``input_ids (B, L)``, optional ``attention_mask (B, L)`` (1 = token) and
                ``special_tokens_mask (B, L)`` (True = special; derived from the ids if absent).
            generator: masking RNG on the batch's device; None = torch's global RNG.

        Returns:
            ``(masked_ids, labels, attention_mask)``, all ``(B, L)``; ``labels`` holds the
            original id at selected positions and ``IGNORE_INDEX`` elsewhere.
        """
        return mask_batch(
            batch,
            mask_token_id=self.mask_token_id,
            vocab_size=self.vocab_size,
            special_token_ids=self.special_token_ids,
            mlm_probability=self.mlm_probability,
            mask_replace=self.mask_replace,
            random_replace=self.random_replace,
            generator=generator,
        )

    def token_logits(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        selected: Tensor,
        token_type_ids: Tensor | None = None,
    ) -> Tensor:
        """Vocabulary scores at the selected positions of an (already masked) input.

        Args:
            input_ids: ``(B, L)`` token ids as the encoder should read them.
            attention_mask: ``(B, L)``, 1 = token, 0 = padding.
            selected: ``(B, L)`` bool, True = position to score.
            token_type_ids: optional ``(B, L)`` segment ids (0 = A, 1 = B).

        Returns:
            ``(N, V)`` logits at the N selected positions, in row-major order.
        """
        hidden = self.encoder(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).last_hidden_state  # (B, L, D)
        # The vocabulary projection (D x V per token) is most of a small encoder's compute; apply
        # the head only at the ~15 % selected positions instead of at all B * L.
        return self.mlm_head(hidden[selected])  # (N, V)

    def predict_masked(
        self, batch: dict[str, Tensor], generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Mask ``batch`` afresh and predict the selected tokens.

        Args:
            batch: ``input_ids (B, L)``, ``attention_mask (B, L)`` (1 = token),
                ``special_tokens_mask (B, L)`` (True = special; derived from the ids if absent)
                and optionally ``token_type_ids (B, L)``.
            generator: masking RNG on the batch's device; None = torch's global RNG.

        Returns:
            ``(logits (N, V), targets (N,))`` at the N selected positions.
        """
        masked, labels, attention_mask = self.mask(batch, generator)
        selected = labels != IGNORE_INDEX  # (B, L) True = masked, predicted
        logits = self.token_logits(masked, attention_mask, selected, batch.get("token_type_ids"))
        return logits, labels[selected]

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        logits, targets = self.predict_masked(batch)  # a fresh mask: dynamic masking
        loss, accuracy = masked_lm_loss(logits, targets)
        return {"loss": loss, "mlm_acc": accuracy}

    def encoder_for_finetuning(self) -> nn.Module:
        """The encoder as ``(input_ids, attention_mask) -> (B, D)`` for ``--protocol finetune``
        (pooled like ``embed``; its weights are shared, the protocol copies them)."""
        return PooledEncoder(self.encoder, self.pooling or "mean")

    @torch.no_grad()
    def embed(self, batch: dict[str, Tensor]) -> Tensor:
        """Mean of the encoder's last hidden states over non-padding tokens: ``(B, D)``."""
        ids = batch["input_ids"]
        attention_mask = batch.get("attention_mask")
        if attention_mask is None:
            attention_mask = torch.ones_like(ids)
        return self.encoder_for_finetuning()(ids, attention_mask)

    def export(self, path: Path) -> None:
        """Write the encoder (no pretraining heads) and the tokenizer to the directory ``path``.

        ``config.json`` + ``model.safetensors`` load with ``transformers.AutoModel`` (which may add
        an untrained pooler: use ``last_hidden_state``), the tokenizer files with
        ``AutoTokenizer``.
        """
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        save_pretrained(self.encoder, path)  # safetensors
        save_tokenizer(self.tokenizer, path, segment_ids=self.segment_ids)


@register_method("mlm")
class MaskedLM(MaskedEncoder):
    """BERT masked language modelling (Devlin et al. 2019) with dynamic masking.

    Args:
        config: the encoder's ``BertConfig`` or ``DebertaV2Config`` (``vocab_size`` at least
            ``len(tokenizer)``).
        tokenizer: the fast tokenizer of the data (gives [MASK], the special ids, and is exported).
        mlm_probability, mask_replace, random_replace: the masking rates (:class:`MaskedEncoder`).
    """

    # BERT used lr 1e-4 for 1M steps of BERT-Base. The runs this library targets are short
    # (minutes to hours) and the models small, where 5e-4 trains much faster and stays stable:
    # ELECTRA-Small's generator/discriminator (Clark et al. 2020) and Turc et al.'s compact BERTs
    # use lr up to 5e-4 / 1e-3 at these sizes. Use lr=1e-4 for BERT-Base.
    defaults: ClassVar[OptimDefaults] = OptimDefaults(
        optimizer="adamw", lr=5e-4, weight_decay=0.01, betas=(0.9, 0.999)
    )

    @classmethod
    def model_config(
        cls, ctx: BuildContext, max_position_embeddings: int | None, **config_overrides: Any
    ) -> PretrainedConfig:
        """The backbone's ``BertConfig`` or, for a DeBERTa backbone, ``DebertaV2Config``."""
        return bert_config(
            ctx, "mlm", max_position_embeddings, allow_deberta=True, **config_overrides
        )

    def create_model(self, config: PretrainedConfig) -> PreTrainedModel:
        # encoder .bert / .deberta + head .cls, decoder tied to the input embeddings
        return mlm_model_class(config)(config)

    @property
    def encoder(self) -> nn.Module:
        return self.model.base_model

    def mlm_head(self, hidden: Tensor) -> Tensor:
        return self.model.cls(hidden)

    @classmethod
    def config_fields(cls) -> set[str]:
        """Any ``BertConfig`` or (for DeBERTa backbones) ``DebertaV2Config`` field."""
        return bert_config_fields() | deberta_config_fields()
