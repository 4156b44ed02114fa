"""How a run's processes start: Lightning Fabric from the config, the numbers an outside launcher
(torchrun, SLURM's srun) gives, and exchanging small objects between the processes."""

from __future__ import annotations

import atexit
import logging
import math
import os
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from lightning_fabric import Fabric
from lightning_fabric.utilities.exceptions import MisconfigurationException

from selfsup.config import ConfigError, RunConfig

T = TypeVar("T")


class OtherProcessFailed(RuntimeError):
    """Process 0 failed at work only it does (writing the run directory, a checkpoint, the
    export); the other processes stop with this instead of waiting for it until the process
    group's timeout. Process 0 reports its own error."""


def launcher_processes(environ: dict[str, str] | None = None) -> tuple[int, int] | None:
    """``(processes per node, nodes)`` when an outside launcher started this process: torchrun
    (``LOCAL_WORLD_SIZE``, ``WORLD_SIZE``) or SLURM's srun (``SLURM_NTASKS_PER_NODE``,
    ``SLURM_NNODES``; not in an interactive ``bash`` job); else None."""
    env = os.environ if environ is None else environ
    try:
        if "LOCAL_WORLD_SIZE" in env and "WORLD_SIZE" in env:
            local, world = int(env["LOCAL_WORLD_SIZE"]), int(env["WORLD_SIZE"])
            return local, max(world // max(local, 1), 1)
        interactive = env.get("SLURM_JOB_NAME") in ("bash", "interactive")
        if "SLURM_NTASKS_PER_NODE" in env and "SLURM_NNODES" in env and not interactive:
            return int(env["SLURM_NTASKS_PER_NODE"]), int(env["SLURM_NNODES"])
    except ValueError:  # e.g. SLURM's "2(x3)" for uneven nodes: leave it to Fabric's checks
        return None
    return None


def check_not_interactive_srun(environ: dict[str, str] | None = None) -> None:
    """Refuse several tasks of ``srun`` inside an interactive job (``salloc``, ``srun --pty
    bash``): Lightning Fabric does not read SLURM's variables there, so each task would train
    alone, all in one run directory and on the same GPU. The tasks after the first stop with
    this error (``srun --kill-on-bad-exit=1`` stops the first too)."""
    env = os.environ if environ is None else environ
    if "LOCAL_WORLD_SIZE" in env:  # torchrun inside the allocation: it sets the processes
        return
    try:
        task, tasks = int(env.get("SLURM_PROCID") or 0), int(env.get("SLURM_NTASKS") or 1)
    except ValueError:
        return
    # the first task may be the shell of `srun --pty bash`, from which one process (with
    # --devices) or torchrun starts the run; the tasks after it are srun's several
    if task > 0 and tasks > 1 and env.get("SLURM_JOB_NAME") in ("bash", "interactive"):
        raise ConfigError(
            f"srun started {tasks} tasks in an interactive job (SLURM_JOB_NAME="
            f"{env['SLURM_JOB_NAME']}), whose SLURM settings Lightning Fabric ignores: each "
            "task would train alone. Give srun another --job-name, submit the job with sbatch, "
            "or start one task and let --devices start the others"
        )


def is_global_zero(environ: dict[str, str] | None = None) -> bool:
    """Whether this is the first process of a run, from the environment that torchrun, srun or
    Fabric's own launcher set (True without any of them): what a run prints once, it prints
    there."""
    env = os.environ if environ is None else environ
    try:
        if "RANK" in env:  # torchrun
            return int(env["RANK"]) == 0
        if "SLURM_PROCID" in env and launcher_processes(env) is not None:
            return int(env["SLURM_PROCID"]) == 0
        return int(env.get("NODE_RANK") or 0) == 0 and int(env.get("LOCAL_RANK") or 0) == 0
    except ValueError:
        return True


def make_fabric(config: RunConfig) -> Fabric:
    """Lightning Fabric for the config's accelerator, devices, nodes, strategy and precision.

    Under torchrun or srun, ``devices`` and ``num_nodes`` left at 1 take the launcher's numbers
    (and the run's config.yaml records them); numbers that contradict it are refused."""
    if config.precision == "16-mixed" and not torch.cuda.is_available():
        raise ConfigError("precision=16-mixed needs a GPU; use bf16-mixed on CPU")
    check_not_interactive_srun()
    launched = launcher_processes()
    given = (config.devices, config.num_nodes)
    if launched is not None and (given == (1, 1) or given[0] * given[1] == math.prod(launched)):
        # unset, or as many processes laid out otherwise (a run resumed on 4 x 4 GPUs for 8 x 2)
        if given not in ((1, 1), launched):
            logging.getLogger("selfsup").warning(
                "devices=%d, num_nodes=%d: the launcher laid the processes out as %d per node on "
                "%d node(s); the run records that",
                *given,
                *launched,
            )
        config.devices, config.num_nodes = launched
        if config.devices * config.num_nodes > 1 and config.strategy == "auto":
            config.strategy = "ddp"
    elif launched is not None and given != launched:
        raise ConfigError(
            f"devices={config.devices}, num_nodes={config.num_nodes} contradict the launcher "
            f"(torchrun or srun), which started {launched[0]} processes per node on "
            f"{launched[1]} node(s): leave devices and num_nodes unset, or match them"
        )
    strategy: Any = config.strategy
    if strategy == "fsdp":
        strategy = fsdp_strategy(config.devices * config.num_nodes)
    # Lightning announces mixed precision on every run ("Using bfloat16 Automatic Mixed
    # Precision"); the precision is selfsup's default, which config.yaml records. Its warnings stay.
    lightning_info = logging.getLogger("lightning_fabric.utilities.rank_zero")
    level = lightning_info.level
    lightning_info.setLevel(logging.WARNING)
    try:
        return Fabric(
            accelerator=config.accelerator,
            devices=config.devices,
            num_nodes=config.num_nodes,
            strategy=strategy,
            precision=config.precision,  # type: ignore[arg-type]
        )
    except (ValueError, RuntimeError, MisconfigurationException) as err:  # e.g. devices that
        # contradict torchrun or srun
        raise ConfigError(
            f"devices={config.devices}, num_nodes={config.num_nodes}, "
            f"strategy={config.strategy}, precision={config.precision}: {err}"
        ) from None
    finally:
        lightning_info.setLevel(level)


def launch(fabric: Fabric) -> Callable[[], None]:
    """Start the run's other processes (or join those a launcher started), with Fabric's checks
    of the cluster's settings as configuration errors. Returns what restores the handling of
    SIGUSR1 that the run replaced (see :func:`catch_early_stop_signals`)."""
    try:
        fabric.launch()
    except MisconfigurationException as err:  # e.g. srun --gpus-per-task=1 with devices=8
        raise ConfigError(f"devices, num_nodes and the cluster disagree: {err}") from None
    from selfsup.engine.guard import catch_early_stop_signals

    restore = catch_early_stop_signals()  # a scheduler's notice during the set-up is not fatal
    children = getattr(getattr(fabric.strategy, "launcher", None), "procs", None)
    if children:  # Fabric's own launcher: this first process started the others
        atexit.register(stop_children, children)
    return restore


def stop_children(children: list[subprocess.Popen], grace: float = 30.0) -> None:
    """At the exit of the first process, for the processes it started: they end on their own
    within seconds of it; one still running after ``grace`` seconds waits for the first process
    in a collective it will never reach (it failed alone, say at a full disk while logging), and
    is killed, rather than left waiting for the process group's 30-minute timeout."""
    for thread in threading.enumerate():  # Fabric's watcher would kill this process (and its
        # exit code) when a child ends with an error, as children stopped alike do (exit code 3)
        if thread.name == "child-process-observer" and hasattr(thread, "_run"):
            thread._run = lambda: True  # type: ignore[attr-defined]
    deadline = time.monotonic() + grace
    for child in children:
        try:
            child.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def fsdp_strategy(processes: int) -> Any:  # noqa: ANN401 - Fabric's ModelParallelStrategy
    """Fabric's strategy for ``strategy: fsdp``: every process one data-parallel share of the
    sharded method (:func:`selfsup.engine.sharding.shard_method`), no tensor parallelism."""
    from lightning_fabric.strategies import ModelParallelStrategy

    from selfsup.engine.sharding import shard_method

    return ModelParallelStrategy(
        parallelize_fn=shard_method, data_parallel_size=processes, tensor_parallel_size=1
    )


def on_rank_zero(fabric: Fabric, what: str, work: Callable[[], T]) -> T | None:
    """``work()`` on process 0 while the others wait for it; its result there, None elsewhere.

    If it fails, process 0 raises its error and every other process raises
    :class:`OtherProcessFailed` naming it, instead of waiting in its next collective until the
    process group times out (30 minutes)."""
    result, failure = None, None
    if fabric.is_global_zero:
        try:
            result = work()
        except BaseException as err:  # noqa: BLE001 - re-raised below, after telling the others
            failure = err
    if fabric.world_size > 1:
        told = f"{type(failure).__name__}: {failure}" if failure is not None else None
        told = fabric.broadcast(told, src=0)
        if told is not None and not fabric.is_global_zero:
            raise OtherProcessFailed(f"process 0 failed while {what} ({told})")
    if failure is not None:
        raise failure
    return result


def gather_objects(obj: Any, world_size: int) -> list[Any]:  # noqa: ANN401
    """``[obj of rank 0, obj of rank 1, ...]`` on every process (``[obj]`` on one process)."""
    if world_size == 1:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * world_size
    dist.all_gather_object(out, obj)
    return out


def skip_buffer_broadcast(method: Any) -> None:  # noqa: ANN401
    """Keep DDP from broadcasting ``method.replicated_buffers`` from rank 0 before every
    forward (the processes keep them identical themselves). Uses DDP's
    ``_set_params_and_buffers_to_ignore_for_model`` where torch has it; else DDP broadcasts
    them as usual (correct, only slower)."""
    from torch.nn.parallel import DistributedDataParallel

    names = list(getattr(method, "replicated_buffers", ()))
    ignore = getattr(DistributedDataParallel, "_set_params_and_buffers_to_ignore_for_model", None)
    if names and ignore is not None:
        ignore(method, names)
