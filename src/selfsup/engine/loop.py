"""The training loop: short, explicit, and ignorant of any particular method.

Per optimizer step: ``accumulate`` micro-batches (forward, backward), optional gradient clipping,
``optimizer.step()``, the method's ``after_step`` hook, logging, and a checkpoint every
``checkpoint_every`` steps. Stops when the budget (steps, epochs or wall clock) is spent.

Under data parallelism every process takes the same decisions: the wall clock that drives a time
budget is rank 0's, broadcast each step, and a non-finite loss or gradient, or too many unreadable
samples, on any process stops (or, for non-finite steps with ``nonfinite="skip"``, skips) on all
of them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from lightning_fabric import Fabric
from torch import Tensor, nn
from torch.optim import Optimizer

from selfsup.config import Budget, ConfigError
from selfsup.data.faults import FaultMonitor
from selfsup.data.source import DataError
from selfsup.engine.diagnosis import RunDiagnostics
from selfsup.engine.guard import CollapseError, Interrupted, StepGuard
from selfsup.engine.loader import EpochLoader
from selfsup.engine.logging import MetricLogger, Progress
from selfsup.engine.optim import lr_factor, set_lr
from selfsup.engine.sharding import grad_norm
from selfsup.evaluate.diagnostics import OnlineKnn, Probe

log = logging.getLogger("selfsup")


@dataclass
class TrainState:
    """Where a run is; saved in every checkpoint's metadata."""

    step: int = 0  # optimizer steps done
    epoch: int = 0  # current epoch (of this process's data)
    batch_in_epoch: int = 0  # micro-batches of the current epoch already consumed
    elapsed: float = 0.0  # seconds of training so far
    samples: int = 0  # samples seen (global)
    skipped_steps: int = 0  # non-finite steps skipped (nonfinite="skip")


@dataclass
class LoopSettings:
    """What the loop needs from the run config.

    Attributes:
        budget: when to stop.
        accumulate: micro-batches per optimizer step.
        warmup: linear warm-up, as a fraction of the budget.
        final_lr: end of the decay, as a fraction of the peak learning rate.
        schedule: "cosine" or "linear" decay after the warm-up.
        clip_grad: maximum global gradient norm (None: no clipping).
        log_every: optimizer steps per metrics record.
        checkpoint_every: optimizer steps per checkpoint.
        progress: show a progress bar (rank 0).
        nonfinite: "stop" or "skip" a step whose loss or gradient is not finite.
    """

    budget: Budget
    accumulate: int = 1
    warmup: float = 0.1
    final_lr: float = 0.0
    schedule: str = "cosine"
    clip_grad: float | None = None
    diagnostics_every: int = 0
    stop_on_collapse: bool = False
    knn_every: int = 0
    log_every: int = 10
    checkpoint_every: int = 500
    progress: bool = True
    nonfinite: str = "stop"


