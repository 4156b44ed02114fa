"""Atomic checkpoints: one directory per checkpoint, written under a temporary name and renamed.

Layout of a run directory::

    checkpoints/step-00000500/state.pt   tensors and plain containers (loaded with weights_only)
    checkpoints/step-00000500/meta.json  step, epoch, data position, time, config
    checkpoints/latest                   name of the newest complete checkpoint

A process killed at any moment leaves either the previous complete checkpoint or the new one:
the new directory only gets its final name after every file in it is flushed to disk, and the
``latest`` pointer is replaced atomically afterwards. Loading uses ``torch.load(weights_only=True)``
so a checkpoint file can never run code.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete or does not match the model."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def save_checkpoint(
    root: Path, step: int, state: dict[str, Any], meta: dict[str, Any], keep: int = 2
) -> Path:
    """Write checkpoint ``root/step-XXXXXXXX`` atomically and keep the newest ``keep``.

    Args:
        root: the run's ``checkpoints`` folder.
        step: optimizer step, used in the name.
        state: tensors and plain containers (saved with ``torch.save``).
        meta: JSON-serialisable metadata.
        keep: number of checkpoints to keep (older ones are removed after the new one is safe).
    """
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:08d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-step-{step:08d}-", dir=root))
    try:
        with open(tmp / "state.pt", "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        _write_file(tmp / "meta.json", json.dumps(meta, indent=2).encode())
        _fsync_dir(tmp)
        if final.exists():  # the same step saved again: move the old one aside, never delete first
            old = root / f".old-{final.name}"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    pointer_tmp = root / ".latest.tmp"
    _write_file(pointer_tmp, final.name.encode())
    os.replace(pointer_tmp, root / "latest")
    _fsync_dir(root)
    for old in sorted(p for p in root.glob("step-*") if p.is_dir())[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    for torn in root.glob(".tmp-step-*"):  # a save killed before its rename (one writer: rank 0)
        shutil.rmtree(torn, ignore_errors=True)
    return final


def latest_checkpoint(root: Path) -> Path | None:
    """The newest complete checkpoint under ``root``, or None."""
    pointer = root / "latest"
    if pointer.is_file():
        candidate = root / pointer.read_text().strip()
        if (candidate / "meta.json").is_file() and (candidate / "state.pt").is_file():
            return candidate
    # Pointer missing or stale (killed between rename and pointer update): scan.
    complete = [
        p
        for p in sorted(root.glob("step-*"))
        if (p / "meta.json").is_file() and (p / "state.pt").is_file()
    ]
    return complete[-1] if complete else None


def load_checkpoint(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return ``(state, meta)`` of checkpoint directory ``path``. The tensors are mapped from
    the file (copy-on-write) where the file system allows, not read into each process's memory:
    the processes of a machine that resume a run share one copy in the page cache while they
    load it."""
    try:
        meta = json.loads((path / "meta.json").read_text())
        try:
            state = torch.load(path / "state.pt", map_location="cpu", weights_only=True, mmap=True)
        except (OSError, RuntimeError):  # a file system without mmap, or a torn file: read it
            state = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
    except (OSError, ValueError, RuntimeError, EOFError, pickle.UnpicklingError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"checkpoint {path} cannot be read: {first_line}") from None
    return state, meta


def rng_state() -> dict[str, Any]:
    """Every RNG a run touches (torch, CUDA, numpy, python), as tensors and plain containers that
    ``torch.load(weights_only=True)`` accepts."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the RNGs saved by :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(
        ("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0)
    )
    random.setstate(_as_tuple(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(x: Any) -> Any:  # noqa: ANN401 - mirrors random.getstate()'s nested tuples
    return tuple(_as_tuple(v) for v in x) if isinstance(x, list | tuple) else x
