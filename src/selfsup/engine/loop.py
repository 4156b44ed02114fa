"""The training loop: short, explicit, and ignorant of any particular method.

Per optimizer step: ``accumulate`` micro-batches (forward, backward), optional gradient clipping,
``optimizer.step()``, the method's ``after_step`` hook, logging, and a checkpoint every
``checkpoint_every`` steps. Stops when the budget (steps, epochs or wall clock) is spent.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from lightning_fabric import Fabric
from torch import nn
from torch.optim import Optimizer

from selfsup.config import Budget
from selfsup.engine.loader import EpochLoader
from selfsup.engine.logging import MetricLogger, Progress
from selfsup.engine.optim import lr_factor, set_lr


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; the run stops before writing a checkpoint of it."""


@dataclass
class TrainState:
    """Where a run is; saved in every checkpoint's metadata."""

    step: int = 0  # optimizer steps done
    epoch: int = 0  # current epoch
    batch_in_epoch: int = 0  # micro-batches of the current epoch already consumed
    elapsed: float = 0.0  # seconds of training before this process started
    samples: int = 0  # samples seen (global)


@dataclass
class LoopSettings:
    budget: Budget
    accumulate: int = 1
    warmup: float = 0.1
    final_lr: float = 0.0
    clip_grad: float | None = None
    log_every: int = 10
    checkpoint_every: int = 500
    progress: bool = True


def rng_state() -> dict[str, Any]:
    """Every RNG a run touches, as tensors and plain containers (safe to load)."""
    state = {
        "torch": torch.get_rng_state(),
        "numpy": torch.from_numpy(np.random.get_state()[1].astype(np.int64)),
        "numpy_pos": int(np.random.get_state()[2]),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(
        ("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0)
    )
    random.setstate(_as_tuple(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(x: Any) -> Any:  # noqa: ANN401 - mirrors random.getstate()'s nested tuples
    return tuple(_as_tuple(v) for v in x) if isinstance(x, list | tuple) else x


class Loop:
    """Runs optimizer steps until the budget is spent.

    Args:
        fabric: the Lightning Fabric instance (devices, precision, collectives).
        model: the method as returned by ``fabric.setup`` (forward goes through it).
        method: the unwrapped method (for ``after_step``).
        optimizer: optimizer as returned by ``fabric.setup``.
        loader: resumable epochs of batches.
        settings: budget, schedule and logging settings.
        logger: metric sinks (rank 0 only).
        save: callback writing a checkpoint for a given state.
        global_batch: samples per optimizer step over all processes.
    """

    def __init__(
        self,
        fabric: Fabric,
        model: nn.Module,
        method: nn.Module,
        optimizer: Optimizer,
        loader: EpochLoader,
        settings: LoopSettings,
        logger: MetricLogger,
        save: Callable[[TrainState], None],
        global_batch: int,
    ) -> None:
        self.fabric = fabric
        self.model = model
        self.method = method
        self.optimizer = optimizer
        self.loader = loader
        self.settings = settings
        self.logger = logger
        self.save = save
        self.global_batch = global_batch
        budget = settings.budget
        spe = loader.steps_per_epoch
        if budget.unit == "steps":
            self.total_steps: int | None = int(budget.amount)
        elif budget.unit == "epochs" and spe is not None:
            self.total_steps = max(1, int(budget.amount * spe) // settings.accumulate)
        else:
            self.total_steps = None  # wall clock, or epochs of a stream of unknown length

    def progress(self, state: TrainState, now: float) -> float:
        """Fraction of the budget spent, in [0, 1]."""
        budget = self.settings.budget
        if self.total_steps is not None:
            return state.step / self.total_steps
        if budget.unit == "seconds":
            return now / budget.amount
        return state.epoch / budget.amount  # epochs of a stream: known only at epoch ends

    def _batches(self, state: TrainState) -> Iterator[Any]:
        """Micro-batches forever, keeping ``state.epoch`` / ``state.batch_in_epoch`` current."""
        while True:
            empty = True
            for batch in self.loader.epoch(state.epoch, state.batch_in_epoch):
                empty = False
                state.batch_in_epoch += 1
                yield batch
            if empty and state.batch_in_epoch == 0:
                raise RuntimeError("the data source yielded no complete batch in a whole epoch")
            state.epoch += 1
            state.batch_in_epoch = 0

    def run(self, state: TrainState) -> TrainState:
        s = self.settings
        bar = Progress(
            self.total_steps or s.budget.amount,
            "steps" if self.total_steps else s.budget.unit,
            enabled=s.progress and self.fabric.is_global_zero,
        )
        start = time.perf_counter() - state.elapsed
        window_start, window_samples = time.perf_counter(), 0
        sums: dict[str, float] = {}
        info = "(first figures after log_every steps)"
        batches = self._batches(state)
        try:
            while self.progress(state, time.perf_counter() - start) < 1:
                lr = set_lr(
                    self.optimizer, lr_factor(self._lr_progress(state, start), s.warmup, s.final_lr)
                )
                for micro in range(s.accumulate):
                    batch = self.fabric.to_device(next(batches))
                    last = micro == s.accumulate - 1
                    with self.fabric.no_backward_sync(self.model, enabled=not last):
                        out = self.model(batch)
                        self.fabric.backward(out["loss"] / s.accumulate)
                    for key, value in out.items():
                        sums[key] = sums.get(key, 0.0) + float(value.detach()) / s.accumulate
                if not math.isfinite(sums["loss"]):
                    raise NonFiniteLossError(
                        f"loss is {sums['loss']} at step {state.step + 1}; stopping without saving. "
                        "The last checkpoint is intact: lower optim.lr, set optim.clip_grad, or "
                        "use precision=32-true, then resume"
                    )
                if s.clip_grad is not None:
                    self.fabric.clip_gradients(self.model, self.optimizer, max_norm=s.clip_grad)
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                state.step += 1
                state.samples += self.global_batch
                window_samples += self.global_batch
                elapsed = time.perf_counter() - start
                self.method.after_step(state.step, self._total_steps_estimate(state, elapsed))
                if state.step % s.log_every == 0:
                    rate = window_samples / max(1e-9, time.perf_counter() - window_start)
                    metrics = {k: v / s.log_every for k, v in sums.items()}
                    metrics.update(lr=lr, samples_per_s=rate, epoch=state.epoch)
                    self.logger.log(state.step, metrics)
                    info = f"loss {metrics['loss']:.4f}  lr {lr:.3g}  {rate:.0f} samples/s"
                    sums, window_start, window_samples = {}, time.perf_counter(), 0
                bar.update(self._done(state, elapsed), f"step {state.step}  {info}")
                if state.step % s.checkpoint_every == 0:
                    state.elapsed = time.perf_counter() - start
                    self.save(state)
        finally:
            bar.close()
        state.elapsed = time.perf_counter() - start
        return state

    def _lr_progress(self, state: TrainState, start: float) -> float:
        # The step about to be taken is step + 1: its lr must not be 0 at the start of warm-up.
        if self.total_steps is not None:
            return (state.step + 1) / self.total_steps
        return self.progress(state, time.perf_counter() - start)

    def _done(self, state: TrainState, elapsed: float) -> float:
        if self.total_steps:
            return state.step
        return elapsed if self.settings.budget.unit == "seconds" else state.epoch

    def _total_steps_estimate(self, state: TrainState, elapsed: float) -> int:
        if self.total_steps is not None:
            return self.total_steps
        done = self.progress(state, elapsed)
        return max(state.step, int(state.step / done)) if done > 0 else state.step * 1000


def state_meta(state: TrainState) -> dict[str, Any]:
    return asdict(state)
