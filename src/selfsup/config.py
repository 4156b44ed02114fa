"""Typed run configuration: YAML file + ``key=value`` overrides, validated before any work.

The dataclasses below are the single source of truth: the CLI flags, the YAML keys and the saved
``config.yaml`` of a run all map onto them. Unknown keys and ill-typed values raise
:class:`ConfigError` naming the key and the valid choices.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from selfsup.config_parse import ConfigError, from_dict, merge, parse_overrides, yaml_load

# Names selfsup.engine.optim implements (kept here so that checking a config needs no torch).
OPTIMIZERS = ("adafactor", "adamw", "lamb", "lars", "sgd")
SCHEDULES = ("cosine", "linear", "inverse_sqrt")


@dataclass
class OptimConfig:
    """Optimisation. ``None`` takes the method's recommended value (see ``selfsup list``).

    Attributes:
        name: "adamw", "sgd", "lars", "lamb" or "adafactor".
        lr: base learning rate; for methods that scale it (SimCLR: LARS, 0.3) it is per 256
            samples of global batch and multiplied by ``batch_size * devices * accumulate / 256``.
        weight_decay: decoupled (AdamW) or L2 (SGD, LARS) weight decay.
        momentum: SGD/LARS momentum.
        betas: AdamW betas.
        warmup: linear warm-up length as a fraction of the budget (None: the method's, 0.1
            for most; word2vec none).
        final_lr: learning rate at the end of the decay, as a fraction of the peak (None: the
            method's, 0 for most; word2vec 1e-4).
        schedule: decay after the warm-up, "cosine", "linear" or "inverse_sqrt" (None: the
            method's; linear for the BERT family and word2vec, inverse_sqrt for T5, as in their
            papers; inverse_sqrt holds the peak during ``warmup`` instead of ramping up).
        clip_grad: clip the global gradient norm to this value (``None``: no clipping).
        accumulate: micro-batches per optimizer step (gradient accumulation).
    """

    name: str | None = None
    lr: float | None = None
    weight_decay: float | None = None
    momentum: float | None = None
    betas: tuple[float, float] | None = None
    warmup: float | None = None
    final_lr: float | None = None
    schedule: str | None = None
    clip_grad: float | None = None
    accumulate: int = 1

    def validate(self) -> None:
        if self.name is not None and self.name not in OPTIMIZERS:
            raise ConfigError(
                f"optim.name: unknown optimizer {self.name!r}. Valid: {', '.join(OPTIMIZERS)}"
            )
        if self.schedule is not None and self.schedule not in SCHEDULES:
            raise ConfigError(
                f"optim.schedule: unknown {self.schedule!r}. Valid: {', '.join(SCHEDULES)}"
            )
        if self.schedule == "inverse_sqrt" and self.warmup == 0:
            raise ConfigError(
                "optim.schedule=inverse_sqrt needs optim.warmup > 0 (its constant phase)"
            )
        if self.final_lr is not None and not 0 <= self.final_lr <= 1:
            raise ConfigError(
                f"optim.final_lr is a fraction of the peak in [0, 1], got {self.final_lr}"
            )
        if self.warmup is not None and not 0 <= self.warmup < 1:
            raise ConfigError(
                f"optim.warmup is a fraction of the budget in [0, 1), got {self.warmup}"
            )
        if self.accumulate < 1:
            raise ConfigError(f"optim.accumulate must be >= 1, got {self.accumulate}")
        if self.lr is not None and not 0 < self.lr < math.inf:
            raise ConfigError(f"optim.lr must be positive and finite, got {self.lr}")
        if self.weight_decay is not None and not 0 <= self.weight_decay < math.inf:
            raise ConfigError(f"optim.weight_decay must be >= 0, got {self.weight_decay}")
        if self.clip_grad is not None and not 0 < self.clip_grad < math.inf:
            raise ConfigError(
                f"optim.clip_grad is the largest gradient norm allowed, > 0 (or null: no "
                f"clipping), got {self.clip_grad}"
            )


TOKENIZER_KINDS = ("bpe", "unigram", "wordlevel", "wordpiece")


@dataclass
class TokenizerConfig:
    """Tokenizer for text and pair methods: trained on the run's data unless ``path`` is given.

    Attributes:
        kind: "wordpiece", "bpe", "unigram" or "wordlevel"; None takes the method's choice
            (BERT-style methods WordPiece, GPT and RoBERTa byte-level BPE, word2vec words).
        vocab_size: vocabulary size to train (None: 8,000 subwords; for "wordlevel" every
            word, the method's ``min_count`` then decides).
        path: a saved tokenizer folder to load instead of training one.
    """

    kind: str | None = None
    vocab_size: int | None = None
    path: str | None = None

    def validate(self) -> None:
        if self.kind is not None and self.kind not in TOKENIZER_KINDS:
            raise ConfigError(
                f"tokenizer.kind: unknown {self.kind!r}. Valid: {', '.join(TOKENIZER_KINDS)}"
            )
        if self.vocab_size is not None and self.vocab_size < 100:
            raise ConfigError(f"tokenizer.vocab_size must be >= 100, got {self.vocab_size}")
        if self.path is not None and not Path(self.path).is_dir():
            raise ConfigError(f"tokenizer.path {self.path} is not a saved tokenizer folder")


@dataclass
class RunConfig:
    """One pretraining run.

    Attributes:
        method: method name (``selfsup list``).
        data: data spec, e.g. ``digits``, ``folder:PATH``, ``shards:PATH``, ``text:PATH``.
        backbone: encoder name; ``None`` takes the method's default.
        budget: when to stop: ``2000`` or ``2000steps``, ``5epochs``, ``10m``, ``90s``, ``2h``.
        batch_size: samples per device per micro-batch.
        image_size: side of the square images the data source decodes to.
        seq_len: tokens per text block, or longest caption for pairs.
        method_args: keyword arguments of the method (e.g. ``{"temperature": 0.2}``).
        optim: optimisation settings.
        tokenizer: tokenizer settings (text and pair methods).
        precision: "auto" (default): "bf16-mixed" where the device computes bfloat16 natively (a
            GPU with bf16, a CPU with AMX or AVX512-BF16), else "32-true"; the run's config.yaml
            records what it resolved to. Or "32-true", "bf16-mixed", "16-mixed" (GPUs),
            "bf16-true".
        accelerator: "auto", "cpu", "cuda", "mps".
        devices: devices per node (processes under DDP).
        num_nodes: machines.
        strategy: "auto", "ddp" (a whole copy of the model on each process) or "fsdp" (each
            process holds a share of the parameters, gradients and optimizer state, for models
            too large to train on one device; :mod:`selfsup.engine.sharding`).
        sync_batchnorm: convert BatchNorm layers to SyncBatchNorm under DDP (GPUs).
        compile: ``torch.compile`` the method before training (minutes of compilation on a
            CPU, where SimCLR's step gained about 1.1x; ``benchmarks/RESULTS.md``).
        num_workers: DataLoader worker processes (decoding only).
        decode_cache: ``auto``: decode the training images of a file-backed source (folder,
            shards, captions) once into memory when they take at most 4 GiB, and train from
            there without workers; ``on``: whatever their size; ``off``: decode in every epoch.
        decode_device: ``auto``: when training on a GPU, JPEGs decode on it with torchvision
            (nvJPEG), into the decode cache or in every epoch, while the workers only read the
            files; ``cpu``: the workers decode everything with PIL.
        resample: streamed sources (tar shards, text files): every process and worker draws
            whole shards or files at random with replacement, endlessly, instead of splitting
            them: nobody waits for a share or runs out early, however few the files. An epoch is
            then nominal (the source's samples / global batch, or 1,000 batches when unknown).
        seed: global seed.
        out: run directory (default ``runs/METHOD-DATA-TIMESTAMP``).
        log_every: optimizer steps between metric log lines (the last steps are logged at the
            end).
        checkpoint_every: optimizer steps between checkpoints (a final one is always written).
        keep_checkpoints: how many recent checkpoints to keep.
        diagnostics_every: optimizer steps between label-free diagnostics of the embeddings of
            ``diagnostics_samples`` fixed training samples (effective rank, normalised std,
            uniformity; logged, and a collapse is announced); 0: never.
        diagnostics_samples: how many training samples the diagnostics embed.
        stop_on_collapse: stop the run when the diagnostics find a collapse.
        knn_every: optimizer steps between online kNN accuracies (k = 200, T = 0.1) of
            ``knn_queries`` samples of the data's labelled test split against ``knn_bank``
            labelled training samples, logged as ``knn_top1`` / ``knn_top5``; 0: never.
        knn_bank: training samples in the online kNN's memory bank.
        knn_queries: test samples the online kNN classifies.
        max_bad_fraction: share of training samples that may be unreadable (skipped, counted and
            listed in ``RUN_DIR/faults.jsonl``) before the run stops; 0: stop at the first.
        nonfinite: what a NaN or infinite loss or gradient does: ``stop`` the run (the last
            checkpoint intact) or ``skip`` the step (no update; counted as ``skipped_steps``;
            the run still stops after 20 in a row).
        wandb: also log to Weights & Biases (requires the ``wandb`` package).
        progress: show a progress bar.
    """

    method: str = "simclr"
    data: str = "digits"
    backbone: str | None = None
    budget: str = "500steps"
    batch_size: int = 256
    image_size: int = 32
    seq_len: int = 128
    method_args: dict[str, Any] = field(default_factory=dict)
    optim: OptimConfig = field(default_factory=OptimConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    precision: str = "auto"
    accelerator: str = "auto"
    devices: int = 1
    num_nodes: int = 1
    strategy: str = "auto"
    sync_batchnorm: bool = False
    compile: bool = False
    num_workers: int = 2
    decode_cache: str = "auto"
    decode_device: str = "auto"
    resample: bool = False
    seed: int = 0
    out: str | None = None
    log_every: int = 10
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    diagnostics_every: int = 100
    diagnostics_samples: int = 256
    stop_on_collapse: bool = False
    knn_every: int = 0
    knn_bank: int = 5000
    knn_queries: int = 1000
    max_bad_fraction: float = 0.01
    nonfinite: str = "stop"
    wandb: bool = False
    progress: bool = True

    def validate(self) -> None:
        """Check values that do not need heavy work (names are checked by the pipeline)."""
        parse_budget(self.budget)
        for key in ("batch_size", "image_size", "seq_len", "devices", "num_nodes", "log_every",
                    "checkpoint_every", "keep_checkpoints"):  # fmt: skip
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.num_workers < 0:
            raise ConfigError(f"num_workers must be >= 0, got {self.num_workers}")
        if self.diagnostics_every < 0 or self.diagnostics_samples < 2:
            raise ConfigError(
                "diagnostics_every must be >= 0 (0: off) and diagnostics_samples >= 2, got "
                f"{self.diagnostics_every} and {self.diagnostics_samples}"
            )
        if self.knn_every < 0 or self.knn_bank < 1 or self.knn_queries < 1:
            raise ConfigError(
                "knn_every must be >= 0 (0: off), knn_bank and knn_queries >= 1, got "
                f"{self.knn_every}, {self.knn_bank} and {self.knn_queries}"
            )
        if not 0 <= self.max_bad_fraction <= 1:
            raise ConfigError(f"max_bad_fraction must be in [0, 1], got {self.max_bad_fraction}")
        if self.decode_cache not in ("auto", "on", "off"):
            raise ConfigError(
                f"decode_cache must be 'auto', 'on' or 'off', got {self.decode_cache!r}"
            )
        if self.decode_device not in ("auto", "cpu"):
            raise ConfigError(f"decode_device must be 'auto' or 'cpu', got {self.decode_device!r}")
        if not 0 <= self.seed < 2**31:  # seed + rank must stay a valid seed on every process
            raise ConfigError(f"seed must be in [0, 2^31), got {self.seed}")
        if any(word in self.strategy for word in ("spawn", "fork", "notebook")):
            raise ConfigError(
                f"strategy={self.strategy} is not supported: selfsup starts its processes with "
                "Fabric's launcher or torchrun. Use strategy=ddp"
            )
        if self.strategy.startswith(("fsdp_", "deepspeed")):
            raise ConfigError(
                f"strategy={self.strategy} is not supported: use strategy=fsdp (sharded "
                "parameters, gradients and optimizer state) or strategy=ddp"
            )
        if self.strategy == "fsdp" and self.compile:
            raise ConfigError(
                "strategy=fsdp with compile=true is not supported yet: set compile=false, or "
                "use strategy=ddp to compile"
            )
        if self.resample and self.decode_cache == "on":
            raise ConfigError(
                "resample=true streams the source, decode_cache=on reads it from memory: "
                "choose one (decode_cache=auto or off with resample)"
            )
        if self.nonfinite not in ("stop", "skip"):
            raise ConfigError(f"nonfinite must be 'stop' or 'skip', got {self.nonfinite!r}")
        if self.precision not in ("auto", "32-true", "32", "bf16-mixed", "16-mixed", "bf16-true"):
            raise ConfigError(
                f"precision: {self.precision!r} is not supported. Valid: auto, 32-true, bf16-mixed, "
                "16-mixed (GPU), bf16-true"
            )
        self.optim.validate()
        self.tokenizer.validate()
        if self.wandb and importlib.util.find_spec("wandb") is None:
            raise ConfigError(
                "wandb=true but the wandb package is not installed (pip install wandb)"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Budget:
    """How long to train: a number of optimizer steps, epochs, or seconds of wall clock."""

    amount: float
    unit: str  # "steps" | "epochs" | "seconds"

    def __str__(self) -> str:
        return f"{self.amount:g} {self.unit}"


_BUDGET = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$")
_UNITS = {
    "": ("steps", 1),
    "step": ("steps", 1),
    "steps": ("steps", 1),
    "epoch": ("epochs", 1),
    "epochs": ("epochs", 1),
    "ep": ("epochs", 1),
    "s": ("seconds", 1),
    "sec": ("seconds", 1),
    "m": ("seconds", 60),
    "min": ("seconds", 60),
    "h": ("seconds", 3600),
}


def parse_budget(text: str | int) -> Budget:
    """Parse ``"2000"``, ``"2000steps"``, ``"5epochs"``, ``"10m"``, ``"90s"`` or ``"2h"``."""
    match = _BUDGET.match(str(text).lower())
    if not match or match.group(2) not in _UNITS or float(match.group(1)) <= 0:
        raise ConfigError(
            f"budget: cannot read {text!r}. Use steps (2000 or 2000steps), epochs (5epochs) or "
            "wall clock (90s, 10m, 2h)"
        )
    unit, scale = _UNITS[match.group(2)]
    amount = float(match.group(1)) * scale
    if unit == "steps" and (amount < 1 or amount != int(amount)):
        raise ConfigError(f"budget: {text!r} is not a whole number of steps (at least 1)")
    return Budget(amount, unit)


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    values: dict[str, Any] | None = None,
) -> RunConfig:
    """Build and validate a :class:`RunConfig`.

    Precedence, lowest first: defaults, the YAML file, ``values`` (e.g. CLI flags), ``overrides``.
    """
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            loaded = yaml_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"config file {path} is not valid YAML: {err}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping of keys to values")
        try:  # a wrong key or type in the file: the message names the file
            from_dict(RunConfig, loaded)
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from None
        data = loaded
    data = merge(data, values or {})
    data = merge(data, parse_overrides(overrides or []))
    config = from_dict(RunConfig, data)
    config.validate()
    return config


def run_config_path(run_dir: str | Path) -> Path:
    """``run_dir/config.yaml``, the config a run directory was made with.

    Raises:
        ConfigError: ``run_dir`` does not exist, or is not a run directory.
    """
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise ConfigError(f"{run_dir} does not exist")
    if not (run_dir / "config.yaml").is_file():
        raise ConfigError(f"{run_dir} is not a run directory (no config.yaml)")
    return run_dir / "config.yaml"


def save_config(config: RunConfig, path: Path) -> None:
    """Write the resolved config as plain YAML (tuples as lists)."""
    path.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