class Loop:
    """Runs optimizer steps until the budget is spent.

    Args:
        fabric: the Lightning Fabric instance (devices, precision, collectives).
        model: the method as returned by ``fabric.setup`` (forward goes through it).
        method: the unwrapped method (for ``after_step``).
        optimizer: optimizer as returned by ``fabric.setup``.
        loader: resumable epochs of batches; its ``steps_per_epoch`` must be known for an epoch
            budget.
        settings: budget, schedule and logging settings.
        logger: metric sinks (rank 0 only). A failure to log stops the run at the next step's
            verdict (:class:`WriteFailed`); one in the last steps is the caller's to check,
            after closing the logger (:meth:`StepGuard.agree_on_failure`).
        save: callback writing a checkpoint for a given state.
        global_batch: samples per optimizer step over all processes.
        probe: training samples for the label-free diagnostics (``diagnostics_every``).
        knn: labelled bank and queries for the online kNN accuracy (``knn_every``).
        faults: this process's record of unreadable samples (``max_bad_fraction``).
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
        probe: Probe | None = None,
        knn: OnlineKnn | None = None,
        faults: FaultMonitor | None = None,
    ) -> None:
        self.fabric = fabric
        self.model = model
        self.method = method
        # a Method's hooks; a plain module (a user's own objective) has neither
        self.frozen_parameters = getattr(method, "frozen_parameters", list)
        self.discard_step = getattr(method, "discard_step", lambda: None)
        self.optimizer = optimizer
        self.loader = loader
        self.settings = settings
        self.logger = logger
        self.save = save
        self.global_batch = global_batch
        self.faults = faults
        self.diagnostics = RunDiagnostics(fabric, method, probe, knn, settings.diagnostics_every,
                                          settings.knn_every, settings.stop_on_collapse)  # fmt: skip
        self.guard = StepGuard(fabric, settings.nonfinite, False, faults)
        budget = settings.budget
        if budget.unit == "steps":
            self.total_steps: int | None = int(budget.amount)
        elif budget.unit == "epochs":
            spe = loader.steps_per_epoch
            if spe is None:
                raise ValueError("an epoch budget needs the loader's steps_per_epoch")
            self.total_steps = max(1, int(budget.amount * spe) // settings.accumulate)
        else:
            self.total_steps = None  # wall clock

    def progress(self, state: TrainState, elapsed: float) -> float:
        """Fraction of the budget spent, in [0, 1]."""
        if self.total_steps is not None:
            return state.step / self.total_steps
        return elapsed / self.settings.budget.amount

    def _elapsed(self, start: float) -> float:
        """Seconds since the (possibly resumed) start; rank 0's clock on every process."""
        elapsed = time.perf_counter() - start
        if self.fabric.world_size > 1 and self.total_steps is None:
            elapsed = float(self.fabric.broadcast(elapsed, src=0))
        return elapsed

    def _batches(self, state: TrainState) -> Iterator[Any]:
        """Micro-batches forever, keeping ``state.epoch`` / ``state.batch_in_epoch`` current."""
        while True:
            empty = True
            for batch in self.loader.epoch(state.epoch, state.batch_in_epoch):
                empty = False
                state.batch_in_epoch += 1
                yield batch
            if empty and state.batch_in_epoch == 0:  # e.g. shares of DataLoader workers
                raise DataError(
                    "the training data gave no complete batch in a whole epoch (each DataLoader "
                    "worker fills its own batches from its share); lower batch_size or "
                    "num_workers"
                )
            state.epoch += 1
            state.batch_in_epoch = 0

    def _grad_norm(self) -> Tensor | None:
        """Global L2 norm of the gradients (None when a GradScaler handles non-finite ones)."""
        if getattr(getattr(self.fabric.strategy, "precision", None), "scaler", None) is not None:
            return None
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        if not grads:
            return None
        return grad_norm(grads)

    def _mean(self, sums: dict[str, Tensor]) -> dict[str, Tensor]:
        """The logged sums averaged over the processes (each summed its own share of the
        global batch; a process's loss and accuracies are figures of its share)."""
        if self.fabric.world_size == 1 or not sums:
            return sums
        keys = sorted(sums)  # the same keys on every process: one method, one step
        stacked = torch.stack(
            [torch.as_tensor(sums[k], dtype=torch.float32).to(self.fabric.device) for k in keys]
        )
        return dict(zip(keys, self.fabric.all_reduce(stacked, reduce_op="mean"), strict=True))

    @torch.no_grad()
    def _buffers(self) -> list[Tensor]:
        return [b.detach().clone() for b in self.method.buffers()]

    def _check_plain_sgd(self) -> None:
        """A method that updates itself applies plain SGD: refuse settings it would ignore."""
        optimizer = getattr(self.optimizer, "optimizer", self.optimizer)  # Fabric's wrapper
        groups = optimizer.param_groups
        if (
            not isinstance(optimizer, torch.optim.SGD)
            or any(g.get("momentum", 0) or g.get("weight_decay", 0) for g in groups)
            or self.settings.clip_grad is not None
        ):
            raise ConfigError(
                f"{type(self.method).__name__} applies plain SGD itself (fused updates), so "
                "optim.optimizer must be sgd with momentum 0, weight_decay 0 and no clip_grad; "
                "set method_args.fused=false to train through the optimizer instead"
            )

    def run(self, state: TrainState) -> TrainState:
        """Train from ``state`` until the budget is spent; returns the final state.

        Raises:
            Interrupted: Ctrl-C; the step under way was finished and saved.
            WriteFailed: the metrics could not be written; nothing more was saved.
        """
        s = self.settings
        bar = Progress(
            self.total_steps or s.budget.amount,
            "steps" if self.total_steps else "seconds",
            enabled=s.progress and self.fabric.is_global_zero,
        )
        guard = self.guard
        guard.checkpointed = state.step > 0  # a resumed run starts from a checkpoint
        guard.manual = getattr(self.method, "updates_itself", False)
        if guard.manual:
            self._check_plain_sgd()
        if state.step > 0 and self.progress(state, state.elapsed) >= 1:
            log.warning("the run has %d steps already: a budget of %s is spent, nothing to "
                        "train (give a larger --budget to go on)", state.step, s.budget)  # fmt: skip
        batches = self._batches(state)
        self.diagnostics.baseline()
        try:
            with guard.catch_ctrl_c():
                self._train(state, batches, time.perf_counter() - state.elapsed, bar)
        finally:
            bar.close()
        return state

    def _train(self, state: TrainState, batches: Any, start: float, bar: Progress) -> None:  # noqa: ANN401
        """The steps of :meth:`run`, from ``state`` (updated in place)."""
        s = self.settings
        window_start, window_samples, window_steps = time.perf_counter(), 0, 0
        sums: dict[str, Tensor] = {}  # on the device: read only when logging
        info = "(first figures after log_every steps)"
        elapsed = self._elapsed(start)
        while self.progress(state, elapsed) < 1:
            # The step about to be taken is step + 1: its lr is not 0 at the start of warm-up.
            upcoming = (
                (state.step + 1) / self.total_steps
                if self.total_steps
                else self.progress(state, elapsed)
            )
            lr = set_lr(self.optimizer, lr_factor(upcoming, s.warmup, s.final_lr, s.schedule))
            step_loss = torch.zeros((), device=self.fabric.device)
            manual = getattr(self.method, "updates_itself", False)
            step_sums: dict[str, Tensor] = {}
            # A skipped step must leave no trace: the forward may have written buffers
            # (batch-norm statistics, MoCo's queue, DINO's centre), restored from this copy.
            kept = self._buffers() if s.nonfinite == "skip" and not manual else None
            for micro in range(s.accumulate):
                batch = self.fabric.to_device(next(batches))
                last = micro == s.accumulate - 1
                if manual:  # the method applies its own SGD step, micro-batch by micro-batch
                    out = self.method.update(batch, lr / s.accumulate)
                else:
                    with self.fabric.no_backward_sync(self.model, enabled=not last):
                        out = self.model(batch)
                        self.fabric.backward(out["loss"] / s.accumulate)
                step_loss += out["loss"].detach().float() / s.accumulate
                for key, value in out.items():
                    value = value.detach().float() / s.accumulate
                    step_sums[key] = step_sums[key] + value if key in step_sums else value
            grad_norm = None if manual else self._grad_norm()
            read = state.samples + self.global_batch  # this step's samples included
            finite, too_many_faults = self.guard.verdict(
                step_loss, grad_norm, read, self.logger.failure
            )
            if too_many_faults:
                raise self.faults.error(read)  # type: ignore[union-attr]
            if not finite:
                self.guard.non_finite(step_loss, grad_norm, state.step + 1)
                self.optimizer.zero_grad(set_to_none=True)  # the step is skipped
                if kept is not None:
                    for buffer, saved in zip(self.method.buffers(), kept, strict=True):
                        buffer.copy_(saved)
                self.discard_step()
                state.skipped_steps += 1
                continue
            for key, value in step_sums.items():
                sums[key] = sums[key] + value if key in sums else value
            if not manual:
                if s.clip_grad is not None:
                    # non-finite steps were dealt with above; fp16's scaler may still
                    # hand over inf gradients, which its step then skips
                    self.fabric.clip_gradients(self.model, self.optimizer, max_norm=s.clip_grad,
                                               error_if_nonfinite=False)  # fmt: skip
                for p in self.frozen_parameters():
                    p.grad = None  # skipped by the optimizer, its state untouched
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                if grad_norm is not None:
                    sums["grad_norm"] = sums.get("grad_norm", 0.0) + grad_norm
            state.step += 1
            state.samples += self.global_batch
            window_samples += self.global_batch
            window_steps += 1  # the steps summed (a resumed run's first window is shorter)
            elapsed = self._elapsed(start)
            self.method.after_step(state.step, self._total_steps_estimate(state, elapsed))
            try:
                diagnosed = self.diagnostics.at(state.step)
            except CollapseError as err:
                check = "check the method's arguments and learning rate"
                then = (f"The last checkpoint is intact; {check}" if self.guard.checkpointed else
                        f"No checkpoint was written; {check}, then run again with --overwrite")  # fmt: skip
                raise CollapseError(f"{err}. {then}") from None
            # the window's figures every log_every steps, and those of the last steps (which
            # the run's budget or a stop cut short) at the end
            last = self.progress(state, elapsed) >= 1 or self.guard.stop_after_step
            if state.step % s.log_every == 0 or last:
                rate = window_samples / max(1e-9, time.perf_counter() - window_start)
                metrics = {k: float(v) / window_steps for k, v in self._mean(sums).items()}
                metrics.update(lr=lr, samples_per_s=rate, epoch=state.epoch, **diagnosed)
                if self.faults is not None and self.faults.total:
                    metrics["bad_samples"] = self.faults.total  # of every process
                if state.skipped_steps:
                    metrics["skipped_steps"] = state.skipped_steps
                self.logger.log(state.step, metrics)
                info = f"loss {metrics['loss']:.4f}  lr {lr:.3g}  {rate:.0f} samples/s"
                sums, window_start, window_samples, window_steps = {}, time.perf_counter(), 0, 0
            elif diagnosed:
                self.logger.log(state.step, diagnosed)
            line = f"{info}  {self.diagnostics.note}" if self.diagnostics.note else info
            done = state.step if self.total_steps else min(elapsed, s.budget.amount)
            bar.update(done, f"step {state.step}  {line}")
            if state.step % s.checkpoint_every == 0 or self.guard.stop_after_step:
                state.elapsed = elapsed
                self.save(state)
                self.guard.checkpointed = True
            if self.guard.stop_after_step:
                raise Interrupted(f"interrupted at step {state.step}, which is saved")
        state.elapsed = elapsed

    def _total_steps_estimate(self, state: TrainState, elapsed: float) -> int:
        if self.total_steps is not None:
            return self.total_steps
        done = self.progress(state, elapsed)
        return max(state.step, int(state.step / done)) if done > 0 else state.step * 1000
