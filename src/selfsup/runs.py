"""Open a finished (or interrupted) run directory: its config, tokenizer and trained method."""

from __future__ import annotations

import glob
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from selfsup.config import ConfigError, RunConfig, load_config, run_config_path
from selfsup.engine.checkpoint import latest_checkpoint, load_checkpoint
from selfsup.methods import METHODS, BuildContext, Method


@dataclass
class Run:
    """A loaded run: its directory, resolved config, tokenizer (text/pair) and trained method."""

    path: Path
    config: RunConfig
    method: Method
    tokenizer: Any
    step: int
    checkpoint: str = ""  # the checkpoint's directory name and write time ("" at random init)
    cwd: str | None = None  # the folder pretrain ran in, which relative data paths start from

    def data_spec(self) -> str:
        """The run's data spec, its relative path resolved against the folder pretrain ran in
        when it does not exist from here (so a run can be evaluated from anywhere)."""
        spec = self.config.data
        name, sep, arg = spec.partition(":")
        if not sep or not arg or self.cwd is None or os.path.isabs(os.path.expanduser(arg)):
            return spec
        there = os.path.join(self.cwd, arg)
        if glob.glob(arg) or not glob.glob(there):  # found from here, or not there either
            return spec
        return f"{name}:{there}"


def load_run(
    path: str | Path, device: str | torch.device = "cpu", random_init: bool = False
) -> Run:
    """Rebuild the method of run directory ``path`` from its latest checkpoint, in eval mode.

    With ``random_init`` the method is built with the run's seed and left untrained: the baseline
    that a pretrained encoder has to beat.
    """
    path = Path(path)
    config = load_config(run_config_path(path))
    ckpt = None if random_init else latest_checkpoint(path / "checkpoints")
    if ckpt is None and not random_init:
        raise ConfigError(f"{path} has no complete checkpoint yet")
    cls = METHODS.get(config.method)
    tokenizer = None
    if (path / "tokenizer").exists():
        from selfsup.data.tokenizer import load_tokenizer

        tokenizer = load_tokenizer(path / "tokenizer")
    context = {}
    if (path / "context.json").is_file():
        context = json.loads((path / "context.json").read_text())
    ctx = BuildContext.from_config(
        config, tokenizer, context.get("world_size", 1), context.get("num_samples")
    )
    with torch.random.fork_rng(devices=[]):  # the run's initialisation, without touching ours
        torch.default_generator.manual_seed(config.seed)  # built on the CPU: its generator only
        method = cls.build(ctx, **config.method_args)
    step, written = 0, ""
    if ckpt is not None:
        state, meta = load_checkpoint(ckpt)
        method.load_state_dict(state["method"], strict=True)
        step = meta["state"]["step"]
        written = f"{Path(ckpt).name}@{(Path(ckpt) / 'state.pt').stat().st_mtime_ns}"
    elif cls.data_state and (last := latest_checkpoint(path / "checkpoints")) is not None:
        # what the method counted in its training data (word2vec's vocabulary), untrained weights
        state, _ = load_checkpoint(last)
        method.load_state_dict({k: state["method"][k] for k in cls.data_state}, strict=False)
    return Run(path, config, method.to(device).eval(), tokenizer, step, written, context.get("cwd"))
