"""``finetune``: train the encoder with a new linear classifier on labelled text or images.

The protocol of BERT (Devlin et al. 2019, "BERT: Pre-training of Deep Bidirectional Transformers
for Language Understanding", section 4 and appendix A.3), and of the fine-tuning evaluations of
SimCLR, MoCo and MAE on images: the pretrained encoder's features, dropout 0.1, one fresh linear
layer to the classes, cross-entropy; the figure is top-1 accuracy on the test split after the
last epoch. Images are augmented with a random horizontal flip and a random crop after padding
by 1/8 of the side (the CIFAR recipe) while training.

What trains (``--arg tuning=...``, see :mod:`selfsup.evaluate.peft`):

* ``full`` (default): every parameter.
* ``lora``: LoRA (Hu et al. 2022) on the attention's query and value projections, rank
  ``lora_rank`` (8), scale ``lora_alpha / lora_rank`` (8 / 8); the head trains too.
* ``adapter``: Houlsby et al. 2019 bottleneck adapters (width ``adapter_dim``, 64) after the
  attention and feed-forward outputs of every layer, with the layer norms and the head.

LoRA and adapters need a Transformer encoder (ViT or any text encoder); the result records
``trainable_params`` beside ``total_params``.

A run can be fine-tuned when its method defines ``encoder_for_finetuning()`` returning an
``nn.Module`` with an int attribute ``dim`` = D and ``forward(input_ids, attention_mask)`` (text:
:class:`selfsup.backbones.text.TextEncoder`, or :class:`selfsup.backbones.text.PooledEncoder`
around any ``transformers`` base model) or ``forward(images uint8 (B, 3, S, S))`` (images:
:class:`selfsup.methods.image.ImageEncoder`) giving ``(B, D)``. The module is copied, so the
run's method is left as it was.

Options, each as ``--arg KEY=VALUE``
(``selfsup evaluate RUN --protocol finetune --data polarity --arg epochs=4 --arg lr=1e-4``):

    epochs 4, batch_size 16, weight_decay 0.01 (none on biases and norms), warmup 0.1 of
    the steps then linear decay to 0, AdamW betas (0.9, 0.999), clip_grad 1.0, dropout 0.1
    before the head, max_len = the run's seq_len (text): BERT's fine-tuning recipe (2-4 epochs,
    batch 16 or 32, its optimizer's gradient clipping at 1.0).
    lr 1e-4 for full fine-tuning: BERT-Base uses 2e-5 to 5e-5, but the compact BERTs of Turc et
    al. 2019 ("Well-Read Students Learn Better"), the sizes this library trains, were
    fine-tuned with a grid up to 3e-4, and small encoders pretrained briefly (or not at all,
    ``--random-init``) move too little at 5e-5 in a few epochs of a small labelled set.
    lr 1e-3 for lora and adapter: they start from zero updates and train few parameters
    (Houlsby et al. sweep up to 1e-3; LoRA's RoBERTa runs use 4e-4 to 5e-4).

With the same seed, data and device the figure is the same run to run (head initialisation,
dropout, augmentation and batch order come from the seed).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.config import ConfigError
from selfsup.engine.logging import SHOW_PROGRESS, Progress
from selfsup.engine.optim import build_optimizer, lr_factor, set_lr
from selfsup.evaluate.features import TextCollate, fixed_subset
from selfsup.evaluate.peft import PEFT_KINDS
from selfsup.evaluate.protocols import EvalOptions, register_protocol


@dataclass(frozen=True)
class FinetuneSettings:
    """Hyperparameters of the finetune protocol (see the module docstring for the defaults)."""

    epochs: int = 4
    lr: float | None = None  # None: 1e-4 for full fine-tuning, 1e-3 for lora and adapter
    batch_size: int = 16
    weight_decay: float = 0.01
    warmup: float = 0.1
    clip_grad: float = 1.0
    dropout: float = 0.1
    max_len: int | None = None  # None: the run's seq_len
    tuning: str = "full"
    lora_rank: int = 8
    lora_alpha: float = 8.0
    adapter_dim: int = 64

    @property
    def learning_rate(self) -> float:
        """``lr``, or the default of the tuning kind."""
        if self.lr is not None:
            return self.lr
        return 1e-4 if self.tuning == "full" else 1e-3

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
            kind: type = float
            if key in ("epochs", "batch_size", "max_len", "lora_rank", "adapter_dim"):
                kind = int
            elif key == "tuning":
                kind = str
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
        if (self.lr is not None and self.lr <= 0) or self.weight_decay < 0 or self.clip_grad <= 0:
            raise ConfigError("finetune needs lr > 0, weight_decay >= 0 and clip_grad > 0")
        if not 0 <= self.warmup < 1 or not 0 <= self.dropout < 1:
            raise ConfigError("finetune needs warmup and dropout in [0, 1)")
        if self.tuning not in PEFT_KINDS:
            raise ConfigError(f"finetune tuning={self.tuning!r}. Valid: {', '.join(PEFT_KINDS)}")
        if self.lora_rank < 1 or self.lora_alpha <= 0 or self.adapter_dim < 1:
            raise ConfigError("finetune needs lora_rank >= 1, lora_alpha > 0, adapter_dim >= 1")


class Classifier(nn.Module):
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

    def forward(self, *inputs: Tensor) -> Tensor:
        """The encoder's inputs (``input_ids, attention_mask`` or ``images``) -> ``(B, C)``."""
        return self.head(self.dropout(self.encoder(*inputs)))


