"""Metric sinks: ``metrics.jsonl`` (for scripts and reports), TensorBoard, optionally W&B,
and a console progress bar showing loss, learning rate, samples/s and ETA."""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from contextvars import ContextVar
from pathlib import Path
from typing import Any

log = logging.getLogger("selfsup")

# Whether evaluation shows its progress (on stderr): embedding a large split or fine-tuning takes
# minutes on a CPU. The command line's evaluate, embed and report set it; the kNN monitor inside
# pretraining and library calls leave it off.
SHOW_PROGRESS: ContextVar[bool] = ContextVar("SHOW_PROGRESS", default=False)


class MetricLogger:
    """Append scalars to ``metrics.jsonl`` and TensorBoard event files in ``run_dir``.

    Args:
        run_dir: the run directory.
        wandb_config: when not None, also log to Weights & Biases with this config.
        enabled: False on non-zero ranks, which log nothing.
        resume_step: when resuming, records after this step (logged by the interrupted run
            after its last checkpoint) are dropped, so no step appears twice.

    A sink that fails while training (a full disk, W&B unreachable) does not raise: ``failure``
    says what failed, logging stops, and the training loop stops the run on every process at
    its next step (:meth:`selfsup.engine.guard.StepGuard.verdict`).
    """

    def __init__(
        self,
        run_dir: Path,
        wandb_config: dict[str, Any] | None = None,
        enabled: bool = True,
        resume_step: int | None = None,
    ) -> None:
        self.enabled = enabled
        self.failure: str | None = None
        self._tb = None
        self._wandb = None
        self._run_dir = run_dir
        if not enabled:
            return
        path = run_dir / "metrics.jsonl"
        if resume_step is not None and path.exists():
            lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
            kept = [ln for ln in lines if _step_of(ln) <= resume_step]
            path.write_text("".join(ln + "\n" for ln in kept))
        self._file = open(path, "a", buffering=1)  # noqa: SIM115
        try:
            from torch.utils.tensorboard import SummaryWriter

            purge = None if resume_step is None else resume_step + 1
            self._tb = SummaryWriter(str(run_dir / "tensorboard"), purge_step=purge)
        except ImportError:  # tensorboard is a dependency, but degrade rather than crash
            log.warning("tensorboard is not installed; logging to metrics.jsonl only")
        if wandb_config is not None:
            try:
                import wandb
            except ImportError:
                raise RuntimeError("wandb=true but the wandb package is not installed") from None
            self._wandb = wandb.init(project="selfsup", dir=str(run_dir), config=wandb_config)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled or self.failure is not None:
            return
        record = {"step": step, "time": round(time.time(), 3), **metrics}
        sink = "metrics.jsonl"
        try:
            self._file.write(json.dumps(record) + "\n")
            sink = "tensorboard"
            if self._tb is not None:
                for key, value in metrics.items():
                    self._tb.add_scalar(key, value, step)
            sink = "Weights & Biases"
            if self._wandb is not None:
                self._wandb.log(metrics, step=step)
        except Exception as err:  # noqa: BLE001 - reported through ``failure``
            self._failed(f"log step {step} to", sink, err)

    def close(self) -> None:
        """Close the sinks; one that fails to is reported through ``failure``, as in :meth:`log`
        (the caller agrees on it across processes before the final checkpoint)."""
        if not self.enabled:
            return
        sinks = [("metrics.jsonl", self._file.close)]
        if self._tb is not None:
            sinks.append(("tensorboard", self._tb.close))
        if self._wandb is not None:
            sinks.append(("Weights & Biases", self._wandb.finish))
        for sink, close in sinks:
            try:
                close()
            except Exception as err:  # noqa: BLE001 - reported through ``failure``
                self._failed("close", sink, err)

    def _failed(self, doing: str, sink: str, err: Exception) -> None:
        if self.failure is None:  # the first failure is the one told
            where = sink if sink == "Weights & Biases" else self._run_dir / sink
            self.failure = f"could not {doing} {where} ({type(err).__name__}: {err})"


def _step_of(line: str) -> float:
    """A metrics line's step; infinity for a line a crash left unreadable (dropped on resume)."""
    try:
        return float(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return float("inf")


class Progress:
    """The console's view of the budget (steps, epochs or seconds) or of other long work.

    A rich progress bar on a terminal (or in a notebook). Elsewhere (a log file, a pipe, a
    SLURM job's output) a bar that redraws itself would leave one squeezed line at the end, so
    plain lines are printed instead: at the first update, every ``every`` seconds and at the
    end. It writes to stderr, which keeps stdout for results (``selfsup evaluate`` prints JSON
    there, ``selfsup pretrain`` the run directory). With ``total`` None (a stream of unknown length) there is no
    percentage and no ETA: the time so far and ``info``, which says how far the work got.
    """

    def __init__(
        self,
        total: float | None,
        unit: str,
        enabled: bool = True,
        every: float = 30.0,
        label: str = "pretrain",
    ) -> None:
        self.enabled = enabled
        self.unit = unit
        self.total = total
        self.label = label
        if not enabled:
            return
        from rich.console import Console
        from rich.progress import BarColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
        from rich.progress import Progress as RichProgress

        console = Console(stderr=True)
        self.live = console.is_terminal or console.is_jupyter
        if not self.live:
            self._every, self._line, self._shown = every, "", ""
            self._start, self._printed = time.perf_counter(), -math.inf  # the first update prints
            self._first: tuple[float, float] | None = None  # (progress, time) at the first update
            return
        eta = [TextColumn("{task.percentage:>5.1f}%"), TimeElapsedColumn(), TextColumn("ETA"),
               TimeRemainingColumn()] if total is not None else [TimeElapsedColumn()]  # fmt: skip
        self._bar = RichProgress(
            TextColumn(f"[bold]{label}"),
            BarColumn(),  # a pulse without a total
            *eta,
            TextColumn("{task.fields[info]}"),
            console=console,
            refresh_per_second=4,
        )
        self._bar.start()
        self._task = self._bar.add_task("train", total=total, info="")

    def update(self, done: float, info: str) -> None:
        if not self.enabled:
            return
        if self.live:
            self._bar.update(self._task, completed=done, info=info)
            return
        now = time.perf_counter()
        if self._first is None:  # the rate leaves out the first step (and a resumed run's past)
            self._first = (done, now)
        first_done, first_time = self._first
        elapsed = _clock(now - self._start)
        if self.total is None:
            self._line = f"{self.label}  {elapsed}  {info}"
        else:
            rate = (done - first_done) / (now - first_time) if now > first_time else 0.0
            eta = _clock((self.total - done) / rate) if rate > 0 else "-"
            percent = 100.0 * done / self.total if self.total else 100.0
            self._line = f"{self.label} {percent:5.1f}%  {elapsed}  ETA {eta}  {info}"
        if now - self._printed >= self._every:
            self._print()
            self._printed = now

    def close(self) -> None:
        if not self.enabled:
            return
        if self.live:
            self._bar.stop()
        elif self._line != self._shown:  # the end, unless it was just printed
            self._print()

    def _print(self) -> None:
        print(self._line, file=sys.stderr, flush=True)
        self._shown = self._line


def _clock(seconds: float) -> str:
    """``h:mm:ss`` of a duration."""
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}"
