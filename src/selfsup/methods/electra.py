"""ELECTRA: replaced-token detection (Clark et al. 2020, "ELECTRA: Pre-training Text Encoders as
Discriminators Rather Than Generators", ICLR 2020, https://arxiv.org/abs/2003.10555).

A small generator, trained as a masked language model, fills the masked positions of a block with
tokens sampled from its softmax; the discriminator, the encoder kept for downstream use, reads the
result and classifies every token as original or replaced. The two are trained jointly on

    loss = L_MLM(generator) + lambda * L_RTD(discriminator),     lambda = 50   (section 2)

where L_RTD is the binary cross-entropy averaged over every real (non-padding) token. The sample is
drawn without gradient: the discriminator's loss does not reach the generator (no straight-through
or Gumbel-softmax; section 2). A sampled token that happens to equal the original is labelled
"original". Masking is dynamic, on the device (RoBERTa's, as in ``mlm``).

Paper defaults (table 6 of the appendix; the authors' ``configure_pretraining.py`` agrees):

* generator: hidden size, feed-forward width and attention heads 1/4 of the discriminator's
  (ELECTRA-Small and -Large; 1/3 for Base), same depth (``generator_size_divisor=4``);
* token and position embeddings shared by generator and discriminator (section 3.2); ELECTRA-Small
  factorises them to 128 dimensions (each tower projects to its hidden size), Base and Large use
  the hidden size. Here the embedding modules are the same objects in both towers, so the MLM and
  the RTD losses both update them; the generator's output layer is tied to the token embedding.
* 15 % of the tokens selected, every selected token replaced by [MASK] (section 2);
* AdamW, lr 5e-4 (Small; 2e-4 Base and Large), betas (0.9, 0.999), eps 1e-6, weight decay 0.01,
  linear warm-up over 10k of 1M steps then linear decay, dropout 0.1, batch 128 blocks of 128
  tokens (Small), sampling temperature 1.

Deviations, named: the tokens are selected by an independent 15 % draw per position (``mlm``'s
masking) rather than exactly ceil(0.15 n) per block; the released code replaces only 85 % of the
selected tokens by [MASK] and leaves the rest, which ``mask_replace=0.85`` reproduces; the default
size is ``electra-small`` (12 layers, 256 hidden, 4 heads, 128-dim embedding) and any BERT-family
backbone name gives the discriminator's size (with the embedding at its hidden size).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from transformers import BertConfig, ElectraConfig, ElectraForMaskedLM, ElectraForPreTraining

from selfsup.backbones.text import PooledEncoder, save_pretrained
from selfsup.backbones.text_configs import bert_config_fields, build_text_config, encoder_fields
from selfsup.data.tokenizer import save_tokenizer
from selfsup.losses.classification import masked_lm_loss, replaced_token_detection_loss
from selfsup.methods.base import BuildContext, Method, OptimDefaults, register_method
from selfsup.views.tokens import IGNORE_INDEX, check_masking, mask_batch, sample_tokens

# ELECTRA-Small's factorised embedding (table 6); other sizes embed at their hidden size.
PAPER_EMBEDDING_SIZE = {"electra-small": 128}


def electra_configs(
    bert: BertConfig, embedding_size: int, generator_size_divisor: float = 4
) -> tuple[ElectraConfig, ElectraConfig]:
    """Discriminator and generator configs from a BERT-shaped size.

    The generator keeps the depth and divides the hidden size, feed-forward width and number of
    attention heads by ``generator_size_divisor`` (heads keep the discriminator's head width, at
    least one head; the authors' ``get_generator_config`` gives ``max(1, hidden // 64)`` heads,
    the same for every registered size, whose heads are 64 wide). Both embed at
    ``embedding_size``.

    Returns:
        ``(discriminator, generator)`` configs.
    """
    disc = ElectraConfig(embedding_size=embedding_size, **encoder_fields(bert))
    hidden = round(bert.hidden_size / generator_size_divisor)
    heads = max(1, hidden // (bert.hidden_size // bert.num_attention_heads))
    if hidden < 1 or hidden % heads:
        raise ValueError(
            f"generator_size_divisor {generator_size_divisor}: a generator of hidden size "
            f"{hidden} cannot have {heads} attention heads"
        )
    widths = {
        "hidden_size": hidden,
        "intermediate_size": round(bert.intermediate_size / generator_size_divisor),
        "num_attention_heads": heads,
    }
    gen = ElectraConfig(embedding_size=embedding_size, **{**encoder_fields(bert), **widths})
    return disc, gen


@register_method("electra")
class Electra(Method):
    """ELECTRA replaced-token detection (Clark et al. 2020): generator MLM + discriminator RTD.

    Args:
        discriminator: the discriminator's ``ElectraConfig``.
        generator: the generator's ``ElectraConfig`` (same ``embedding_size``, vocabulary and
            maximum length as the discriminator's, since the embeddings are shared).
        tokenizer: the fast tokenizer of the data (gives [MASK] and the special ids; exported).
        mlm_probability: fraction of non-special tokens selected for the generator.
        mask_replace: fraction of the selected tokens replaced by [MASK], the rest kept.
        rtd_weight: lambda, the weight of the discriminator's loss.
    """

    kind: ClassVar[str] = "text"
    default_backbone: ClassVar[str | None] = "electra-small"
    poolings: ClassVar[tuple[str, ...]] = ("mean", "cls")
    protocols: ClassVar[tuple[str, ...]] = ("knn", "linear", "finetune")
    defaults: ClassVar[OptimDefaults] = OptimDefaults(
        optimizer="adamw",
        lr=5e-4,
        weight_decay=0.01,
        betas=(0.9, 0.999),
        eps=1e-6,
        warmup=0.01,  # 10k of ELECTRA-Small's 1M steps
        schedule="linear",
    )

    def __init__(
        self,
        discriminator: ElectraConfig,
        generator: ElectraConfig,
        tokenizer: Any,
        *,
        mlm_probability: float = 0.15,
        mask_replace: float = 1.0,
        rtd_weight: float = 50.0,
    ) -> None:
        super().__init__()
        if tokenizer.mask_token_id is None:
            raise ValueError("electra needs a tokenizer with a mask token")
        if discriminator.vocab_size < len(tokenizer):
            raise ValueError(
                f"vocab_size {discriminator.vocab_size} < len(tokenizer) {len(tokenizer)}"
            )
        for field in ("embedding_size", "vocab_size", "max_position_embeddings"):
            if getattr(generator, field) != getattr(discriminator, field):
                raise ValueError(f"generator and discriminator differ in {field}")
        self.discriminator = ElectraForPreTraining(discriminator)
        self.generator = ElectraForMaskedLM(generator)
        # One embedding module (token, position and token-type tables and their LayerNorm) in
        # both towers; each keeps its own projection to its hidden size.
        shared = self.discriminator.electra.embeddings
        self.generator.electra.embeddings = shared
        self.generator.generator_lm_head.weight = shared.word_embeddings.weight
        check_masking(mlm_probability, mask_replace, 0.0)
        self.tokenizer = tokenizer
        self.mlm_probability = mlm_probability
        self.mask_replace = mask_replace
        self.rtd_weight = rtd_weight
        self.mask_token_id = tokenizer.mask_token_id
        self.vocab_size = len(tokenizer)
        self.special_token_ids = sorted(set(tokenizer.all_special_ids))

    @classmethod
    def build(
        cls,
        ctx: BuildContext,
        *,
        mlm_probability: float = 0.15,
        mask_replace: float = 1.0,
        rtd_weight: float = 50.0,
        generator_size_divisor: float = 4,
        embedding_size: int | None = None,
        max_position_embeddings: int | None = None,
        **config_overrides: Any,
    ) -> Electra:
        """Build from the run's backbone name (default ``electra-small``), tokenizer and seq_len.

        ``embedding_size`` defaults to 128 for ``electra-small`` and to the hidden size otherwise;
        ``max_position_embeddings`` to ``max(512, ctx.seq_len)``; other keyword arguments override
        ``BertConfig`` fields of the discriminator's size (``hidden_size``, ...).
        """
        tokenizer = ctx.tokenizer
        if tokenizer is None:
            raise ValueError("the electra method needs a tokenizer (BuildContext.tokenizer)")
        max_positions = max_position_embeddings or max(512, ctx.seq_len)
        if max_positions < ctx.seq_len:
            raise ValueError(f"max_position_embeddings {max_positions} < seq_len {ctx.seq_len}")
        name = cls.backbone_for(ctx)
        overrides = {"pad_token_id": tokenizer.pad_token_id, **config_overrides}
        bert = build_text_config(name, len(tokenizer), max_positions, **overrides)
        if embedding_size is None:
            embedding_size = PAPER_EMBEDDING_SIZE.get(name, bert.hidden_size)
        disc, gen = electra_configs(bert, embedding_size, generator_size_divisor)
        return cls(
            disc,
            gen,
            tokenizer,
            mlm_probability=mlm_probability,
            mask_replace=mask_replace,
            rtd_weight=rtd_weight,
        )

    @classmethod
    def argument_names(cls) -> list[str]:
        """The method's own arguments and any ``BertConfig`` field of the discriminator's size."""
        return sorted({*super().argument_names(), *bert_config_fields()})

    def corrupt_and_detect(
        self, batch: dict[str, Tensor], generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        """Mask, let the generator fill in, and let the discriminator detect the replacements.

        Args:
            batch: ``input_ids (B, L)``, ``attention_mask (B, L)`` (1 = token) and
                ``special_tokens_mask (B, L)`` (True = special; derived from the ids if absent).
            generator: RNG for masking and sampling on the batch's device; None = global RNG.

        Returns:
            ``gen_logits (N, V)`` and ``targets (N,)`` at the N masked positions,
            ``selected (B, L)`` (True = masked), ``corrupted (B, L)`` ids the discriminator read,
            ``replaced (B, L)`` (True = differs from the original), ``disc_logits (B, L)`` and
            ``attention_mask (B, L)``.
        """
        masked, labels, attention_mask = mask_batch(
            batch,
            mask_token_id=self.mask_token_id,
            vocab_size=self.vocab_size,
            special_token_ids=self.special_token_ids,
            mlm_probability=self.mlm_probability,
            mask_replace=self.mask_replace,
            random_replace=0.0,  # ELECTRA: [MASK] (or, with mask_replace < 1, unchanged) only
            generator=generator,
        )
        ids = batch["input_ids"]
        selected = labels != IGNORE_INDEX  # (B, L) True = masked, predicted by the generator
        hidden = self.generator.electra(input_ids=masked, attention_mask=attention_mask)
        # the vocabulary projection only at the ~15 % masked positions, as in mlm
        gen_logits = self.generator.generator_lm_head(
            self.generator.generator_predictions(hidden.last_hidden_state[selected])
        )  # (N, V)
        sampled = sample_tokens(gen_logits, generator)  # (N,) no gradient
        corrupted = ids.masked_scatter(selected, sampled)  # (B, L)
        replaced = corrupted != ids  # (B, L) a sample equal to the original is "original"
        disc_hidden = self.discriminator.electra(
            input_ids=corrupted, attention_mask=attention_mask
        ).last_hidden_state  # (B, L, D)
        return {
            "gen_logits": gen_logits,
            "targets": ids[selected],
            "selected": selected,
            "corrupted": corrupted,
            "replaced": replaced,
            "disc_logits": self.discriminator.discriminator_predictions(disc_hidden),  # (B, L)
            "attention_mask": attention_mask,
        }

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        out = self.corrupt_and_detect(batch)
        mlm_loss, gen_acc = masked_lm_loss(out["gen_logits"], out["targets"])
        rtd_loss, disc_acc = replaced_token_detection_loss(
            out["disc_logits"], out["replaced"], out["attention_mask"]
        )
        real = out["attention_mask"].bool()
        return {
            "loss": mlm_loss + self.rtd_weight * rtd_loss,
            "mlm_loss": mlm_loss.detach(),
            "rtd_loss": rtd_loss.detach(),
            "gen_acc": gen_acc,
            "disc_acc": disc_acc,
            "replaced": out["replaced"][real].float().mean(),  # fraction of real tokens
        }

    def encoder_for_finetuning(self) -> nn.Module:
        """The encoder as ``(input_ids, attention_mask) -> (B, D)`` for ``--protocol finetune``
        (pooled like ``embed``; its weights are shared, the protocol copies them)."""
        return PooledEncoder(self.discriminator.electra, self.pooling or "mean")

    @torch.no_grad()
    def embed(self, batch: dict[str, Tensor]) -> Tensor:
        """Mean of the discriminator's last hidden states over non-padding tokens: ``(B, D)``."""
        ids = batch["input_ids"]
        attention_mask = batch.get("attention_mask")
        if attention_mask is None:
            attention_mask = torch.ones_like(ids)
        return self.encoder_for_finetuning()(ids, attention_mask)

    def export(self, path: Path) -> None:
        """Write the discriminator's encoder (``ElectraModel``, no heads) and the tokenizer.

        ``transformers.AutoModel.from_pretrained(path)`` gives the ``ElectraModel`` back;
        ``ElectraForSequenceClassification`` etc. load it with a new head, as Google's released
        ``electra-*-discriminator`` checkpoints.
        """
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        save_pretrained(self.discriminator.electra, path)
        save_tokenizer(self.tokenizer, path)
