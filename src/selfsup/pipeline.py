"""``pretrain(config)``: from a validated config to a run directory.

Order of work: everything that can be wrong with names, paths and arguments is checked first
(config, method, backbone, data source, compatibility), then the tokenizer is trained (text and
pair methods), then the method is built and the engine runs. The run directory holds::

    config.yaml  context.json  tokenizer/  metrics.jsonl  tensorboard/  checkpoints/  export/  summary.json
    faults.jsonl  (only when samples could not be read: one line each, see selfsup.data.faults)
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
from lightning_fabric import Fabric

from selfsup.checks import (
    check_backbone,
    check_compatible,
    check_method_args,
    check_online_knn,
    check_precision_and_norm,
    check_resample,
    check_source_faults,
)
from selfsup.config import ConfigError, RunConfig, parse_budget
from selfsup.data import DataSource, build_source
from selfsup.data.faults import (
    FaultCounter,
    FaultLog,
    FaultMonitor,
    set_fault_log,
)
from selfsup.engine.checkpoint import latest_checkpoint, rng_state, save_checkpoint
from selfsup.engine.guard import Interrupted, WriteFailed
from selfsup.engine.logging import MetricLogger
from selfsup.engine.loop import Loop, LoopSettings, TrainState
from selfsup.engine.optim import build_optimizer
from selfsup.engine.precision import resolve_precision
from selfsup.engine.sharding import full_state, is_sharded
from selfsup.evaluate.diagnostics import Probe
from selfsup.evaluate.features import collate_for
from selfsup.launch import (
    gather_objects,
    launch,
    make_fabric,
    on_rank_zero,
    skip_buffer_broadcast,
)
from selfsup.methods import METHODS, BuildContext, Method
from selfsup.run_data import (
    decode_once,
    make_loader,
    online_knn,
    prepare_tokenizer,
    trained_tokenizer,
    use_decode_cache,
)
from selfsup.run_dir import (
    RunExistsError,
    check_resumable,
    default_run_dir,
    finished,
    restore,
    run_directory,
    write_run_directory,
)

log = logging.getLogger("selfsup")

__all__ = ["RunExistsError", "default_run_dir", "make_optimizer", "pretrain"]


def pretrain(
    config: RunConfig,
    resume: str | Path | None = None,
    overwrite: bool = False,
) -> Path:
    """Pretrain ``config.method`` on ``config.data`` and return the run directory.

    Everything that can be wrong with the config, names, data and sizes is checked before the run
    directory is written or training starts.

    Args:
        config: a validated run config (see :func:`selfsup.config.load_config`); to resume,
            the run's saved config, e.g. from :func:`resume_config`.
        resume: a run directory to continue from its latest checkpoint.
        overwrite: replace an existing run directory at ``config.out``.
    """
    run_dir, ckpt = run_directory(config, resume, overwrite)
    budget = parse_budget(config.budget)
    if ckpt is not None and finished(run_dir, ckpt, budget):
        log.warning("%s is finished: a budget of %s is spent and its encoder exported; nothing "
                    "to train (give a larger --budget to go on)", run_dir, budget)  # fmt: skip
        return run_dir
    cls, source = _checked_source(config)

    fabric = make_fabric(config)
    restore_signals = launch(fabric)
    try:
        return _launched(config, fabric, cls, source, run_dir, ckpt, resume, overwrite)
    finally:
        restore_signals()  # the caller's handling of SIGUSR1, for library calls


def _launched(
    config: RunConfig,
    fabric: Fabric,
    cls: type[Method],
    source: DataSource,
    run_dir: Path,
    ckpt: Path | None,
    resume: str | Path | None,
    overwrite: bool,
) -> Path:
    """:func:`pretrain` on each launched process: build, train, checkpoint and export."""
    if config.sync_batchnorm and fabric.world_size > 1 and fabric.device.type == "cpu":
        raise ConfigError("sync_batchnorm needs GPUs (torch's SyncBatchNorm has no CPU kernel)")
    fabric.seed_everything(config.seed, verbose=False)  # same initial weights everywhere
    # Until the run directory exists, faults (e.g. in the tokenizer's texts, or while counting
    # an epoch) are only counted, and the first is shown.
    early_faults = FaultCounter()
    set_fault_log(source.train, early_faults)

    tokenizer = (
        prepare_tokenizer(config, source, run_dir, fabric, cls, resume is not None)
        if cls.kind != "image"
        else None
    )
    ctx = BuildContext.from_config(
        config, tokenizer, fabric.world_size, source.num_samples, fabric.device.type
    )
    # config.yaml records what the method's defaults picked: its backbone, and the kind and
    # vocabulary of a tokenizer trained on the data
    if config.backbone is None:
        config = replace(config, backbone=cls.backbone_for(ctx))
    trained = config.tokenizer.path is None and cls.tokenizer_path(config.method_args) is None
    if tokenizer is not None and trained:
        config = replace(config, tokenizer=trained_tokenizer(config, cls))
    method = _build_method(config, cls, ctx, fabric.world_size)
    loader = make_loader(cls.kind, source, tokenizer, config, fabric, method)
    early = list(dict.fromkeys(early_faults.errors))  # a file may be read more than once
    if early and fabric.is_global_zero:
        more = f" (and {len(early) - 1} more)" if len(early) > 1 else ""
        log.warning("skipped while reading the data before training: %s%s", early[0], more)
    if config.resample and not loader.endless:
        raise ConfigError(
            f"resample=true: {config.method} builds its own training examples from the source "
            "and cannot resample it; set resample=false"
        )
    if ckpt is not None:
        check_resumable(ckpt, loader, config, fabric.world_size)
    global_batch = config.batch_size * fabric.world_size * config.optim.accumulate
    if config.strategy == "fsdp":  # sharding replaces the parameters: the optimizer comes after
        if getattr(method, "updates_itself", False):
            raise ConfigError(
                f"{config.method} applies its own updates to whole tables, which strategy=fsdp "
                "shards: use strategy=ddp"
            )
        if any(isinstance(m, torch.nn.Embedding) and m.sparse for m in method.modules()):
            raise ConfigError(
                f"strategy=fsdp: {config.method} has embedding tables with sparse gradients, "
                "which FSDP cannot shard: set method_args.sparse=false, or use strategy=ddp"
            )
        if (config.optim.name or method.recipe().optimizer) == "adafactor":
            raise ConfigError(
                "strategy=fsdp: Adafactor (transformers') cannot update sharded parameters; set "
                "optim.name=adamw, or use strategy=ddp"
            )
        model = fabric.setup_module(method)
        optimizer = fabric.setup_optimizers(make_optimizer(method, config, global_batch))
    else:
        optimizer = make_optimizer(method, config, global_batch)
        if fabric.world_size > 1:
            skip_buffer_broadcast(method)
        model, optimizer = fabric.setup(method, optimizer)

    # Checks passed and the model is built: now the run directory may be written, once every
    # process has checked that it may (an existing run directory is refused, not overwritten).
    fabric.barrier()
    on_rank_zero(fabric, f"writing the run directory {run_dir}", lambda: write_run_directory(
        run_dir, config, ctx, tokenizer, source.faults, resume, overwrite))  # fmt: skip
    faults_path = run_dir / (
        "faults.jsonl" if fabric.global_rank == 0 else f"faults-rank{fabric.global_rank}.jsonl"
    )
    set_fault_log(source.train, FaultLog(faults_path))
    if getattr(loader.dataset, "defer_jpeg", False):  # source.train's copy, JPEGs to the GPU
        set_fault_log(loader.dataset, FaultLog(faults_path))
    monitor = FaultMonitor(faults_path, config.max_bad_fraction)

    state = TrainState()
    # Each process draws its own views and masks (a different stream per rank).
    fabric.seed_everything(config.seed + fabric.global_rank, verbose=False)
    if ckpt is not None:
        state = restore(ckpt, method, optimizer, fabric.global_rank, fabric.world_size, monitor)

    def save(current: TrainState) -> None:
        # Every process's RNG and data position, so that each resumes its own stream.
        mine = {
            "rng": rng_state(),
            "epoch": current.epoch,
            "batch_in_epoch": current.batch_in_epoch,
            "faults_offset": monitor.offset,
        }
        ranks = gather_objects(mine, fabric.world_size)
        # whole tensors, as one process holds them (sharded ones are gathered by all processes)
        whole_method = full_state(method.state_dict(), keep=fabric.is_global_zero)
        whole_optimizer = full_state(optimizer.state_dict(), keep=fabric.is_global_zero)

        def write() -> None:
            try:
                save_checkpoint(
                    run_dir / "checkpoints",
                    current.step,
                    {"method": whole_method, "optimizer": whole_optimizer, "ranks": ranks},
                    {"state": asdict(current), "method": config.method,
                     "config": config.to_dict(), "world_size": fabric.world_size},
                    keep=config.keep_checkpoints,
                )  # fmt: skip
            except OSError as err:  # e.g. a full disk: the earlier checkpoints are intact
                raise WriteFailed(f"could not write the checkpoint of step {current.step} in "
                                  f"{run_dir / 'checkpoints'} ({err}); stopping") from err  # fmt: skip

        on_rank_zero(fabric, f"writing the checkpoint of step {current.step}", write)

    def open_logs(enabled: bool) -> MetricLogger:
        return MetricLogger(
            run_dir,
            config.to_dict() if config.wandb else None,
            enabled=enabled,
            resume_step=state.step if resume is not None else None,
        )

    logger = on_rank_zero(fabric, "opening the metric logs", lambda: open_logs(True))
    logger = logger if logger is not None else open_logs(False)
    collate = collate_for(method, tokenizer, config.seq_len)
    probe = None
    if config.diagnostics_every > 0:
        probe = Probe.from_dataset(source.train, config.diagnostics_samples, collate, fabric.device)
    knn = online_knn(config, source, collate, fabric.device) if config.knn_every > 0 else None
    loop = Loop(
        fabric, model, method, optimizer, loader, _loop_settings(config, method), logger, save,
        global_batch, probe, knn, monitor,
    )  # fmt: skip
    saved_step = state.step if resume is not None else -1
    try:
        try:
            state = loop.run(state)
        finally:
            logger.close()
        loop.guard.agree_on_failure(logger.failure)  # the last steps' metrics, and closing them
        if state.step != saved_step and state.step % config.checkpoint_every != 0:
            save(state)  # the final checkpoint, unless the loop just wrote it
        if tokenizer is not None:  # the exported tokenizer truncates where embed does
            tokenizer.model_max_length = config.seq_len
        # under FSDP the export is written from a whole copy, gathered by every process
        whole = (
            full_state(method.state_dict(), keep=fabric.is_global_zero)
            if is_sharded(method)
            else None
        )

        def finish() -> None:
            exported = method
            if whole is not None:
                exported = _build_method(config, cls, ctx, 1)
                exported.load_state_dict(whole)
            try:
                _finish(run_dir, exported, state, monitor, faults_path, loader.steps_per_epoch,
                        fabric.world_size)  # fmt: skip
            except OSError as err:
                raise WriteFailed(f"could not write the export in {run_dir / 'export'} or "
                                  f"summary.json ({err}); stopping") from err  # fmt: skip

        on_rank_zero(fabric, "exporting the encoder", finish)
    except Interrupted as err:
        raise Interrupted(f"{err}; continue with: selfsup pretrain --resume {run_dir}") from None
    except WriteFailed as err:
        last = latest_checkpoint(run_dir / "checkpoints")
        then = (
            f". Checkpoint {last.name} is intact: fix the cause, then continue with: "
            f"selfsup pretrain --resume {run_dir}"
            if last is not None
            else ". No checkpoint was written: fix the cause, then run again with --overwrite"
        )
        raise WriteFailed(f"{err}{then}") from None
    return run_dir


def _checked_source(config: RunConfig) -> tuple[type[Method], DataSource]:
    """The method class and the data source, after every check that needs no process group;
    the source's images decoded once into memory where ``decode_cache`` says so."""
    config.validate()
    config.precision = resolve_precision(config.precision, config.accelerator)
    cls = METHODS.get(config.method)
    check_method_args(cls, config.method_args)
    check_backbone(cls, config.backbone)
    check_precision_and_norm(config.method, cls, config.precision, config.sync_batchnorm)
    if config.stop_on_collapse and not cls.collapse_alarm:
        raise ConfigError(
            f"stop_on_collapse: {config.method} has no collapse alarm (its embeddings may look "
            "collapsed while it trains well); set stop_on_collapse=false"
        )
    source = build_source(config.data, image_size=config.image_size, seed=config.seed)
    check_compatible(config.method, cls, source)
    check_online_knn(config, source)
    check_source_faults(config, source)
    if config.resample:
        check_resample(config, source)
        source.train.resample = True  # type: ignore[union-attr]
    if use_decode_cache(config, cls, source):
        decode_once(config, source)
        check_source_faults(config, source)
    return cls, source