def _samples(dataset: Any, limit: int | None) -> list[dict[str, Any]]:  # noqa: ANN401
    """``limit`` samples of a (small, labelled) dataset: the same fixed draw as the other
    protocols' (:func:`~selfsup.evaluate.features.fixed_subset`), in order."""
    out = []
    for sample in fixed_subset(dataset, limit):
        if limit is not None and len(out) >= limit:
            break
        out.append(sample)
    return out


Batches = Callable[[list[int], bool], Iterator[tuple[tuple[Tensor, ...], Tensor]]]


def text_batches(
    samples: list[dict[str, Any]], size: int, collate: TextCollate, device: str
) -> Batches:
    """``(input_ids (B, L), attention_mask (B, L)), labels (B,)`` of ``samples`` in an order."""

    def batches(order: list[int], train: bool) -> Iterator[tuple[tuple[Tensor, ...], Tensor]]:
        for start in range(0, len(order), size):
            batch = collate([samples[i] for i in order[start : start + size]])
            inputs = (batch["input_ids"].to(device), batch["attention_mask"].to(device))
            yield inputs, batch["label"].long().to(device)

    return batches


def flip_and_crop(images: Tensor, generator: torch.Generator) -> Tensor:
    """Random horizontal flip and random crop after zero-padding by 1/8 of the side, per image
    (uint8 ``(B, 3, S, S)`` in and out)."""
    side = images.shape[-1]
    pad = max(1, side // 8)
    padded = F.pad(images, (pad, pad, pad, pad))
    out = torch.empty_like(images)
    flips = torch.rand(len(images), generator=generator) < 0.5
    offsets = torch.randint(0, 2 * pad + 1, (len(images), 2), generator=generator)
    for i, (dy, dx) in enumerate(offsets.tolist()):
        crop = padded[i, :, dy : dy + side, dx : dx + side]
        out[i] = crop.flip(-1) if flips[i] else crop
    return out


def image_batches(
    samples: list[dict[str, Any]], size: int, device: str, generator: torch.Generator
) -> Batches:
    """``(images uint8 (B, 3, S, S),), labels (B,)``, augmented when training."""

    def batches(order: list[int], train: bool) -> Iterator[tuple[tuple[Tensor, ...], Tensor]]:
        for start in range(0, len(order), size):
            chosen = [samples[i] for i in order[start : start + size]]
            images = torch.stack([torch.as_tensor(s["image"]) for s in chosen])
            if train:
                images = flip_and_crop(images, generator)
            labels = torch.tensor([int(s["label"]) for s in chosen])
            yield (images.to(device),), labels.to(device)

    return batches


def train_classifier(
    encoder: nn.Module,
    batches: Batches,
    train_size: int,
    test_labels: list[int],
    num_classes: int,
    settings: FinetuneSettings,
    device: str = "cpu",
    seed: int = 0,
) -> dict[str, Any]:
    """Fine-tune a copy of ``encoder`` (as ``settings.tuning`` says) with a new linear head.

    Args:
        encoder: module ``(*inputs) -> (B, D)`` with attribute ``dim``; copied.
        batches: ``batches(order, train)`` yields ``(inputs, labels)`` of the training samples
            in ``order`` (``train=True``) or of the test samples (``train=False``).
        train_size: number of training samples.
        test_labels: labels of the test samples, in order.
        num_classes: C.
        settings: the hyperparameters.
        device: where to train.
        seed: seeds the head, adapters, dropout and batch order.

    Returns:
        ``top1`` (percent), ``chance`` (majority class of the test split, percent),
        ``train_loss`` (mean over the last epoch), ``steps``, ``trainable_params``,
        ``total_params`` and the settings.
    """
    from selfsup.evaluate.peft import count_parameters, prepare

    fork = [torch.device(device)] if torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=fork):
        torch.manual_seed(seed)
        tuned = copy.deepcopy(encoder)
        try:
            prepare(tuned, settings.tuning, settings.lora_rank, settings.lora_alpha,
                    settings.adapter_dim)  # fmt: skip
        except ValueError as err:
            raise ConfigError(f"protocol finetune: {err}") from None
        model = Classifier(tuned, int(encoder.dim), num_classes, settings.dropout)
        model = model.to(device).train()
        params = [p for p in model.parameters() if p.requires_grad]
        decay = [p for p in params if p.ndim > 1]
        no_decay = [p for p in params if p.ndim <= 1]
        groups = [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]
        optimizer = build_optimizer(groups, "adamw", settings.learning_rate, settings.weight_decay)
        order_rng = torch.Generator().manual_seed(seed)
        per_epoch = math.ceil(train_size / settings.batch_size)
        total, step, epoch_loss, epoch_steps = settings.epochs * per_epoch, 0, 0.0, 0
        bar = Progress(total, "steps", SHOW_PROGRESS.get(), label="finetune")
        for epoch in range(settings.epochs):
            order = torch.randperm(train_size, generator=order_rng).tolist()
            epoch_loss, epoch_steps = 0.0, 0
            for inputs, labels in batches(order, True):
                set_lr(optimizer, lr_factor((step + 1) / total, settings.warmup, 0.0, "linear"))
                loss = F.cross_entropy(model(*inputs).float(), labels)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(params, settings.clip_grad)
                optimizer.step()
                epoch_loss, epoch_steps = epoch_loss + float(loss.detach()), epoch_steps + 1
                step += 1
                mean = epoch_loss / epoch_steps  # the epoch's so far, as train_loss reports it
                bar.update(step, f"epoch {epoch + 1}/{settings.epochs}  loss {mean:.3f}")
        bar.close()
    model.eval()
    correct = 0
    with torch.no_grad():
        for inputs, labels in batches(list(range(len(test_labels))), False):
            correct += int((model(*inputs).argmax(dim=1) == labels).sum())
    counts = torch.bincount(torch.tensor(test_labels), minlength=num_classes)
    trainable, total_params = count_parameters(model)
    recorded = {k: v for k, v in dataclasses.asdict(settings).items() if k != "max_len"}
    recorded["lr"] = settings.learning_rate
    if settings.tuning != "lora":
        recorded = {k: v for k, v in recorded.items() if not k.startswith("lora_")}
    if settings.tuning != "adapter":
        recorded.pop("adapter_dim")
    return {
        "top1": 100.0 * correct / len(test_labels),
        "chance": 100.0 * float(counts.max()) / len(test_labels),
        "train_loss": epoch_loss / max(epoch_steps, 1),
        "steps": step,
        "trainable_params": trainable,
        "total_params": total_params,
        "train_size": train_size,
        "test_size": len(test_labels),
        **recorded,
    }


