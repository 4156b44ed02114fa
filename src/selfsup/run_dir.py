"""A run's directory: where it goes, what is written there before training, and how a resume
is checked and restored from its checkpoint."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import IterableDataset

from selfsup.config import Budget, ConfigError, RunConfig, save_config
from selfsup.data.faults import FaultLog, FaultMonitor
from selfsup.engine.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    load_checkpoint,
    set_rng_state,
)
from selfsup.engine.loop import TrainState
from selfsup.engine.sharding import load_optimizer_state, shard_state_like
from selfsup.methods import BuildContext, Method

log = logging.getLogger("selfsup")


class RunExistsError(FileExistsError):
    """The run directory already holds a run and neither resume nor overwrite was asked for."""


def default_run_dir(config: RunConfig) -> Path:
    data = re.sub(r"[^A-Za-z0-9]+", "-", config.data.split(":")[0]).strip("-")
    return Path("runs") / f"{config.method}-{data}-{time.strftime('%Y%m%d-%H%M%S')}"


def run_directory(
    config: RunConfig, resume: str | Path | None, overwrite: bool
) -> tuple[Path, Path | None]:
    """(run directory, checkpoint to resume from or None); refuses a missing checkpoint, and a
    directory that already holds a run unless ``overwrite``."""
    if resume is not None:
        run_dir = Path(resume)
        ckpt = latest_checkpoint(run_dir / "checkpoints")
        if ckpt is None:
            raise ConfigError(
                f"--resume {run_dir}: no complete checkpoint in {run_dir / 'checkpoints'}"
            )
    else:
        run_dir = Path(config.out) if config.out else default_run_dir(config)
        if (run_dir / "config.yaml").exists() and not overwrite:
            if latest_checkpoint(run_dir / "checkpoints") is None:  # it stopped before saving
                raise RunExistsError(
                    f"{run_dir} already holds a run that saved no checkpoint; pass --overwrite "
                    "to start it again, or choose another --out"
                )
            raise RunExistsError(
                f"{run_dir} already holds a run; pass --resume {run_dir} to continue it, "
                "--overwrite to replace it, or choose another --out"
            )
        holds_other_files = run_dir.is_dir() and any(run_dir.iterdir())
        if overwrite and holds_other_files and not (run_dir / "config.yaml").exists():
            raise ConfigError(
                f"--overwrite {run_dir}: that folder holds files but no run (no config.yaml), "
                "so it is not deleted; choose another --out"
            )
        ckpt = None
    return run_dir, ckpt


def write_run_directory(
    run_dir: Path,
    config: RunConfig,
    ctx: BuildContext,
    tokenizer: Any,  # noqa: ANN401
    faults: list[str],
    resume: str | Path | None,
    overwrite: bool,
) -> None:
    """Rank 0 writes the run directory: the config, what the method was built from besides it,
    the tokenizer and the faults found before training."""
    if resume is None and run_dir.exists() and overwrite:
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, run_dir / "config.yaml")
    # What the method was built from besides the config (rebuilding it needs the same).
    context = {"world_size": ctx.world_size, "num_samples": ctx.num_samples,
               "cwd": os.getcwd()}  # relative data paths are relative to it  # fmt: skip
    (run_dir / "context.json").write_text(json.dumps(context))
    if tokenizer is not None and not (run_dir / "tokenizer").exists():
        from selfsup.data.tokenizer import save_tokenizer

        save_tokenizer(tokenizer, run_dir / "tokenizer")
    if resume is None and faults:
        fault_log = FaultLog(run_dir / "faults.jsonl")
        for error in faults:
            fault_log.record(error)


def check_resumable(ckpt: Path, loader: Any, config: RunConfig, world: int) -> None:  # noqa: ANN401
    """Before the run directory is rewritten: refuse a resume with another number of processes
    (each resumes its own data position), or, for a streamed training set, another number of
    reading workers (a stream's order depends on it; a map-style dataset's, the decode cache's
    included, does not, so the saved position would point at other samples)."""
    try:
        meta = json.loads((ckpt / "meta.json").read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(f"--resume: {ckpt / 'meta.json'} cannot be read: {err}") from None
    saved_world = meta.get("world_size")
    if saved_world is not None and saved_world != world:
        raise ConfigError(
            f"{ckpt} was written by {saved_world} processes; resume with the same number "
            f"(now {world})"
        )
    if not isinstance(loader.dataset, IterableDataset):
        return
    saved = meta.get("config", {}).get("num_workers")
    if saved is not None and max(saved, 1) != max(config.num_workers, 1):
        raise ConfigError(
            f"--resume: this run streams its training data, whose order depends on how many "
            f"workers read it; it was saved with num_workers={saved}: resume with that "
            f"(got {config.num_workers})"
        )


def restore(
    ckpt: Path,
    method: Method,
    optimizer: torch.optim.Optimizer,
    rank: int,
    world: int,
    monitor: FaultMonitor,
) -> TrainState:
    """Load the method, optimizer, this process's RNG and data position from ``ckpt``."""
    try:
        saved, meta = load_checkpoint(ckpt)
        method.load_state_dict(shard_state_like(saved["method"], method.state_dict()), strict=True)
        load_optimizer_state(optimizer, saved["optimizer"])
        for entries in optimizer.state.values():  # CPU tensors the optimizer kept as loaded
            for key, value in entries.items():  # alias the mapped file: own copies instead
                if torch.is_tensor(value) and value.device.type == "cpu":
                    entries[key] = value.clone()
    except (CheckpointError, RuntimeError, ValueError, KeyError, IndexError) as err:
        raise ConfigError(
            f"--resume: {ckpt} does not fit this run: {err}. Earlier checkpoints may still "
            f"load: point {ckpt.parent / 'latest'} at one of them"
        ) from None
    if len(saved["ranks"]) != world:
        raise ConfigError(
            f"{ckpt} was written by {len(saved['ranks'])} processes; resume with the same number"
        )
    mine = saved["ranks"][rank]
    set_rng_state(mine["rng"])
    state = TrainState(
        **{**meta["state"], "epoch": mine["epoch"], "batch_in_epoch": mine["batch_in_epoch"]}
    )
    if "faults_offset" in mine:  # forget the faults of steps about to be redone
        monitor.truncate(mine["faults_offset"])
    if rank == 0:
        log.info("resumed %s at step %d", ckpt, state.step)
    return state


def finished(run_dir: Path, ckpt: Path, budget: Budget) -> bool:
    """Whether the run ended at checkpoint ``ckpt`` with ``budget`` spent and wrote its export
    and summary (resuming it would build the data only to find nothing to train)."""
    try:
        state = json.loads((ckpt / "meta.json").read_text())["state"]
        summary = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError, KeyError):
        return False
    if summary.get("steps") != state["step"] or not (run_dir / "export").is_dir():
        return False  # the summary is of another checkpoint, or the export failed
    spent = {"steps": state["step"], "seconds": state["elapsed"], "epochs": summary["epochs"]}
    return spent[budget.unit] >= budget.amount
