"""T5 span corruption (Raffel et al. 2020, "Exploring the Limits of Transfer Learning with a Unified
Text-to-Text Transformer", JMLR 21, https://arxiv.org/abs/1910.10683).

An encoder-decoder reads a token block in which random spans were dropped, each span replaced by
one sentinel token, and generates the dropped spans, each after its sentinel, then EOS
(section 3.1.4 for the sentinel format, 3.3.4 for spans):

    raw:     Thank you for inviting me to your party last week .
    input:   Thank you <extra_id_0> me to your party <extra_id_1> week . </s>
    target:  <extra_id_0> for inviting <extra_id_1> last </s>

The noise mask, the sentinel format and the lengths that pack blocks with no padding are in
:mod:`selfsup.views.spans` (seq_len 512 packs 568 raw tokens into a 114-token target).
Corruption runs on the device, on the whole batch at once, inside ``forward``: a fresh noise mask
every time a block is seen. Sentinel i is the tokenizer's ``<extra_id_i>``, i counting the spans
from the left, as in T5 (whose SentencePiece vocabulary numbers them down from the top id; ours
are added special tokens numbered up: the names fix the order).

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

Blocks are packed across documents with nothing between them, as T5's ``reduce_concat_tokens``
does, so EOS ends every input and target and appears nowhere else. Deviations, named: EOS is the
tokenizer's ``eos_token``, or ``sep_token`` for the BERT-style tokenizers this library trains.
The default size translates ``bert-mini``
(``selfsup.backbones.text_configs.build_t5_config``), for comparison with the other objectives at one
size; ``t5-small`` is the paper's Small.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import PretrainedConfig, T5Config, T5ForConditionalGeneration

from selfsup.backbones.text import PooledEncoder, save_pretrained
from selfsup.backbones.text_configs import build_t5_config
from selfsup.data.packing import PackedBlocks, RawBlocks
from selfsup.data.tokenizer import save_tokenizer
from selfsup.methods.base import BuildContext, Method, OptimDefaults, register_method
from selfsup.views.spans import (
    corrupt_spans,
    noise_counts,
    random_spans_noise_mask,
    span_corruption_lengths,
)


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
    default_backbone: ClassVar[str | None] = "bert-mini"  # its sizes, as a T5 config
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
        config = build_t5_config(cls.backbone_for(ctx), len(tokenizer), **overrides)
        raw, _ = span_corruption_lengths(ctx.seq_len, noise_density, mean_span)
        spans = noise_counts(raw, noise_density, mean_span)[1]
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
        blocks = PackedBlocks(dataset, tokenizer, raw + 2, rank=rank, world_size=world_size,
                              separator=False)  # fmt: skip
        return RawBlocks(blocks), None

    def corrupt(
        self, ids: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """``(inputs, targets)`` of raw blocks ``ids: (B, n)``, corrupted on their device."""
        noise, span = random_spans_noise_mask(
            ids.shape[0], ids.shape[1], self.noise_density, self.mean_span, ids.device, generator
        )
        spans = noise_counts(ids.shape[1], self.noise_density, self.mean_span)[1]
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
