"""``finetune``: train the whole text encoder with a new linear classifier on labelled text.

The protocol of BERT (Devlin et al. 2019, "BERT: Pre-training of Deep Bidirectional Transformers
for Language Understanding", section 4 and appendix A.3): the pretrained encoder's sentence
vector, dropout 0.1, one fresh linear layer to the classes, cross-entropy, every parameter
trained; the figure is top-1 accuracy on the test split after the last epoch.

A run can be fine-tuned when its method defines ``encoder_for_finetuning()`` returning an
``nn.Module`` with ``forward(input_ids, attention_mask) -> (B, D)`` and an int attribute ``dim``
= D: :class:`selfsup.backbones.text.TextEncoder`, or :class:`selfsup.backbones.text.PooledEncoder` around any
``transformers`` base model (``BertModel``, ``RobertaModel``, ``AlbertModel``, ...). The module
is copied, so the run's method is left as it was; the run's tokenizer tokenises the text.

Options, each as ``--arg KEY=VALUE``
(``selfsup evaluate RUN --protocol finetune --data polarity --arg epochs=4 --arg lr=1e-4``):

    epochs 4, batch_size 16, weight_decay 0.01 (none on biases and LayerNorm), warmup 0.1 of
    the steps then linear decay to 0, AdamW betas (0.9, 0.999), clip_grad 1.0, dropout 0.1
    before the head, max_len = the run's seq_len: BERT's fine-tuning recipe (2-4 epochs,
    batch 16 or 32, its optimizer's gradient clipping at 1.0).
    lr 1e-4: BERT-Base uses 2e-5 to 5e-5, but the compact BERTs of Turc et al. 2019 ("Well-Read
    Students Learn Better"), the sizes this library trains, were fine-tuned with a grid up to
    3e-4, and small encoders pretrained briefly (or not at all, ``--random-init``) move too
    little at 5e-5 in a few epochs of a small labelled set.

With the same seed, data and device the figure is the same run to run (head initialisation,
dropout and batch order come from the seed).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.config import ConfigError
from selfsup.engine.optim import build_optimizer, lr_factor, set_lr
from selfsup.evaluate.features import TextCollate
from selfsup.evaluate.protocols import EvalOptions, register_protocol


@dataclass(frozen=True)
class FinetuneSettings:
    """Hyperparameters of the finetune protocol (see the module docstring for the defaults)."""

    epochs: int = 4
    lr: float = 1e-4
    batch_size: int = 16
    weight_decay: float = 0.01
    warmup: float = 0.1
    clip_grad: float = 1.0
    dropout: float = 0.1
    max_len: int | None = None  # None: the run's seq_len

    @classmethod
    def from_options(cls, extra: dict[str, str]) -> FinetuneSettings:
        """Parse ``--arg KEY=VALUE`` strings; an unknown key or bad value raises ConfigError."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        for key, text in extra.items():
            if key not in fields:
                raise ConfigError(
                    f"finetune has no option {key!r}. Valid: {', '.join(sorted(fields))}"
                )
            kind = int if key in ("epochs", "batch_size", "max_len") else float
            try:
                values[key] = kind(text)
            except ValueError:
                raise ConfigError(
                    f"finetune option {key}={text!r} is not {kind.__name__}"
                ) from None
        settings = cls(**values)
        settings.check()
        return settings

    def check(self) -> None:
        """Raise ConfigError for a value out of range."""
        if (
            self.epochs < 1
            or self.batch_size < 1
            or (self.max_len is not None and self.max_len < 2)
        ):
            raise ConfigError("finetune needs epochs >= 1, batch_size >= 1 and max_len >= 2")
        if self.lr <= 0 or self.weight_decay < 0 or self.clip_grad <= 0:
            raise ConfigError("finetune needs lr > 0, weight_decay >= 0 and clip_grad > 0")
        if not 0 <= self.warmup < 1 or not 0 <= self.dropout < 1:
            raise ConfigError("finetune needs warmup and dropout in [0, 1)")


class TextClassifier(nn.Module):
    """An encoder giving ``(B, D)`` features, dropout, and a linear layer to C classes.

    The head is initialised as BERT's classifier: weights N(0, 0.02), zero bias.
    """

    def __init__(self, encoder: nn.Module, dim: int, num_classes: int, dropout: float) -> None:
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(dim, num_classes)
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """``input_ids, attention_mask: (B, L)`` -> logits ``(B, C)``."""
        return self.head(self.dropout(self.encoder(input_ids, attention_mask)))


def _samples(dataset: Any, limit: int | None) -> list[dict[str, Any]]:  # noqa: ANN401
    """The first ``limit`` samples of a (small, labelled) dataset, in order."""
    out = []
    for sample in dataset:
        if limit is not None and len(out) >= limit:
            break
        out.append(sample)
    return out


