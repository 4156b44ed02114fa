"""Why a training run stops early: a non-finite step, too many unreadable samples, Ctrl-C or a
scheduler's SIGTERM, metrics that could not be written (or a collapse, which the loop's
diagnostics raise as :class:`CollapseError`).

Every process must take the same decision, or the others hang in their next collective: the
four conditions travel in one all-reduce per step (:meth:`StepGuard.verdict`).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
from lightning_fabric import Fabric
from torch import Tensor

from selfsup.data.faults import FaultMonitor
from selfsup.launch import gather_objects

log = logging.getLogger("selfsup")

RELAYED_WITHIN_S = 2.0  # a second Ctrl-C this soon is the first one relayed (torchrun's agent)
STOP_SIGNALS = (
    signal.SIGINT,
    signal.SIGTERM,
    *([signal.SIGUSR1] if hasattr(signal, "SIGUSR1") else []),
)
EARLY: list[int] = []  # SIGUSR1 received after launch, before training (catch_early_stop_signals)


def catch_early_stop_signals() -> Callable[[], None]:
    """From launch until training starts, SIGUSR1 (a scheduler's notice that the job will end)
    is recorded, not fatal: training then stops after its first step, with a checkpoint. Called
    by :func:`selfsup.launch.launch`; the handler stays until the run returns (during the export
    a notice is simply ignored), which calls what this returns to restore the one before."""
    EARLY.clear()
    if not hasattr(signal, "SIGUSR1") or threading.current_thread() is not threading.main_thread():
        return lambda: None
    before = signal.signal(signal.SIGUSR1, lambda signum, frame: EARLY.append(signum))

    def restore() -> None:
        if before is not None:  # None: a handler not set from Python, which cannot be put back
            signal.signal(signal.SIGUSR1, before)
        EARLY.clear()

    return restore


MAX_SKIPPED_IN_A_ROW = 20  # nonfinite="skip" still stops after this many non-finite steps in a row


class NonFiniteLossError(FloatingPointError):
    """The loss or the gradient became NaN or infinite; the run stops before writing a
    checkpoint of it."""


class CollapseError(RuntimeError):
    """The diagnostics found the embeddings collapsed and ``stop_on_collapse`` is set."""


class WriteFailed(OSError):
    """The run could not write its metrics, a checkpoint or its export (a full disk, a lost
    mount); what it wrote before is intact."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT), SIGTERM or SIGUSR1: the run finished its step, saved a checkpoint of it
    and stopped."""


class StepGuard:
    """The per-step stop conditions of one process.

    Args:
        fabric: the run's Fabric (world size, device, collectives).
        nonfinite: "stop" or "skip" a step whose loss or gradient is not finite.
        manual: the method applies its own updates (a non-finite step cannot be skipped then).
        faults: this process's record of unreadable samples (``max_bad_fraction``).
    """

    def __init__(
        self, fabric: Fabric, nonfinite: str, manual: bool, faults: FaultMonitor | None
    ) -> None:
        self.fabric, self.nonfinite, self.manual, self.faults = fabric, nonfinite, manual, faults
        self.checkpointed = False  # whether a checkpoint of this run exists (for stop messages)
        self.interrupt_requested = False  # Ctrl-C on this process (see catch_ctrl_c)
        self.stop_after_step = False  # Ctrl-C on any process, as the step's verdict agreed
        self.skipped_in_a_row = 0

    def verdict(
        self, loss: Tensor, grad_norm: Tensor | None, samples: int, failure: str | None = None
    ) -> tuple[bool, bool]:
        """(finite, too many faults after ``samples`` read) as agreed by every process: one
        all-reduce per step sums the processes' non-finite flags, unreadable samples, Ctrl-Cs
        (a Ctrl-C on any process sets ``stop_after_step``) and failures to write the metrics
        (``failure``, process 0's, which every process then raises as :class:`WriteFailed`)."""
        count = 0
        if self.faults is not None:
            self.faults.poll()
            count = self.faults.count
        finite = torch.isfinite(loss)
        if grad_norm is not None:
            finite = finite & torch.isfinite(grad_norm)
        others = [float(count), float(self.interrupt_requested), float(failure is not None)]
        flags = torch.cat(
            [(~finite).float().reshape(1), torch.tensor(others, device=finite.device)]
        )
        if self.fabric.world_size > 1:  # every process must decide alike, or the others hang
            flags = self.fabric.all_reduce(flags.to(self.fabric.device), reduce_op="sum")
        non_finite, total, interrupts, failures = flags.tolist()
        if failures > 0:
            self.write_failed(failure)
        self.stop_after_step = interrupts > 0
        over = False
        if self.faults is not None:
            self.faults.others = round(total) - count
            over = self.faults.over_limit(samples)
        if non_finite == 0:
            self.skipped_in_a_row = 0
        return non_finite == 0, over

    @contextlib.contextmanager
    def catch_ctrl_c(self) -> Iterator[None]:
        """While training, a first Ctrl-C (SIGINT), SIGTERM or SIGUSR1 (what a cluster's
        scheduler sends before it preempts or times out a job: SLURM's SIGTERM, or
        ``--signal=USR1@120``; one received since launch counts, see
        :func:`catch_early_stop_signals`) asks to stop after the current step, with a checkpoint
        of it. A second Ctrl-C stops at once (KeyboardInterrupt), unless it comes within
        :data:`RELAYED_WITHIN_S` of the first: torchrun's agent relays the signals it receives
        to its workers, which then see one event twice. Other repeats are ignored."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        requested_at = 0.0

        def request(signum: int, frame: Any) -> None:  # noqa: ANN401
            nonlocal requested_at
            now = time.monotonic()
            if self.interrupt_requested:
                if signum == signal.SIGINT and now - requested_at > RELAYED_WITHIN_S:
                    raise KeyboardInterrupt
                return
            self.interrupt_requested, requested_at = True, now
            if self.fabric.is_global_zero:
                name = signal.Signals(signum).name
                print(f"\nselfsup: {name}: stopping after this step, with a checkpoint of it "
                      "(Ctrl-C again to stop at once)", file=sys.stderr, flush=True)  # fmt: skip

        previous = {signum: signal.signal(signum, request) for signum in STOP_SIGNALS}
        if EARLY:  # received between launch and now
            request(EARLY.pop(), None)
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def agree_on_failure(self, failure: str | None) -> None:
        """At the end of training: :class:`WriteFailed` on every process if ``failure`` is set on
        any (the metrics of the last steps, which no step's verdict carries)."""
        failed = failure is not None
        if self.fabric.world_size > 1:
            flag = torch.tensor([float(failed)], device=self.fabric.device)
            failed = self.fabric.all_reduce(flag, reduce_op="sum").item() > 0
        if failed:
            self.write_failed(failure)

    def write_failed(self, failure: str | None) -> None:
        """Raise :class:`WriteFailed` for the failure of this process or, with ``failure``
        None, another's (asked for: every process calls this alike)."""
        if self.fabric.world_size > 1:
            found = gather_objects(failure, self.fabric.world_size)
            failure = next(f for f in found if f is not None)
        raise WriteFailed(f"{failure}; stopping")

    def non_finite(self, loss: Tensor, grad_norm: Tensor | None, step: int) -> None:
        """Stop for a non-finite step; or, with ``nonfinite="skip"``, return so that the caller
        drops its gradients (stopping all the same after too many in a row)."""
        what = f"loss is {loss.item()}"
        if grad_norm is not None and torch.isfinite(loss):
            what = f"gradient norm is {grad_norm.item()}"
        where = f"{what} at step {step} (on this or another process)"
        if self.nonfinite == "skip" and not self.manual:
            self.skipped_in_a_row += 1
            if self.skipped_in_a_row <= MAX_SKIPPED_IN_A_ROW:
                if self.fabric.is_global_zero:
                    log.warning("%s; skipping the step (nonfinite=skip)", where)
                return
            where = f"{where}, the {MAX_SKIPPED_IN_A_ROW + 1}th non-finite step in a row"
        then = (
            "then resume"
            if self.checkpointed
            else "then run again with --overwrite (no checkpoint was written before this step)"
        )
        raise NonFiniteLossError(
            f"{where}; stopping without saving."
            + (" The last checkpoint is intact." if self.checkpointed else "")
            + f" Lower optim.lr, set optim.clip_grad, or use precision=32-true, {then}"
            + ("" if self.manual else " (or set nonfinite=skip to skip such steps)")
        )
