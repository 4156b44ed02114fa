"""Helpers that write small image files, tar shards and text files into tmp_path."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest
from PIL import Image


def save_image(path: Path, colour=(200, 30, 30), size=(20, 12), mode="RGB") -> Path:
    """Write a solid-colour image; the format follows the suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).convert(mode).save(path)
    return path


def png_bytes(colour=(10, 20, 30), size=(8, 8)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def add_member(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


def write_shard(path: Path, indices, *, with_cls=True, with_txt=False) -> Path:
    """One tar shard; sample i has key sample_{i:05d}, label i (in .cls), caption "caption i"."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as archive:
        for i in indices:
            key = f"sample_{i:05d}"
            add_member(archive, f"{key}.png", png_bytes((i % 256, 0, 0)))
            if with_cls:
                add_member(archive, f"{key}.cls", str(i).encode())
            if with_txt:
                add_member(archive, f"{key}.txt", f"caption {i}".encode())
    return path


@pytest.fixture
def shard_dir(tmp_path: Path) -> Path:
    """4 train shards of 6 samples (labels 0..23) and 1 test shard of 5 (labels 100..104)."""
    root = tmp_path / "shards"
    for s in range(4):
        write_shard(root / f"train-{s:04d}.tar", range(6 * s, 6 * s + 6))
    write_shard(root / "test-0000.tar", range(100, 105))
    return root
