"""``pretrain(config)``: from a validated config to a run directory.

Order of work: everything that can be wrong with names, paths and arguments is checked first
(config, method, backbone, data source, compatibility), then the tokenizer is trained (text and
pair methods), then the method is built and the engine runs. The run directory holds::

    config.yaml  tokenizer/  metrics.jsonl  tensorboard/  checkpoints/  export/  summary.json
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from lightning_fabric import Fabric

from selfsup.config import ConfigError, RunConfig, load_config, parse_budget, save_config
from selfsup.data import DataSource, build_source
from selfsup.engine.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from selfsup.engine.loader import EpochLoader
from selfsup.engine.logging import MetricLogger
from selfsup.engine.loop import Loop, LoopSettings, TrainState, rng_state, set_rng_state
from selfsup.engine.optim import build_optimizer
from selfsup.methods import METHODS, BuildContext, Method

log = logging.getLogger("selfsup")

# Which data kinds each method kind can consume (an image method reads the images of pairs).
COMPATIBLE = {"image": ("image", "pair"), "text": ("text", "pair"), "pair": ("pair",)}


class RunExistsError(FileExistsError):
    """The run directory already holds a run and neither resume nor overwrite was asked for."""


def method_class(name: str) -> type[Method]:
    return METHODS.get(name)


def check_method_args(cls: type[Method], args: dict[str, Any]) -> None:
    """Raise ConfigError for a method argument the method does not take."""
    valid = cls.argument_names()
    for key in args:
        if key not in valid:
            raise ConfigError(
                f"unknown method_args key {key!r} for method {cls.__name__}. Valid: "
                + (", ".join(valid) or "(none)")
            )


def check_compatible(method: str, cls: type[Method], source: DataSource) -> None:
    if source.kind not in COMPATIBLE[cls.kind]:
        need = " or ".join(COMPATIBLE[cls.kind])
        raise ConfigError(
            f"method {method!r} needs {need} data, but {source.name!r} is {source.kind} data"
            + (" (no captions)" if cls.kind == "pair" else "")
        )


def default_run_dir(config: RunConfig) -> Path:
    data = re.sub(r"[^A-Za-z0-9]+", "-", config.data.split(":")[0]).strip("-")
    return Path("runs") / f"{config.method}-{data}-{time.strftime('%Y%m%d-%H%M%S')}"


def texts_of(source: DataSource, limit: int = 200_000) -> list[str]:
    """Up to ``limit`` training texts (documents or captions) for tokenizer training."""
    captions = getattr(source.train, "captions", None)
    if captions is not None:
        return list(captions[:limit])
    texts = []
    for sample in source.train:
        texts.append(sample["text"])
        if len(texts) >= limit:
            break
    return texts


def prepare_tokenizer(config: RunConfig, source: DataSource, run_dir: Path, fabric: Fabric) -> Any:  # noqa: ANN401
    """Load the run's tokenizer, or train and save one on rank 0."""
    from selfsup.data.tokenizer import load_tokenizer, save_tokenizer, train_tokenizer

    path = run_dir / "tokenizer"
    if not path.exists():
        if config.tokenizer.path is not None:
            tokenizer = load_tokenizer(config.tokenizer.path)
        elif fabric.is_global_zero:
            tokenizer = train_tokenizer(
                texts_of(source), kind=config.tokenizer.kind, vocab_size=config.tokenizer.vocab_size
            )
        if fabric.is_global_zero:
            save_tokenizer(tokenizer, path)
        fabric.barrier()
    return load_tokenizer(path)


def build_dataset(
    kind: str,
    source: DataSource,
    split: str,
    tokenizer: Any,  # noqa: ANN401
    seq_len: int,
    rank: int = 0,
    world_size: int = 1,
) -> tuple[Any, Any]:
    """(dataset, collate_fn) for a method of ``kind`` reading ``source``'s ``split``."""
    from selfsup.data.packing import CaptionCollate, PackedBlocks

    dataset = source.train if split == "train" else source.test
    if dataset is None:
        raise ConfigError(f"data {source.name!r} has no {split} split")
    if kind == "text":
        return PackedBlocks(dataset, tokenizer, seq_len, rank=rank, world_size=world_size), None
    if kind == "pair":
        return dataset, CaptionCollate(tokenizer, seq_len)
    return dataset, None


def make_fabric(config: RunConfig) -> Fabric:
    if config.precision == "16-mixed" and not torch.cuda.is_available():
        raise ConfigError("precision=16-mixed needs a GPU; use bf16-mixed on CPU")
    return Fabric(
        accelerator=config.accelerator,
        devices=config.devices,
        num_nodes=config.num_nodes,
        strategy=config.strategy,
        precision=config.precision,  # type: ignore[arg-type]
    )


# What a resumed run may change: how long it trains and how it reports and saves, not what it
# computes (changing those would make "resume" a different experiment).
RESUMABLE_CHANGES = frozenset(
    {
        "budget",
        "out",
        "num_workers",
        "log_every",
        "checkpoint_every",
        "keep_checkpoints",
        "wandb",
        "progress",
    }
)