def _build_method(config: RunConfig, cls: type[Method], ctx: BuildContext, world: int) -> Method:
    """The method from its class and the run's context, with SyncBatchNorm and compilation as
    the config asks."""
    try:
        method = cls.build(ctx, **config.method_args)
    except ValueError as err:  # an argument value the method refuses, named by its message
        raise ConfigError(f"{config.method}: {err}") from None
    except (TypeError, RuntimeError) as err:  # a value its layers cannot take (a negative width)
        given = ", ".join(f"{k}={v!r}" for k, v in config.method_args.items()) or "defaults"
        raise ConfigError(
            f"{config.method} cannot be built with method_args {given}: {err}"
        ) from None
    if config.sync_batchnorm and world > 1:
        method = torch.nn.SyncBatchNorm.convert_sync_batchnorm(method)
    if config.compile:
        method.compile()  # in place: parameter names and checkpoints stay those of the eager model
    return method


def _loop_settings(config: RunConfig, method: Method) -> LoopSettings:
    """The engine's settings: the config's, with the method's recipe where the config has none."""
    return LoopSettings(
        budget=parse_budget(config.budget),
        accumulate=config.optim.accumulate,
        warmup=_or(config.optim.warmup, method.recipe().warmup),
        final_lr=_or(config.optim.final_lr, method.recipe().final_lr),
        schedule=config.optim.schedule or method.recipe().schedule,
        clip_grad=config.optim.clip_grad,
        diagnostics_every=config.diagnostics_every,
        stop_on_collapse=config.stop_on_collapse,
        knn_every=config.knn_every,
        log_every=config.log_every,
        checkpoint_every=config.checkpoint_every,
        progress=config.progress,
        nonfinite=config.nonfinite,
    )


