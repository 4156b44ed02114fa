"""Unsupervised SimCSE: Gao, Yao, Chen 2021, "SimCSE: Simple Contrastive Learning of Sentence
Embeddings", EMNLP 2021. https://arxiv.org/abs/2104.08821

Every sentence of a batch goes through the same encoder twice in train mode; the two passes
differ only by their dropout masks, which are the whole augmentation. Each sentence's first
embedding must pick out its own second embedding among the second embeddings of every sentence
of the (global) batch: cross-entropy over cosine similarities divided by a temperature
(section 3) — the one-directional InfoNCE of :class:`~selfsup.losses.registry.TwoViewSoftmaxLoss`.

Paper defaults (unsupervised, section 3 and appendix A), used here unless noted:
    representation: the [CLS] token's last hidden state with an MLP (dense + tanh) over it
        during training only; [CLS] without the MLP at test time (``pooling="cls"``). With
        ``pooling="mean"`` (the "avg." pooling of the paper's ablation) there is no MLP.
    noise: the encoder's standard dropout, p = 0.1 on hidden states and attention.
    temperature 0.05; batch 64 sentences (``--batch-size 64``); sentences truncated to 32
        tokens (``seq_len=32``); one epoch over 10^6 Wikipedia sentences.
    optimizer: AdamW, lr 3e-5 for BERT-base (1e-5 for BERT-large), linear decay, no warm-up,
        no weight decay (the Hugging Face Trainer's defaults the authors ran).

Deviations, because the paper fine-tunes a *pretrained* BERT while our encoders start from random
weights, which makes this run a pretraining rather than a fine-tuning:
    lr 5e-4 with 10 % linear warm-up and weight decay 0.01 — the from-scratch recipe of
        :mod:`selfsup.methods.mlm` for the same small BERTs (BERT's warm-up and decay; the
        compact models of Turc et al. 2019 and ELECTRA-Small train at 5e-4 to 1e-3). 3e-5 only
        nudges weights that already encode language; from random initialisation it barely moves
        them in a short run.

The paper's setting, starting from a pretrained BERT, is ``method_args.init=FOLDER``: a folder
that ``transformers.BertModel.from_pretrained`` reads (a selfsup masked-LM run's ``export/``, or
any local BERT checkpoint), whose tokenizer the run then uses. With it, pass the paper's
fine-tuning recipe: ``optim.lr=3e-5 optim.warmup=0 optim.weight_decay=0``. SimCSE learns
sentence similarity, not topics: from random weights its [CLS] features classify ``wiki-topics``
below those of the random encoder (``benchmarks/text_methods.md``), and a minute of it on a
2-minute masked-LM encoder lowers that encoder's topic accuracy too
(``benchmarks/simcse_init.md``); the paper's gains are on semantic similarity (STS), from a
fully pretrained BERT.

Training examples are sentences: the source's documents are split with
:func:`selfsup.data.text.split_sentences`, shuffled through a buffer, tokenised and padded to the
batch's longest (see :meth:`SimCSE.training_data`). The encoder is a ``BertModel`` of the run's
backbone size (default ``bert-mini``); ``export`` writes it with ``save_pretrained`` for
``transformers.AutoModel`` (use ``last_hidden_state[:, 0]``, the [CLS] vector, as the sentence
embedding; the pooler that ``AutoModel`` adds is untrained).

Index legend: B sentences per process, L tokens, D hidden size.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import BertConfig, PretrainedConfig

from selfsup.backbones.text import TextEncoder, quiet_progress, save_pretrained
from selfsup.backbones.text_configs import build_text_config
from selfsup.data.text import SentenceCollate, SentenceStream
from selfsup.data.tokenizer import save_tokenizer
from selfsup.losses.registry import TwoViewSoftmaxLoss
from selfsup.methods.base import BuildContext, Method, OptimDefaults, register_method


def simcse_loss(z1: Tensor, z2: Tensor, temperature: float = 0.05, gather: bool = True) -> Tensor:
    """Unsupervised SimCSE loss (Gao et al. 2021, section 3).

    ``-log exp(cos(z1_i, z2_i) / t) / sum_j exp(cos(z1_i, z2_j) / t)`` averaged over the local
    sentences i, with j over every sentence of the global batch: under data parallelism the
    second views are gathered from all processes with gradients.

    Args:
        z1: (B, D) first-pass embeddings.
        z2: (B, D) second-pass embeddings, row i the positive of ``z1[i]``.
        temperature: t.
        gather: gather the other processes' ``z2`` as extra negatives.

    Returns:
        Scalar loss (computed in fp32).
    """
    return TwoViewSoftmaxLoss(temperature, gather)(z1, z2)


@register_method(
    "simcse", "SimCSE unsupervised (Gao et al. 2021): each sentence twice through dropout, InfoNCE"
)
class SimCSE(Method):
    """Unsupervised SimCSE. Batches: ``input_ids (B, L)``, ``attention_mask (B, L)``.

    Args:
        config: the encoder's ``BertConfig``; its dropout rates are the augmentation.
        tokenizer: the run's fast tokenizer (exported with the encoder).
        temperature: softmax temperature of the contrastive loss.
        pooling: ``"cls"`` ([CLS] state, MLP during training only) or ``"mean"`` (no MLP).
        bert: a pretrained ``BertModel`` (of ``config``) to start from instead of random weights.
    """

    kind: ClassVar[str] = "text"
    default_backbone: ClassVar[str | None] = "bert-mini"
    poolings: ClassVar[tuple[str, ...]] = ("cls", "mean")
    protocols: ClassVar[tuple[str, ...]] = ("knn", "linear", "finetune")
    tokenizer_kind: ClassVar[str] = "wordpiece"
    # From-scratch recipe; the paper's 3e-5 / no warm-up / no decay is for a pretrained BERT
    # (module docstring).
    defaults: ClassVar[OptimDefaults] = OptimDefaults(
        optimizer="adamw", lr=5e-4, weight_decay=0.01, warmup=0.1, schedule="linear"
    )

    def __init__(
        self,
        config: BertConfig,
        tokenizer: Any,  # noqa: ANN401
        *,
        temperature: float = 0.05,
        pooling: str = "cls",
        bert: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if config.vocab_size < len(tokenizer):
            raise ValueError(
                f"config.vocab_size {config.vocab_size} < len(tokenizer) {len(tokenizer)}"
            )
        # validates pooling; no BERT pooler; ``bert``: a pretrained BertModel to start from
        self.encoder = TextEncoder(config if bert is None else bert, pooling)
        self.mlp: nn.Module | None = None
        if pooling == "cls":  # SimCSE's MLPLayer: dense + tanh, BERT's initialisation
            dense = nn.Linear(config.hidden_size, config.hidden_size)
            nn.init.normal_(dense.weight, std=config.initializer_range)
            nn.init.zeros_(dense.bias)
            self.mlp = nn.Sequential(dense, nn.Tanh())
        self.tokenizer = tokenizer
        self.temperature = temperature
        self._pooling = pooling

    @classmethod
    def build(
        cls,
        ctx: BuildContext,
        *,
        temperature: float = 0.05,
        pooling: str = "cls",
        max_position_embeddings: int | None = None,
        init: str | None = None,
        **config_overrides: Any,
    ) -> SimCSE:
        """Build from the run's backbone name (default ``bert-mini``), tokenizer and ``seq_len``.

        ``max_position_embeddings`` defaults to ``max(512, ctx.seq_len)``; other keyword
        arguments override ``BertConfig`` fields (``hidden_dropout_prob``, ``hidden_size``, ...).
        ``init``: a folder holding a pretrained ``BertModel`` (and its tokenizer) to start from,
        as the paper does; its architecture replaces the backbone's (dropout overrides apply).
        """
        tokenizer = ctx.tokenizer
        if tokenizer is None:
            raise ValueError("the simcse method needs a tokenizer (BuildContext.tokenizer)")
        if init is not None:
            return cls._from_pretrained(init, tokenizer, temperature, pooling, config_overrides)
        max_positions = max_position_embeddings or max(512, ctx.seq_len)
        if max_positions < ctx.seq_len:
            raise ValueError(f"max_position_embeddings {max_positions} < seq_len {ctx.seq_len}")
        overrides = {"pad_token_id": tokenizer.pad_token_id, **config_overrides}
        config = build_text_config(
            cls.backbone_for(ctx), len(tokenizer), max_positions, **overrides
        )
        return cls(config, tokenizer, temperature=temperature, pooling=pooling)

    @classmethod
    def _from_pretrained(
        cls,
        init: str,
        tokenizer: Any,  # noqa: ANN401
        temperature: float,
        pooling: str,
        overrides: dict[str, Any],
    ) -> SimCSE:
        from transformers import BertModel

        folder = Path(init)
        if not (folder / "config.json").is_file():
            raise ValueError(
                f"method_args.init: {folder} holds no config.json; give a folder that "
                "transformers.BertModel.from_pretrained reads, e.g. a masked-LM run's export/"
            )
        try:
            model_type = json.loads((folder / "config.json").read_text()).get("model_type")
        except (OSError, ValueError, AttributeError) as err:
            raise ValueError(
                f"method_args.init: {folder / 'config.json'} is unreadable: {err}"
            ) from None
        if model_type != "bert":  # another architecture would load as a random BERT-Base
            raise ValueError(
                f"method_args.init: {folder} holds a {model_type!r} model, not a BERT encoder; "
                "give the export of a BERT-architecture run (mlm, bert, simcse)"
            )
        from transformers.utils import logging as hf_logging

        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # its report of missing weights: ours follows
        try:
            with quiet_progress():
                bert, loading = BertModel.from_pretrained(
                    str(folder), add_pooling_layer=False, output_loading_info=True, **overrides
                )
        except (OSError, ValueError, TypeError) as err:
            raise ValueError(
                f"method_args.init: cannot load a BERT encoder from {folder}: {err}"
            ) from None
        finally:
            hf_logging.set_verbosity(verbosity)
        if loading["missing_keys"]:  # transformers initialises them at random, silently
            missing = sorted(loading["missing_keys"])
            raise ValueError(
                f"method_args.init: {folder} lacks {len(missing)} of the BERT encoder's weights "
                f"(e.g. {missing[0]}); give a whole BERT export"
            )
        if bert.config.vocab_size < len(tokenizer):
            raise ValueError(
                f"method_args.init: {folder}'s vocabulary ({bert.config.vocab_size}) is smaller "
                f"than the run's tokenizer ({len(tokenizer)}); use the folder's own tokenizer"
            )
        return cls(bert.config, tokenizer, temperature=temperature, pooling=pooling, bert=bert)

    @classmethod
    def tokenizer_path(cls, method_args: dict[str, Any]) -> str | None:
        """With ``init``, the pretrained encoder's own tokenizer."""
        return method_args.get("init")

    @classmethod
    def argument_names(cls) -> list[str]:
        """``temperature``, ``pooling``, ``max_position_embeddings``, any ``BertConfig`` field."""
        bert = set(BertConfig().to_dict()) - set(PretrainedConfig().to_dict()) - {"vocab_size"}
        return sorted({*super().argument_names(), *bert} - {"bert"})  # ``bert``: from ``init``

    def training_data(
        self,
        dataset: Any,  # noqa: ANN401
        tokenizer: Any,  # noqa: ANN401
        seq_len: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
    ) -> tuple[SentenceStream, SentenceCollate]:
        """Sentences of the source's documents, shuffled; batches padded to their longest
        sentence and truncated to ``seq_len`` tokens (the paper: 32)."""
        stream = SentenceStream(dataset, rank=rank, world_size=world_size, seed=seed)
        return stream, SentenceCollate(tokenizer, seq_len)

    def encode_views(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """The two embeddings of every sentence, ``(B, D)`` each, MLP applied when training."""
        ids = batch["input_ids"]  # (B, L)
        mask = batch.get("attention_mask")
        mask = torch.ones_like(ids) if mask is None else mask
        # One pass over the batch twice over: each row draws its own dropout masks.
        z = self.encoder(torch.cat([ids, ids]), torch.cat([mask, mask]))  # (2B, D)
        if self.mlp is not None:
            z = self.mlp(z)
        z1, z2 = z.chunk(2)  # (B, D) each
        return z1, z2

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        z1, z2 = self.encode_views(batch)
        loss = simcse_loss(z1, z2, self.temperature)
        positive_cos = F.cosine_similarity(z1.detach().float(), z2.detach().float()).mean()
        return {"loss": loss, "positive_cos": positive_cos}

    @torch.no_grad()
    def embed(self, batch: dict[str, Tensor]) -> Tensor:
        """The test-time sentence embedding ``(B, D)``: [CLS] without the MLP, or the mean."""
        return self.encoder_for_finetuning()(batch["input_ids"], batch.get("attention_mask"))

    def encoder_for_finetuning(self) -> TextEncoder:
        """The encoder (shared weights) mapping ``input_ids, attention_mask`` to ``(B, D)``,
        pooled as ``embed`` pools; see :mod:`selfsup.evaluate.protocols.finetune`."""
        if self.pooling == self.encoder.pooling:
            return self.encoder
        return TextEncoder(self.encoder.bert, self.pooling or "cls")

    def export(self, path: Path) -> None:
        """Write the ``BertModel`` (no MLP) and the tokenizer to the directory ``path``; both
        load with ``transformers.AutoModel`` / ``AutoTokenizer``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        save_pretrained(self.encoder.bert, path)
        save_tokenizer(self.tokenizer, path)