def split_batches(train: Batches, test: Batches, test_offset: int) -> Batches:
    """Batches over ``train + test`` samples: training orders index the training samples
    (``train``'s batch size), evaluation orders the test samples (``test``'s, from
    ``test_offset``)."""

    def batches(order: list[int], training: bool) -> Iterator[tuple[tuple[Tensor, ...], Tensor]]:
        if training:
            return train(order, True)
        return test([test_offset + i for i in order], False)

    return batches


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
    """Fine-tune a copy of a text ``encoder`` (``(input_ids, attention_mask) -> (B, D)``) on
    labelled samples ``{"text", "label"}``; :func:`train_classifier` with text batches of
    ``max_len`` tokens. Also records ``max_len``."""
    collate = TextCollate(tokenizer, max_len)
    samples = train + test
    batches = split_batches(
        text_batches(samples, settings.batch_size, collate, device),
        text_batches(samples, 256, collate, device),
        len(train),
    )
    result = train_classifier(encoder, batches, len(train), [s["label"] for s in test],
                              num_classes, settings, device, seed)  # fmt: skip
    return {**result, "max_len": max_len}


def finetune_images(
    encoder: nn.Module,
    train: list[dict[str, Any]],
    test: list[dict[str, Any]],
    num_classes: int,
    settings: FinetuneSettings,
    device: str = "cpu",
    seed: int = 0,
) -> dict[str, Any]:
    """Fine-tune a copy of an image ``encoder`` (uint8 ``(B, 3, S, S) -> (B, D)``) on labelled
    samples ``{"image", "label"}``, flipping and cropping the training images."""
    generator = torch.Generator().manual_seed(seed + 1)
    samples = train + test
    batches = split_batches(
        image_batches(samples, settings.batch_size, device, generator),
        image_batches(samples, 256, device, generator),
        len(train),
    )
    return train_classifier(encoder, batches, len(train), [int(s["label"]) for s in test],
                            num_classes, settings, device, seed)  # fmt: skip


@register_protocol(
    "finetune",
    "fine-tune the encoder (full, lora or adapter) with a new linear head on labelled data",
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
    kind = run.method.kind
    if source.kind != kind or not source.classes or source.test is None:
        raise ConfigError(
            f"protocol finetune needs labelled {kind} data with a test split; "
            f"{source.name!r} is not"
        )
    train = _samples(source.train, options.bank_size)
    test = _samples(source.test, options.query_size)
    if not train or not test or any(int(s.get("label", -1)) < 0 for s in train + test):
        raise ConfigError(f"protocol finetune needs every sample of {source.name!r} labelled")
    if kind == "image":
        return finetune_images(get_encoder(), train, test, len(source.classes), settings,
                               options.device, options.seed)  # fmt: skip
    if run.tokenizer is None:
        raise ConfigError(f"protocol finetune: the run {run.path} has no tokenizer")
    max_len = settings.max_len or run.config.seq_len
    return finetune_classifier(get_encoder(), run.tokenizer, train, test, len(source.classes),
                               settings, max_len, options.device, options.seed)  # fmt: skip