def _finish(
    run_dir: Path,
    method: Method,
    state: TrainState,
    monitor: FaultMonitor,
    faults_path: Path,
    batches_per_epoch: int | None = None,
    world_size: int = 1,
) -> None:
    """Rank 0: export the encoder and write ``summary.json`` (``epochs``: epochs of data read,
    with the current one's fraction when its length is known)."""
    method.eval()
    method.export(run_dir / "export")
    rate = state.samples / max(state.elapsed, 1e-9)
    monitor.poll()
    epochs = float(state.epoch)
    if batches_per_epoch:
        epochs = round(state.epoch + state.batch_in_epoch / batches_per_epoch, 3)
    summary = {"steps": state.step, "epochs": epochs, "seconds": round(state.elapsed, 1),
               "samples": state.samples, "samples_per_s": round(rate, 1),
               "bad_samples": monitor.total, "skipped_steps": state.skipped_steps}  # fmt: skip
    if monitor.total:
        others = " (other processes: faults-rank*.jsonl)" if world_size > 1 else ""
        log.warning("%d unreadable %s skipped; %s listed in %s%s", monitor.total,
                    "sample was" if monitor.total == 1 else "samples were",
                    "it is" if monitor.total == 1 else "each is", faults_path, others)  # fmt: skip
    if state.skipped_steps:
        log.warning("%d non-finite steps were skipped", state.skipped_steps)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))


def _or(value: Any, default: Any) -> Any:  # noqa: ANN401
    """``value`` unless it is None (an unset config field), else the method's default."""
    return default if value is None else value


def make_optimizer(method: Method, config: RunConfig, global_batch: int) -> torch.optim.Optimizer:
    """The optimizer from the config, falling back on the method's recommended recipe."""
    d = method.recipe()
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
        eps=d.eps,
    )
