"""What the training loop watches besides the loss: the online kNN accuracy and the label-free
collapse diagnostics (:mod:`selfsup.evaluate.diagnostics`), with the progress line's notes and
the stop on a collapse."""

from __future__ import annotations

import logging

import torch
from lightning_fabric import Fabric
from torch import nn

from selfsup.engine.guard import CollapseError
from selfsup.engine.sharding import gathered
from selfsup.evaluate.diagnostics import COLLAPSE_CODES, CollapseAlarm, OnlineKnn, Probe
from selfsup.launch import gather_objects

log = logging.getLogger("selfsup")


class RunDiagnostics:
    """Online kNN accuracy every ``knn_every`` steps and label-free figures of the probe's
    embeddings every ``diagnostics_every`` steps (0 turns either off).

    A collapse is logged as a warning, shown on the progress line (:attr:`note`) and, with
    ``stop_on_collapse``, stops the run on every process (:class:`CollapseError`).
    """

    def __init__(
        self,
        fabric: Fabric,
        method: nn.Module,
        probe: Probe | None = None,
        knn: OnlineKnn | None = None,
        diagnostics_every: int = 0,
        knn_every: int = 0,
        stop_on_collapse: bool = False,
    ) -> None:
        self.fabric = fabric
        self.method = method
        self.probe = probe if diagnostics_every > 0 else None
        self.knn = knn if knn_every > 0 else None
        self.diagnostics_every = diagnostics_every
        self.knn_every = knn_every
        self.stop_on_collapse = stop_on_collapse
        self.alarm = CollapseAlarm() if getattr(method, "collapse_alarm", True) else None
        self.knn_message = ""  # the last online kNN accuracy
        self.collapse_message = ""  # the last diagnostics' collapse

    @property
    def note(self) -> str:
        """What the progress line shows after the loss: the kNN accuracy and a collapse."""
        notes = [self.knn_message] if self.knn_message else []
        if self.collapse_message:
            notes.append(f"COLLAPSE ({self.collapse_message})")
        return "  ".join(notes)

    def baseline(self) -> None:
        """The diagnostics before the first step (or at the resumed state): the reference a
        collapse must fall from (see :class:`CollapseAlarm`)."""
        if self.probe is None:
            return
        if self.alarm is None:
            return
        with self.fabric.autocast(), gathered(self.method):
            _, verdicts = self.probe.figures(self.method)
        for note in self.alarm.baseline(verdicts):
            if self.fabric.is_global_zero:
                log.info("diagnostics: %s", note)

    def at(self, step: int) -> dict[str, float]:
        """The figures due after optimizer step ``step`` (none on most steps)."""
        figures: dict[str, float] = {}
        if self.knn is not None and step % self.knn_every == 0:
            with self.fabric.autocast(), gathered(self.method):
                figures.update(self.knn.accuracy(self.method))
            self.knn_message = f"kNN {figures['knn_top1']:.1f}"
        if self.probe is None or step % self.diagnostics_every:
            return figures
        with self.fabric.autocast(), gathered(self.method):
            found, verdicts = self.probe.figures(self.method)
        figures.update(found)
        if self.alarm is None:  # the method's embeddings may look collapsed while it trains well
            return figures
        verdict = self.alarm.check(verdicts)
        figures["collapse"] = float(COLLAPSE_CODES[verdict.kind])
        message = f"step {step}: {verdict.message}"
        if verdict.kind == "none":
            self.collapse_message = ""
        else:
            self.collapse_message = f"{verdict.kind}, effective rank {verdict.effective_rank:.1f}"
            if self.fabric.is_global_zero:
                log.warning(message)
        stop = self.stop_on_collapse and verdict.kind != "none"
        if self.stop_on_collapse and self.fabric.world_size > 1:
            # every process stops alike (a stream's probe samples differ per process), with the
            # verdict of the first that found the collapse
            flag = torch.tensor([float(stop)], device=self.fabric.device)
            if self.fabric.all_reduce(flag, reduce_op="max").item() > 0:
                found_by = gather_objects(message if stop else None, self.fabric.world_size)
                rank, message = next((r, m) for r, m in enumerate(found_by) if m is not None)
                message = message if stop else f"{message} (on process {rank})"
                stop = True
        if stop:
            raise CollapseError(f"{message}; stopping (stop_on_collapse=true)")
        return figures
