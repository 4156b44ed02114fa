"""Causal language modelling: GPT (Radford et al. 2018, "Improving Language Understanding by
Generative Pre-Training") and GPT-2 (Radford et al. 2019, "Language Models are Unsupervised
Multitask Learners"). Neither has an arXiv version; both are OpenAI reports, at
https://cdn.openai.com/research-covers/language-unsupervised/language_understanding_paper.pdf
and https://cdn.openai.com/better-language-models/ (file
language_models_are_unsupervised_multitask_learners.pdf).

A decoder-only Transformer (``transformers.GPT2LMHeadModel``, randomly initialised) reads a block
of tokens and, at every position t, predicts token t + 1 from tokens 0..t; the loss is the mean
cross-entropy over all next-token targets of the batch.

Data (:class:`CausalBlocks`): every document is followed by the tokenizer's eos (``</s>`` for
byte-level BPE, GPT-2's ``<|endoftext|>``), the documents are joined into one stream and the
stream is cut into blocks of exactly ``seq_len`` tokens, with no padding and no token added at the
block edges (the library's default :class:`PackedBlocks` puts ``<s>``/``</s>`` around every block,
which would teach a false end of document at each block's last position). The eos after a
document is an ordinary target: the model must learn where documents end. The loss mask
therefore comes from ``attention_mask`` (1 = real token), never from ``input_ids ==
pad_token_id``, which would drop every eos when padding shares eos's id (the common GPT-2
setting). Attention is causal (no position sees a later one) and, as in GPT-2, it
crosses the document boundaries inside a block: a document's first tokens see the end of the one
before.

Sizes by backbone name: ``gpt2`` is GPT-2 small (12 layers, hidden 768, 12 heads); the BERT names
of :mod:`selfsup.backbones.text_configs` (``bert-tiny/mini/small/medium/base``) give a GPT-2 block stack
with the same layers / hidden / heads (feed-forward 4x hidden). Default ``bert-mini``.

Paper defaults kept: pre-LayerNorm blocks with a final LayerNorm, GELU, learned positions,
dropout 0.1 on embeddings, residuals and attention, layer-norm eps 1e-5, N(0, 0.02)
initialisation with residual projections scaled by 1/sqrt(2 * n_layer) (GPT-2 section 2.3;
transformers' ``GPT2PreTrainedModel`` does this), output layer tied to the token embedding. The
context is the run's ``seq_len`` (GPT-2: 1024).

Optimisation (:attr:`CausalLM.defaults`): GPT-1 used Adam, lr 2.5e-4, 2000 warm-up steps and
cosine decay to 0; GPT-2 publishes no recipe. We take the one published for GPT-2-sized models,
GPT-3's (Brown et al. 2020, "Language Models are Few-Shot Learners", arXiv:2005.14165, appendix
B): AdamW, betas (0.9, 0.95), eps 1e-8, weight decay 0.1, linear warm-up then cosine decay to 10 %
of the peak, gradient clipping at 1.0 (set ``optim.clip_grad=1.0``; a method cannot set it).
Deviations, with reasons beside ``defaults``: the peak lr and the warm-up length.

Evaluation: ``perplexity`` (:mod:`selfsup.evaluate.protocols.lm`, which calls
:meth:`CausalLM.token_nll`), and ``knn`` / ``linear`` on :meth:`CausalLM.embed` features.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import GPT2Config, GPT2LMHeadModel, PretrainedConfig

from selfsup.backbones.text import PooledEncoder, pool, save_pretrained
from selfsup.data.packing import PackedBlocks
from selfsup.data.tokenizer import save_tokenizer
from selfsup.losses.distributed import global_mean
from selfsup.methods.base import BuildContext, Method, OptimDefaults, register_method
from selfsup.registry import UnknownNameError
from selfsup.views.tokens import IGNORE_INDEX

# name -> (layers, hidden, heads); the BERT names mirror selfsup.backbones.text_configs
GPT_SIZES: dict[str, tuple[int, int, int]] = {
    "bert-tiny": (2, 128, 2),
    "bert-mini": (4, 256, 4),
    "bert-small": (4, 512, 8),
    "bert-medium": (8, 512, 8),
    "bert-base": (12, 768, 12),
    "gpt2": (12, 768, 12),  # GPT-2 small (Radford et al. 2019, table 2)
}


def next_token_labels(input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    """Next-token targets of ``input_ids: (B, L)``: ``(B, L - 1)``, position t holding token t + 1.

    A target is kept where both token t and token t + 1 are real (``attention_mask``: 1 = real)
    and is ``IGNORE_INDEX`` elsewhere. Token ids play no part, so an eos whose id is also the pad
    id stays a target.
    """
    real = attention_mask.bool()
    keep = real[:, :-1] & real[:, 1:]  # (B, L-1) True = predicted
    return torch.where(keep, input_ids[:, 1:], torch.full_like(input_ids[:, 1:], IGNORE_INDEX))


class CausalBlocks(PackedBlocks):
    """GPT-style token blocks: each document followed by eos, the stream cut into ``seq_len``
    tokens with nothing added at the block edges (no [CLS]/[SEP] per block, unlike
    :class:`PackedBlocks`, whose block-final separator would be a fake end of document).

    Items are ``{"input_ids", "attention_mask", "special_tokens_mask"}`` of shape ``(L,)``.
    With ``keep_tail`` the final partial block is yielded too, right-padded with the pad id (eos
    when the tokenizer has none) and ``attention_mask`` 0 there (evaluation keeps every token).
    Other arguments: see :class:`PackedBlocks`.
    """

    def __init__(self, *args: Any, keep_tail: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        tokenizer = self.tokenizer
        if tokenizer.eos_token_id is not None:  # BPE; WordPiece falls back on [SEP]
            self.sep_id = tokenizer.eos_token_id
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.sep_id
        self.keep_tail = keep_tail

    def _block(self, content: list[int]) -> dict[str, Tensor]:
        ids = torch.full((self.seq_len,), self.pad_id, dtype=torch.long)  # (L,)
        ids[: len(content)] = torch.tensor(content, dtype=torch.long)
        mask = torch.zeros_like(ids)
        mask[: len(content)] = 1  # 1 = real token
        return {
            "input_ids": ids,
            "attention_mask": mask,
            "special_tokens_mask": torch.isin(ids, self.special_ids),
        }

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        stream: list[int] = []  # tokens not yet emitted, fewer than seq_len between documents
        for ids in self._token_lists():
            stream.extend(ids)
            stream.append(self.sep_id)
            start = 0  # cut with an offset: a long document must not cost O(len^2) list shifts
            while len(stream) - start >= self.seq_len:
                yield self._block(stream[start : start + self.seq_len])
                start += self.seq_len
            del stream[:start]
        if self.keep_tail and len(stream) > 1:  # one token alone has no target
            yield self._block(stream)


def build_gpt_config(name: str, vocab_size: int, n_positions: int, **overrides: Any) -> GPT2Config:
    """The ``GPT2Config`` of size ``name`` (a key of :data:`GPT_SIZES`).

    Args:
        name: ``gpt2`` or a BERT size name (same layers / hidden / heads).
        vocab_size: rows of the token embedding (and of the tied output layer).
        n_positions: the context length.
        **overrides: ``GPT2Config`` fields to change.

    Raises:
        UnknownNameError: ``name`` is not a size (the message lists them).
        TypeError: an override is not a ``GPT2Config`` field (the message names it).
    """
    if name not in GPT_SIZES:
        raise UnknownNameError(f"unknown gpt size {name!r}. Valid: {', '.join(GPT_SIZES)}")
    known = {*GPT2Config().to_dict(), *GPT2Config.attribute_map, "attn_implementation"}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise TypeError(f"not GPT2Config fields: {', '.join(unknown)}")
    layers, hidden, heads = GPT_SIZES[name]
    sizes = {"n_layer": layers, "n_embd": hidden, "n_head": heads}
    return GPT2Config(vocab_size=vocab_size, n_positions=n_positions, **{**sizes, **overrides})


@register_method("gpt", "GPT causal language modelling (Radford et al. 2018/2019)")
class CausalLM(Method):
    """GPT / GPT-2 next-token prediction on packed blocks.

    Args:
        config: the decoder's ``GPT2Config`` (``vocab_size`` at least ``len(tokenizer)``).
        tokenizer: the fast tokenizer of the data (gives eos; exported with the model).
    """

    kind: ClassVar[str] = "text"
    default_backbone: ClassVar[str | None] = "bert-mini"  # its sizes, as a GPT-2 config
    poolings: ClassVar[tuple[str, ...]] = ("mean", "last")
    tokenizer_kind: ClassVar[str] = "bpe"
    protocols: ClassVar[tuple[str, ...]] = ("perplexity", "knn", "linear", "finetune")

    @classmethod
    def backbone_choices(cls) -> list[str]:
        """The sizes of :data:`GPT_SIZES` (the BERT size names and ``gpt2``)."""
        return list(GPT_SIZES)

    # GPT-3's recipe (module docstring) but a higher peak lr: GPT-3 uses 6e-4 at GPT-2 small's
    # size and raises lr as models shrink (its table 2.1), and nanoGPT trains its 6-layer,
    # 384-wide model at 1e-3. The library's sizes (bert-mini by default) are smaller still and
    # its runs short, so 1e-3; use lr=6e-4 for gpt2. Warm-up: the library's 10 % of the budget,
    # since GPT-1's 2000 steps are most of a short run; final lr 10 % of the peak (GPT-3).
    defaults: ClassVar[OptimDefaults] = OptimDefaults(
        optimizer="adamw", lr=1e-3, weight_decay=0.1, betas=(0.9, 0.95), final_lr=0.1
    )

    def __init__(self, config: GPT2Config, tokenizer: Any) -> None:  # noqa: ANN401
        super().__init__()
        if config.vocab_size < len(tokenizer):
            raise ValueError(
                f"config.vocab_size {config.vocab_size} < len(tokenizer) {len(tokenizer)}"
            )
        if tokenizer.eos_token_id is None and tokenizer.sep_token_id is None:
            raise ValueError("causal language modelling needs a tokenizer with an eos token")
        if not config.tie_word_embeddings:  # export() relies on it to carry the output layer
            raise ValueError("tie_word_embeddings: GPT ties the output layer to the embedding")
        self.model = GPT2LMHeadModel(config)  # decoder .transformer + .lm_head tied to wte
        self.tokenizer = tokenizer

    @classmethod
    def build(
        cls,
        ctx: BuildContext,
        *,
        n_positions: int | None = None,
        **config_overrides: Any,
    ) -> CausalLM:
        """Build from the run's backbone name (default ``bert-mini``), tokenizer and ``seq_len``.

        ``n_positions`` (the context) defaults to ``ctx.seq_len``; other keyword arguments
        override ``GPT2Config`` fields (``n_layer``, ``n_embd``, ``n_head``, ``resid_pdrop``...).
        """
        tokenizer = ctx.tokenizer
        if tokenizer is None:
            raise ValueError("the gpt method needs a tokenizer (BuildContext.tokenizer)")
        positions = n_positions or ctx.seq_len
        if positions < ctx.seq_len:
            raise ValueError(f"n_positions {positions} < seq_len {ctx.seq_len}")
        eos = (
            tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
        )
        # GPT-2's convention: generation starts after an eos, as documents do in the blocks
        special = {"bos_token_id": eos, "eos_token_id": eos, "pad_token_id": tokenizer.pad_token_id}
        config = build_gpt_config(
            cls.backbone_for(ctx),
            len(tokenizer),
            positions,
            **{**special, **config_overrides},
        )
        return cls(config, tokenizer)

    @classmethod
    def argument_names(cls) -> list[str]:
        """``n_positions`` and the ``GPT2Config`` fields of the decoder, less those set from the
        tokenizer (vocabulary, special ids), the tied output layer, and the fields of other GPT-2
        heads (``summary_*``, cross-attention)."""
        gpt = set(GPT2Config().to_dict()) - set(PretrainedConfig().to_dict())
        gpt -= {"vocab_size", "tie_word_embeddings", "use_cache", "add_cross_attention"}
        gpt -= {"bos_token_id", "eos_token_id", "pad_token_id"}
        gpt = {k for k in gpt if not k.startswith("summary_")}
        return sorted({*super().argument_names(), *gpt, *GPT2Config.attribute_map})

    def training_data(
        self,
        dataset: Any,  # noqa: ANN401
        tokenizer: Any,  # noqa: ANN401
        seq_len: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
    ) -> tuple[CausalBlocks, None]:
        """GPT-style blocks of the training split (see :class:`CausalBlocks`)."""
        return CausalBlocks(dataset, tokenizer, seq_len, rank=rank, world_size=world_size), None

    def _hidden(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        ids = batch["input_ids"]
        attention_mask = batch.get("attention_mask")
        if attention_mask is None:
            attention_mask = torch.ones_like(ids)
        out = self.model.transformer(input_ids=ids, attention_mask=attention_mask, use_cache=False)
        return out.last_hidden_state, attention_mask  # (B, L, D), (B, L)

    def token_nll(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Summed next-token negative log-likelihood (nats) of ``batch`` and its target count.

        Args:
            batch: ``input_ids (B, L)`` and ``attention_mask (B, L)`` (1 = real token; all ones
                if absent).

        Returns:
            ``(sum_nll, count)``: fp32 scalar and int64 scalar; ``sum_nll / count`` is the loss,
            ``exp`` of that over a whole corpus its perplexity.
        """
        hidden, attention_mask = self._hidden(batch)
        labels = next_token_labels(batch["input_ids"], attention_mask)  # (B, L-1)
        kept = labels != IGNORE_INDEX  # (B, L-1) True = predicted
        # the output layer only where there is a target (none after the last real token)
        logits = self.model.lm_head(hidden[:, :-1][kept])  # (N, V)
        nll = F.cross_entropy(logits.float(), labels[kept], reduction="sum")
        return nll, kept.sum()

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        nll, count = self.token_nll(batch)
        return {"loss": global_mean(nll, count)}  # over every process's targets

    def encoder_for_finetuning(self) -> nn.Module:
        """The encoder as ``(input_ids, attention_mask) -> (B, D)`` for ``--protocol finetune``
        (pooled like ``embed``; its weights are shared, the protocol copies them)."""
        return PooledEncoder(self.model.transformer, self.pooling or "mean")

    @torch.no_grad()
    def embed(self, batch: dict[str, Tensor]) -> Tensor:
        """Final hidden states pooled over real tokens: ``(B, D)``, their mean by default.

        ``pooling="last"`` takes the last real token's state instead, the only one that has seen
        the whole text. Texts tokenised with the BPE template (``<s> text </s>``, as the kNN /
        linear protocols do) start with ``<s>``, which training blocks never contain; its state
        is averaged in like any other.
        """
        hidden, attention_mask = self._hidden(batch)
        return pool(hidden, attention_mask, self.pooling or "mean")  # (B, D)

    def export(self, path: Path) -> None:
        """Write the decoder (``GPT2Model``) and the tokenizer to the directory ``path``.

        ``transformers.AutoModel.from_pretrained(path)`` gives the decoder's hidden states and,
        since the output layer is the token embedding (tied), ``AutoModelForCausalLM`` rebuilds the
        whole language model from the same files.
        """
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        save_pretrained(self.model.transformer, path)  # safetensors
        save_tokenizer(self.tokenizer, path)