def resume_config(
    run_dir: str | Path, overrides: list[str] | None = None, values: dict[str, Any] | None = None
) -> RunConfig:
    """The saved config of ``run_dir`` with allowed changes (budget, logging, checkpointing)."""
    saved = Path(run_dir) / "config.yaml"
    if not saved.is_file():
        raise ConfigError(f"--resume {run_dir}: no config.yaml there, so it is not a run directory")
    before = load_config(saved).to_dict()
    config = load_config(saved, overrides, values)
    changed = [
        k for k, v in config.to_dict().items() if v != before[k] and k not in RESUMABLE_CHANGES
    ]
    if changed:
        raise ConfigError(
            f"--resume cannot change {', '.join(changed)}; only "
            + ", ".join(sorted(RESUMABLE_CHANGES))
            + ". Start a new run (another --out) to change them"
        )
    return config


def pretrain(
    config: RunConfig,
    resume: str | Path | None = None,
    overwrite: bool = False,
) -> Path:
    """Pretrain ``config.method`` on ``config.data`` and return the run directory.

    Args:
        config: a validated run config (see :func:`selfsup.config.load_config`); to resume,
            the run's saved config, e.g. from :func:`resume_config`.
        resume: a run directory to continue from its latest checkpoint.
        overwrite: replace an existing run directory at ``config.out``.
    """
    if resume is not None:
        run_dir = Path(resume)
    else:
        run_dir = Path(config.out) if config.out else default_run_dir(config)
        if (run_dir / "config.yaml").exists() and not overwrite:
            raise RunExistsError(
                f"{run_dir} already holds a run; pass --resume {run_dir} to continue it, "
                "--overwrite to replace it, or choose another --out"
            )
    config.validate()
    cls = method_class(config.method)
    check_method_args(cls, config.method_args)
    source = build_source(config.data, image_size=config.image_size, seed=config.seed)
    check_compatible(config.method, cls, source)

    fabric = make_fabric(config)
    fabric.launch()
    if fabric.is_global_zero:
        if resume is None and run_dir.exists() and overwrite:
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, run_dir / "config.yaml")
    fabric.barrier()
    fabric.seed_everything(config.seed)

    tokenizer = prepare_tokenizer(config, source, run_dir, fabric) if cls.kind != "image" else None
    ctx = BuildContext(config.backbone, config.image_size, tokenizer, config.seq_len)
    method = cls.build(ctx, **config.method_args)
    if config.sync_batchnorm and fabric.world_size > 1:
        method = torch.nn.SyncBatchNorm.convert_sync_batchnorm(method)

    dataset, collate = build_dataset(
        cls.kind, source, "train", tokenizer, config.seq_len, fabric.global_rank, fabric.world_size
    )
    loader = EpochLoader(
        dataset,
        config.batch_size,
        seed=config.seed,
        rank=fabric.global_rank,
        world_size=fabric.world_size,
        num_workers=config.num_workers,
        collate_fn=collate,
    )
    global_batch = config.batch_size * fabric.world_size * config.optim.accumulate
    optimizer = make_optimizer(method, config, global_batch)

    model, optimizer = fabric.setup(method, optimizer)
    state = TrainState()
    ckpt_root = run_dir / "checkpoints"
    if resume is not None:
        ckpt = latest_checkpoint(ckpt_root)
        if ckpt is None:
            raise ConfigError(f"--resume {run_dir}: no complete checkpoint in {ckpt_root}")
        saved_state, meta = load_checkpoint(ckpt)
        method.load_state_dict(saved_state["method"], strict=True)
        optimizer.load_state_dict(saved_state["optimizer"])
        set_rng_state(saved_state["rng"])
        state = TrainState(**meta["state"])
        log.info("resumed %s at step %d", ckpt, state.step)

    def save(current: TrainState) -> None:
        if fabric.is_global_zero:
            save_checkpoint(
                ckpt_root,
                current.step,
                {
                    "method": method.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "rng": rng_state(),
                },
                {
                    "state": current.__dict__.copy(),
                    "method": config.method,
                    "config": config.to_dict(),
                },
                keep=config.keep_checkpoints,
            )
        fabric.barrier()

    logger = MetricLogger(
        run_dir, config.to_dict() if config.wandb else None, enabled=fabric.is_global_zero
    )
    settings = LoopSettings(
        budget=parse_budget(config.budget),
        accumulate=config.optim.accumulate,
        warmup=config.optim.warmup,
        final_lr=config.optim.final_lr,
        clip_grad=config.optim.clip_grad,
        log_every=config.log_every,
        checkpoint_every=config.checkpoint_every,
        progress=config.progress,
    )
    loop = Loop(fabric, model, method, optimizer, loader, settings, logger, save, global_batch)
    try:
        state = loop.run(state)
    finally:
        logger.close()
    save(state)
    if fabric.is_global_zero:
        method.eval()
        method.export(run_dir / "export")
        summary = {"steps": state.step, "epochs": state.epoch, "seconds": round(state.elapsed, 1),
                   "samples": state.samples, "samples_per_s": round(state.samples / max(state.elapsed, 1e-9), 1)}  # fmt: skip
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    fabric.barrier()
    return run_dir


def make_optimizer(method: Method, config: RunConfig, global_batch: int) -> torch.optim.Optimizer:
    """The optimizer from the config, falling back on the method's recommended recipe."""
    d = type(method).defaults
    o = config.optim
    lr = o.lr if o.lr is not None else d.lr
    if d.scale_lr:
        lr = lr * global_batch / 256
    return build_optimizer(
        method.param_groups(),
        name=o.name or d.optimizer,
        lr=lr,
        weight_decay=o.weight_decay if o.weight_decay is not None else d.weight_decay,
        momentum=o.momentum if o.momentum is not None else d.momentum,
        betas=o.betas or d.betas,
    )
