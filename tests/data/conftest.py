"""Fixtures that write small image files and tar shards into tmp_path.

Each helper is a fixture returning a function, so tests never import this module.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest
from PIL import Image


def _save_image(path: Path, colour=(200, 30, 30), size=(20, 12), mode="RGB") -> Path:
    """Write a solid-colour image; the format follows the suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).convert(mode).save(path)
    return path


def _png_bytes(colour=(10, 20, 30), size=(8, 8)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def _make_tar(path: Path, members) -> Path:
    """Write a tar holding ``members``, a list of (name, bytes), in order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as archive:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def _write_shard(path: Path, indices, *, with_cls=True, with_txt=False) -> Path:
    """Sample i: key sample_{i:05d}, a PNG whose red channel is i % 256, .cls i, .txt "caption i"."""
    members = []
    for i in indices:
        key = f"sample_{i:05d}"
        members.append((f"{key}.png", _png_bytes((i % 256, 0, 0))))
        if with_cls:
            members.append((f"{key}.cls", str(i).encode()))
        if with_txt:
            members.append((f"{key}.txt", f"caption {i}".encode()))
    return _make_tar(path, members)


@pytest.fixture
def save_image():
    return _save_image


@pytest.fixture
def png_bytes():
    return _png_bytes


@pytest.fixture
def make_tar():
    return _make_tar


@pytest.fixture
def write_shard():
    return _write_shard


@pytest.fixture
def shard_dir(tmp_path: Path) -> Path:
    """4 train shards of 6 samples (labels 0..23) and 1 test shard of 5 (labels 100..104)."""
    root = tmp_path / "shards"
    for s in range(4):
        _write_shard(root / f"train-{s:04d}.tar", range(6 * s, 6 * s + 6))
    _write_shard(root / "test-0000.tar", range(100, 105))
    return root
