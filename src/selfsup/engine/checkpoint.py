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
import shutil
import tempfile
from pathlib import Path
from typing import Any

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
        if final.exists():  # same step saved twice (e.g. final save right after a periodic one)
            shutil.rmtree(final)
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
    """Return ``(state, meta)`` of checkpoint directory ``path``."""
    try:
        meta = json.loads((path / "meta.json").read_text())
        state = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
    except (OSError, json.JSONDecodeError, RuntimeError) as err:
        raise CheckpointError(f"checkpoint {path} cannot be read: {err}") from None
    return state, meta