def _batches(
    samples: list[dict[str, Any]], order: list[int], size: int, collate: TextCollate, device: str
) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
    """``(input_ids (B, L), attention_mask (B, L), labels (B,))`` of ``samples`` in ``order``."""
    for start in range(0, len(order), size):
        batch = collate([samples[i] for i in order[start : start + size]])
        yield (
            batch["input_ids"].to(device),
            batch["attention_mask"].to(device),
            batch["label"].long().to(device),
        )


def finetune_classifier(
    encoder: nn.Module,
    tokenizer: Any,  # noqa: ANN401
    train: list[dict[str, Any]],
    test: list[dict[str, Any]],
    num_classes: int,
    settings: FinetuneSettings,
    max_len: int,
    device: str = "cpu",
    seed: int = 0,
) -> dict[str, Any]:
    """Fine-tune a copy of ``encoder`` with a new linear head; return test accuracy and sizes.

    Args:
        encoder: module ``(input_ids, attention_mask) -> (B, D)`` with attribute ``dim``; copied.
        tokenizer: fast tokenizer with a pad token.
        train: labelled samples ``{"text": str, "label": int}``.
        test: labelled samples to score.
        num_classes: C.
        settings: the hyperparameters.
        max_len: tokens per text ([CLS] and [SEP] included).
        device: where to train.
        seed: seeds the head, dropout and batch order.

    Returns:
        ``top1`` (percent), ``chance`` (majority class of the test split, percent),
        ``train_loss`` (mean over the last epoch), ``steps``, ``trainable_params`` and the
        settings.
    """
    collate = TextCollate(tokenizer, max_len)
    fork = [torch.device(device)] if torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=fork):
        torch.manual_seed(seed)
        model = TextClassifier(
            copy.deepcopy(encoder), int(encoder.dim), num_classes, settings.dropout
        )
        model = model.to(device).train()
        decay = [p for p in model.parameters() if p.ndim > 1]
        no_decay = [p for p in model.parameters() if p.ndim <= 1]
        groups = [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]
        optimizer = build_optimizer(groups, "adamw", settings.lr, settings.weight_decay)
        order_rng = torch.Generator().manual_seed(seed)
        per_epoch = math.ceil(len(train) / settings.batch_size)
        total, step, losses = settings.epochs * per_epoch, 0, []
        for _ in range(settings.epochs):
            order = torch.randperm(len(train), generator=order_rng).tolist()
            losses = []
            for ids, mask, labels in _batches(train, order, settings.batch_size, collate, device):
                set_lr(optimizer, lr_factor((step + 1) / total, settings.warmup, 0.0, "linear"))
                loss = F.cross_entropy(model(ids, mask).float(), labels)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(model.parameters(), settings.clip_grad)
                optimizer.step()
                losses.append(float(loss.detach()))
                step += 1
    model.eval()
    correct = 0
    with torch.no_grad():
        for ids, mask, labels in _batches(test, list(range(len(test))), 256, collate, device):
            correct += int((model(ids, mask).argmax(dim=1) == labels).sum())
    counts = torch.bincount(torch.tensor([s["label"] for s in test]), minlength=num_classes)
    return {
        "top1": 100.0 * correct / len(test),
        "chance": 100.0 * float(counts.max()) / len(test),
        "train_loss": sum(losses) / max(len(losses), 1),
        "steps": step,
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "train_size": len(train),
        "test_size": len(test),
        **{k: v for k, v in dataclasses.asdict(settings).items() if k != "max_len"},
        "max_len": max_len,
    }


@register_protocol(
    "finetune", "fine-tune the whole text encoder with a new linear head on labelled text"
)
def finetune(run: Any, source: Any, options: EvalOptions) -> dict[str, Any]:  # noqa: ANN401
    """``selfsup evaluate RUN --protocol finetune --data SOURCE [--arg KEY=VALUE ...]``.

    ``--bank-size`` / ``--query-size`` limit the train / test samples used.
    """
    settings = FinetuneSettings.from_options(options.extra)
    get_encoder = getattr(run.method, "encoder_for_finetuning", None)
    if get_encoder is None:
        raise ConfigError(
            f"protocol finetune: a {run.config.method} run gives no encoder to fine-tune "
            "(its method defines no encoder_for_finetuning())"
        )
    if run.tokenizer is None:
        raise ConfigError(f"protocol finetune: the run {run.path} has no tokenizer")
    if source.kind != "text" or not source.classes or source.test is None:
        raise ConfigError(
            f"protocol finetune needs labelled text with a test split; {source.name!r} is not"
        )
    train = _samples(source.train, options.bank_size)
    test = _samples(source.test, options.query_size)
    if not train or not test or any(int(s.get("label", -1)) < 0 for s in train + test):
        raise ConfigError(f"protocol finetune needs every sample of {source.name!r} labelled")
    max_len = settings.max_len or run.config.seq_len
    return finetune_classifier(
        get_encoder(),
        run.tokenizer,
        train,
        test,
        len(source.classes),
        settings,
        max_len,
        options.device,
        options.seed,
    )
