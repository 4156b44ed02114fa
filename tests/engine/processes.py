"""What the multi-process tests share: running a runner script (Lightning Fabric starts the second
process by running it again), reading a run's last checkpoint, and a crash at a given step."""

import subprocess
import sys
from pathlib import Path

import torch


def run_script(script: Path, *args: object) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(script), *map(str, args)], capture_output=True, text=True, timeout=300
    )


def final_state(run_dir: Path) -> dict:
    return torch.load(
        sorted((run_dir / "checkpoints").glob("step-*"))[-1] / "state.pt", weights_only=True
    )


class Crash(Exception):
    pass


def crash_at(cls: type, step: int) -> None:
    """Make ``cls.after_step`` raise :class:`Crash` at ``step``: the run dies in the middle of
    that step, after the checkpoints of the steps before it."""
    original = cls.after_step

    def after_step(self, current, total):
        if current == step:
            raise Crash(f"simulated crash at step {current}")
        original(self, current, total)

    cls.after_step = after_step
