"""T5 span corruption (Raffel et al. 2020, "Exploring the Limits of Transfer Learning with a Unified
Text-to-Text Transformer", JMLR 21, https://arxiv.org/abs/1910.10683).

An encoder-decoder reads a token block in which random spans were dropped, each span replaced by
one sentinel token, and generates the dropped spans, each after its sentinel, then EOS
(section 3.1.4 for the sentinel format, 3.3.4 for spans):

    raw:     Thank you for inviting me to your party last week .
    input:   Thank you <extra_id_0> me to your party <extra_id_1> week . </s>
    target:  <extra_id_0> for inviting <extra_id_1> last </s>

As in the reference ``random_spans_noise_mask``: a block of n tokens gets round(0.15 n) noise
tokens (at least 1, at most n - 1) in round(noise / 3) spans (at least 1); the noise and the
non-noise tokens are each cut into that many non-empty spans, every cut equally likely, and the
spans alternate starting with non-noise. Sentinel i is the tokenizer's ``<extra_id_i>``, i
counting the spans from the left, as in T5 (whose SentencePiece vocabulary numbers them down
from the top id; ours are added special tokens numbered up: the names fix the order).
``span_corruption_lengths`` gives the raw block length whose corrupted input has exactly
``seq_len`` tokens, EOS included, and the target length, so packed blocks train with no padding
(the reference's ``compute_input_and_target_lengths``; seq_len 512 packs 568 raw tokens into a
114-token target). Corruption runs on the device, on the whole batch at once, inside
``forward``: a fresh noise mask every time a block is seen.

Paper defaults: noise density 0.15, mean noise span length 3, 100 sentinels, ReLU feed-forward,
dropout 0.1, 32 relative-position buckets, input and output embeddings tied, the decoder started
with the pad id; inputs of 512 tokens, batch 128, 2^19 steps; AdaFactor at lr 0.01 for the
first 10^4 steps then inverse square root decay, no weight decay.

The optimizer follows the paper: AdaFactor (no first moment, update clipping 1, steps relative
to each parameter's RMS as in Mesh TensorFlow, whose defaults T5 used), lr 0.01 held
for the first 10^4 / 2^19 = 1.9 % of the budget, then ``0.01 * sqrt(0.019 / progress)``: on the
paper's 2^19 steps this is exactly ``1 / sqrt(max(n, 10^4))``; on a shorter budget the shape is
kept, compressed to it. ``optim.name=adamw optim.lr=1e-3 optim.schedule=linear`` gives the
AdamW recipe of earlier selfsup versions.

Deviations, named: the blocks are packed across documents with the tokenizer's separator
between them (T5 concatenates documents with none); EOS is the tokenizer's ``eos_token``, or ``sep_token`` for
the BERT-style tokenizers this library trains. The default size translates ``bert-mini``
(``selfsup.backbones.text_configs.build_t5_config``), for comparison with the other objectives at one
size; ``t5-small`` is the paper's Small.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import IterableDataset
from transformers import PretrainedConfig, T5Config, T5ForConditionalGeneration

from selfsup.backbones.text import PooledEncoder, save_pretrained
from selfsup.backbones.text_configs import build_t5_config
from selfsup.data.packing import PackedBlocks
from selfsup.data.tokenizer import save_tokenizer
from selfsup.methods.base import BuildContext, Method, OptimDefaults, register_method


def _noise_counts(length: int, density: float, mean_span: float) -> tuple[int, int]:
    """(noise tokens, noise spans) of a block of ``length`` tokens, clamped as the reference."""
    noise = min(max(round(length * density), 1), length - 1)
    return noise, max(round(noise / mean_span), 1)


def span_corruption_lengths(
    seq_len: int, noise_density: float = 0.15, mean_span: float = 3.0
) -> tuple[int, int]:
    """Raw block length and target length for corrupted inputs of exactly ``seq_len`` tokens.

    A raw block of n tokens with k noise tokens in s spans gives an input of n - k + s + 1 tokens
    (non-noise, one sentinel per span, EOS) and a target of k + s + 1. The input length grows by
    0 or 1 as n grows by 1 (k and s grow by at most 1 each, s no faster than k), so the largest n
    whose input fits has an input of exactly ``seq_len``.

    Returns:
        ``(raw_length, target_length)``.
    """
    if seq_len < 3:
        raise ValueError(f"seq_len must be at least 3 for span corruption, got {seq_len}")

    def input_length(n: int) -> int:
        noise, spans = _noise_counts(n, noise_density, mean_span)
        return n - noise + spans + 1

    n = 2
    while input_length(n + 1) <= seq_len:
        n += 1
    if input_length(n) != seq_len:  # cannot happen (steps of 0 or 1); guards the argument
        raise ValueError(f"no raw length gives inputs of exactly {seq_len} tokens")
    noise, spans = _noise_counts(n, noise_density, mean_span)
    return n, noise + spans + 1


def _random_segmentation(
    total: int, segments: int, batch: int, device: torch.device, generator: torch.Generator | None
) -> Tensor:
    """``(batch, segments)`` positive lengths summing to ``total``, each split equally likely.

    A split is a choice of ``segments - 1`` distinct cut points among the ``total - 1`` gaps;
    ranking i.i.d. uniforms gives a uniformly random such choice per row.
    """
    if segments == 1:
        return torch.full((batch, 1), total, device=device)
    noise = torch.rand(batch, total - 1, generator=generator, device=device)
    cuts = noise.argsort(dim=1)[:, : segments - 1].sort(dim=1).values + 1  # (batch, S-1)
    edges = [torch.zeros_like(cuts[:, :1]), cuts, torch.full_like(cuts[:, :1], total)]
    return torch.cat(edges, dim=1).diff(dim=1)  # (batch, S)


def random_spans_noise_mask(
    batch: int,
    length: int,
    noise_density: float = 0.15,
    mean_span: float = 3.0,
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """T5's noise mask for ``batch`` blocks of ``length`` tokens.

    Returns:
        ``noise (B, L)`` bool (True = dropped into the target) and ``span (B, L)`` int64, the
        index j of the noise span at noise tokens and of the non-noise span just before noise
        span j elsewhere (spans alternate non-noise, noise, ..., starting with non-noise).
    """
    device = torch.device(device)
    noise_count, spans = _noise_counts(length, noise_density, mean_span)
    if length - noise_count < spans:
        raise ValueError(f"a block of {length} tokens is too short for {spans} noise spans")
    noise_lengths = _random_segmentation(noise_count, spans, batch, device, generator)
    keep_lengths = _random_segmentation(length - noise_count, spans, batch, device, generator)
    interleaved = torch.stack([keep_lengths, noise_lengths], dim=2).reshape(batch, 2 * spans)
    starts = interleaved.cumsum(dim=1)[:, :-1]  # (B, 2S-1) first token of spans 1 .. 2S-1
    marks = torch.zeros(batch, length, dtype=torch.long, device=device)
    marks.scatter_(1, starts, 1)
    index = marks.cumsum(dim=1)  # (B, L) span number in the interleaved order, 0 .. 2S-1
    return index % 2 == 1, index // 2


def corrupt_spans(
    ids: Tensor, noise: Tensor, span: Tensor, sentinel_ids: Tensor, eos_id: int
) -> tuple[Tensor, Tensor]:
    """Inputs and targets of span corruption.

    Args:
        ids: ``(B, L)`` raw token ids.
        noise: ``(B, L)`` True = noise, with the same number of noise tokens and spans per row.
        span: ``(B, L)`` span index from ``random_spans_noise_mask``.
        sentinel_ids: ``(S_max,)`` ids of ``<extra_id_0>``, ``<extra_id_1>``, ...
        eos_id: appended to inputs and targets.

    Returns:
        ``inputs (B, L - k + s + 1)``: the non-noise tokens with each noise span replaced by its
        sentinel, then EOS; ``targets (B, k + s + 1)``: each sentinel followed by its span's
        tokens, then EOS (k noise tokens in s spans per row).
    """
    b = ids.shape[0]
    first = torch.zeros_like(noise[:, :1])
    previous = torch.cat([first, noise[:, :-1]], dim=1)  # (B, L) noise flag of the token before
    sentinels = sentinel_ids[span]  # (B, L)
    eos = torch.full((b, 1), eos_id, dtype=ids.dtype, device=ids.device)
    # input: keep non-noise tokens and the first token of each noise span, as its sentinel
    keep_in = ~noise | ~previous
    inputs = torch.where(noise, sentinels, ids)[keep_in].view(b, -1)
    # target: keep noise tokens and the first token of each non-noise span, as the sentinel of
    # the noise span that follows it
    starts_keep = ~noise & (previous | (torch.arange(ids.shape[1], device=ids.device) == 0))
    targets = torch.where(noise, ids, sentinels)[noise | starts_keep].view(b, -1)
    return torch.cat([inputs, eos], dim=1), torch.cat([targets, eos], dim=1)


def _eos_id(tokenizer: Any) -> int | None:  # noqa: ANN401
    """The end-of-sequence id: ``eos_token``, else ``sep_token`` (BERT-style tokenizers)."""
    return tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id


def sentinel_token_ids(tokenizer: Any, count: int) -> list[int]:  # noqa: ANN401
    """Ids of ``<extra_id_0>`` ... ``<extra_id_{count-1}>`` in ``tokenizer``.

    Raises:
        ValueError: a sentinel is missing (the tokenizer was not trained with
            ``T5SpanCorruption.tokenizer_specials``, or with fewer sentinels).
    """
    if count < 1:
        raise ValueError(f"num_sentinels must be at least 1, got {count}")
    vocab = tokenizer.get_vocab()
    missing = [f"<extra_id_{i}>" for i in range(count) if f"<extra_id_{i}>" not in vocab]
    if missing:
        raise ValueError(
            f"the tokenizer lacks the sentinel tokens {', '.join(missing[:3])}"
            f"{' ...' if len(missing) > 3 else ''} ({len(missing)} of num_sentinels={count}): "
            "train it with the t5 method (its tokenizer_specials) or lower num_sentinels"
        )
    return [vocab[f"<extra_id_{i}>"] for i in range(count)]


class _RawBlocks(IterableDataset):
    """``PackedBlocks`` of ``length + 2`` without their [CLS] and final [SEP]: ``length`` raw
    tokens per block, documents separated by the tokenizer's separator, no padding."""

    def __init__(self, blocks: PackedBlocks) -> None:
        self.blocks = blocks

    def set_epoch(self, epoch: int) -> None:
        self.blocks.set_epoch(epoch)

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        for block in self.blocks:
            ids = block["input_ids"][1:-1]  # (n,)
            yield {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


@register_method("t5")
class T5SpanCorruption(Method):
    """T5 span corruption (Raffel et al. 2020) with a ``transformers`` encoder-decoder.

    Args:
        config: the ``T5Config`` (``vocab_size`` at least ``len(tokenizer)``).
        tokenizer: fast tokenizer with the sentinels ``<extra_id_0>`` ... as tokens (exported).
        noise_density: fraction of the raw tokens dropped into the target.
        mean_span: mean length of a noise span.
        num_sentinels: sentinels the tokenizer holds (the most spans a block may have).
    """

    kind: ClassVar[str] = "text"
    poolings: ClassVar[tuple[str, ...]] = ("mean",)
    tokenizer_kind: ClassVar[str] = "unigram"
    protocols: ClassVar[tuple[str, ...]] = ("knn", "linear", "finetune")
    defaults: ClassVar[OptimDefaults] = OptimDefaults(
        optimizer="adafactor", lr=0.01, weight_decay=0.0, warmup=1e4 / 2**19,
        schedule="inverse_sqrt",
    )  # fmt: skip

    def __init__(
        self,
        config: T5Config,
        tokenizer: Any,
        *,
        noise_density: float = 0.15,
        mean_span: float = 3.0,
        num_sentinels: int = 100,
    ) -> None:
        super().__init__()
        if not 0 < noise_density < 1:
            raise ValueError(f"noise_density must be in (0, 1), got {noise_density}")
        if mean_span < 1:
            raise ValueError(f"mean_span must be at least 1, got {mean_span}")
        if config.vocab_size < len(tokenizer):
            raise ValueError(f"vocab_size {config.vocab_size} < len(tokenizer) {len(tokenizer)}")
        eos = _eos_id(tokenizer)
        if eos is None or tokenizer.pad_token_id is None:
            raise ValueError("t5 needs a tokenizer with a pad token and an eos (or sep) token")
        self.model = T5ForConditionalGeneration(config)
        self.tokenizer = tokenizer
        self.noise_density = noise_density
        self.mean_span = mean_span
        self.eos_id = eos
        self.register_buffer(
            "sentinel_ids",
            torch.tensor(sentinel_token_ids(tokenizer, num_sentinels)),
            persistent=False,  # rebuilt from the tokenizer
        )

    @classmethod
    def tokenizer_specials(cls, method_args: dict[str, Any]) -> list[str]:
        """T5's sentinels ``<extra_id_0>`` ... ``<extra_id_{N-1}>``, N = ``num_sentinels``."""
        return [f"<extra_id_{i}>" for i in range(int(method_args.get("num_sentinels", 100)))]

    @classmethod
    def build(
        cls,
        ctx: BuildContext,
        *,
        noise_density: float = 0.15,
        mean_span: float = 3.0,
        num_sentinels: int = 100,
        **config_overrides: Any,
    ) -> T5SpanCorruption:
        """Build from the run's backbone name (default ``bert-mini`` translated to T5, or
        ``t5-small``) and tokenizer; other keyword arguments override ``T5Config`` fields."""
        tokenizer = ctx.tokenizer
        if tokenizer is None:
            raise ValueError("the t5 method needs a tokenizer (BuildContext.tokenizer)")
        eos = _eos_id(tokenizer)
        overrides = {
            "pad_token_id": tokenizer.pad_token_id,
            "decoder_start_token_id": tokenizer.pad_token_id,  # T5 starts decoding with pad
            "eos_token_id": eos,
            **config_overrides,
        }
        config = build_t5_config(ctx.backbone or "bert-mini", len(tokenizer), **overrides)
        raw, _ = span_corruption_lengths(ctx.seq_len, noise_density, mean_span)
        spans = _noise_counts(raw, noise_density, mean_span)[1]
        if spans > num_sentinels:
            raise ValueError(
                f"seq_len {ctx.seq_len} gives {spans} noise spans per block, more than "
                f"num_sentinels={num_sentinels}: raise num_sentinels"
            )
        return cls(
            config,
            tokenizer,
            noise_density=noise_density,
            mean_span=mean_span,
            num_sentinels=num_sentinels,
        )

    @classmethod
    def argument_names(cls) -> list[str]:
        """The noise settings, ``num_sentinels`` and the ``T5Config`` fields of the model, less
        those every ``transformers`` config has (names, labels, output switches) and the
        vocabulary size, which the tokenizer sets."""
        fields = set(T5Config().to_dict()) - set(PretrainedConfig().to_dict()) - {"vocab_size"}
        return sorted({*super().argument_names(), *fields})

    def training_data(
        self,
        dataset: Any,  # noqa: ANN401
        tokenizer: Any,  # noqa: ANN401
        seq_len: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
    ) -> tuple[Any, Any] | None:
        """Raw blocks of the length whose corrupted inputs have exactly ``seq_len`` tokens."""
        raw, _ = span_corruption_lengths(seq_len, self.noise_density, self.mean_span)
        blocks = PackedBlocks(dataset, tokenizer, raw + 2, rank=rank, world_size=world_size)
        return _RawBlocks(blocks), None

    def corrupt(
        self, ids: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """``(inputs, targets)`` of raw blocks ``ids: (B, n)``, corrupted on their device."""
        noise, span = random_spans_noise_mask(
            ids.shape[0], ids.shape[1], self.noise_density, self.mean_span, ids.device, generator
        )
        spans = _noise_counts(ids.shape[1], self.noise_density, self.mean_span)[1]
        if spans > len(self.sentinel_ids):
            raise ValueError(
                f"blocks of {ids.shape[1]} tokens have {spans} noise spans but the tokenizer has "
                f"{len(self.sentinel_ids)} sentinels: raise num_sentinels or lower seq_len"
            )
        return corrupt_spans(ids, noise, span, self.sentinel_ids, self.eos_id)

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        ids = batch["input_ids"]
        mask = batch.get("attention_mask")
        if mask is not None and not bool(mask.all()):
            raise ValueError("t5 span corruption trains on packed blocks without padding")
        inputs, targets = self.corrupt(ids)
        start = torch.full_like(targets[:, :1], self.model.config.decoder_start_token_id)
        decoder_inputs = torch.cat([start, targets[:, :-1]], dim=1)  # teacher forcing
        logits = self.model(input_ids=inputs, decoder_input_ids=decoder_inputs).logits
        loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())
        accuracy = (logits.detach().argmax(dim=-1) == targets).float().mean()
        return {"loss": loss, "target_acc": accuracy}

    def encoder_for_finetuning(self) -> nn.Module:
        """The encoder as ``(input_ids, attention_mask) -> (B, D)`` for ``--protocol finetune``
        (pooled like ``embed``; its weights are shared, the protocol copies them)."""
        return PooledEncoder(self.model.encoder, self.pooling or "mean")

    @torch.no_grad()
    def embed(self, batch: dict[str, Tensor]) -> Tensor:
        """Mean of the encoder's last hidden states over non-padding tokens: ``(B, D)``."""
        ids = batch["input_ids"]
        attention_mask = batch.get("attention_mask")
        if attention_mask is None:
            attention_mask = torch.ones_like(ids)
        return self.encoder_for_finetuning()(ids, attention_mask)

    def export(self, path: Path) -> None:
        """Write the whole encoder-decoder and the tokenizer.

        ``transformers.AutoModel.from_pretrained(path)`` gives a ``T5Model`` (encoder and
        decoder, no LM head; ``model.encoder`` is the text encoder), ``T5EncoderModel`` the
        encoder alone and ``T5ForConditionalGeneration`` the span-filling model.
        """
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        save_pretrained(self.model, path)
        save_tokenizer(self.tokenizer, path)
