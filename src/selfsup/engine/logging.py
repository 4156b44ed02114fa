"""Metric sinks: ``metrics.jsonl`` (for scripts and reports), TensorBoard, optionally W&B,
and a console progress bar showing loss, learning rate, samples/s and ETA."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("selfsup")


class MetricLogger:
    """Append scalars to ``metrics.jsonl`` and TensorBoard event files in ``run_dir``.

    Args:
        run_dir: the run directory.
        wandb_config: when not None, also log to Weights & Biases with this config.
        enabled: False on non-zero ranks, which log nothing.
        resume_step: when resuming, records after this step (logged by the interrupted run
            after its last checkpoint) are dropped, so no step appears twice.
    """

    def __init__(
        self,
        run_dir: Path,
        wandb_config: dict[str, Any] | None = None,
        enabled: bool = True,
        resume_step: int | None = None,
    ) -> None:
        self.enabled = enabled
        self._tb = None
        self._wandb = None
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
        if not self.enabled:
            return
        record = {"step": step, "time": round(time.time(), 3), **metrics}
        self._file.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for key, value in metrics.items():
                self._tb.add_scalar(key, value, step)
        if self._wandb is not None:
            self._wandb.log(metrics, step=step)

    def close(self) -> None:
        if not self.enabled:
            return
        self._file.close()
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()


def _step_of(line: str) -> float:
    """A metrics line's step; infinity for a line a crash left unreadable (dropped on resume)."""
    try:
        return float(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return float("inf")


class Progress:
    """A rich progress bar over the budget (steps, epochs or seconds)."""

    def __init__(self, total: float, unit: str, enabled: bool = True) -> None:
        self.enabled = enabled
        self.unit = unit
        if not enabled:
            return
        from rich.progress import BarColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
        from rich.progress import Progress as RichProgress

        self._bar = RichProgress(
            TextColumn("[bold]pretrain"),
            BarColumn(),
            TextColumn("{task.percentage:>5.1f}%"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            refresh_per_second=4,
        )
        self._bar.start()
        self._task = self._bar.add_task("train", total=total, info="")

    def update(self, done: float, info: str) -> None:
        if self.enabled:
            self._bar.update(self._task, completed=done, info=info)

    def close(self) -> None:
        if self.enabled:
            self._bar.stop()
