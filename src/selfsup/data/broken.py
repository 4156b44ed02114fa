"""A generated corpus of broken and unusual inputs, one small data source per case, and a runner
that says what selfsup makes of each.

The tests run every case (``tests/data/test_broken_corpus.py``) and ``benchmarks/faults.py``
prints the table of ``benchmarks/faults.md``. Each case is a folder holding a few good samples and
the one thing under test, so that whatever selfsup does with the bad thing is visible beside the
good ones. Outcomes:

- ``read``: every sample is read (unusual but valid input, e.g. a CMYK JPEG);
- ``skipped``: the bad sample is skipped and recorded while reading (a truncated JPEG);
- ``left out``: the bad sample is left out when the source is built (a 0-byte file);
- ``error``: the source is refused before any training, with one message naming the problem.
"""

from __future__ import annotations

import io
import os
import struct
import tarfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import IterableDataset

from selfsup.data.faults import FaultCounter, preflight, set_fault_log
from selfsup.data.registry import build_source
from selfsup.data.source import DataError

__all__ = ["CASES", "Case", "Outcome", "run_case", "write_case"]

GOOD = 3  # good samples beside each bad one


@dataclass(frozen=True)
class Case:
    """One fault case: ``write(folder)`` creates it and returns the data spec to read."""

    kind: str  # "image", "text", "captions", "shards" or "source"
    name: str
    description: str
    expect: str  # "read", "skipped", "left out" or "error"
    write: Callable[[Path], str]


@dataclass
class Outcome:
    """What reading a case gave: the outcome, samples read, faults and the first message."""

    outcome: str
    samples: int
    faults: int
    message: str


# ---- image files ------------------------------------------------------------------------------


def _noise(size: tuple[int, int], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)


def _encoded(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def _good_png(i: int) -> bytes:
    return _encoded(Image.fromarray(_noise((24, 24), i)), "PNG")


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width x height`` one-bit pixels (a decompression bomb:
    a few hundred bytes on disk, gigabytes once decoded)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def _exif_rotated() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees for display
    return _encoded(Image.fromarray(_noise((40, 20))), "JPEG", exif=exif)


def _sixteen_bit() -> bytes:
    array = np.linspace(0, 65535, 24 * 24).astype(np.uint16).reshape(24, 24)
    return _encoded(Image.fromarray(array), "PNG")


def _palette_with_transparency() -> bytes:
    image = Image.fromarray(_noise((24, 24))).convert("P")
    return _encoded(image, "PNG", transparency=0)


_IMAGES: dict[str, tuple[str, str, str, Callable[[], bytes]]] = {
    # name: (file name, description, expected outcome, bytes)
    "truncated-jpeg": ("cut.jpg", "JPEG cut to 60 % of its bytes", "skipped",
                       lambda: _encoded(Image.fromarray(_noise((64, 64))), "JPEG")[:1200]),
    "corrupt-png": ("corrupt.png", "PNG signature followed by garbage", "skipped",
                    lambda: b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4),
    "zero-byte": ("empty.jpg", "0-byte file with an image extension", "left out", lambda: b""),
    "not-an-image": ("notes.jpg", "text file named .jpg", "skipped",
                     lambda: b"these are my holiday notes, not a photo\n" * 10),
    "grayscale": ("grey.png", "8-bit grayscale PNG (mode L)", "read",
                  lambda: _encoded(Image.fromarray(_noise((24, 24))).convert("L"), "PNG")),
    "rgba": ("alpha.png", "RGBA PNG, composited over white", "read",
             lambda: _encoded(Image.fromarray(_noise((24, 24))).convert("RGBA"), "PNG")),
    "palette": ("palette.png", "palette PNG with a transparent index", "read",
                _palette_with_transparency),
    "16-bit": ("deep.png", "16-bit grayscale PNG, rescaled (not clipped) to 8 bits", "read",
               _sixteen_bit),
    "cmyk": ("cmyk.jpg", "CMYK JPEG", "read",
             lambda: _encoded(Image.fromarray(_noise((24, 24))).convert("CMYK"), "JPEG")),
    "exif-orientation": ("rotated.jpg", "JPEG with EXIF orientation 6, applied", "read",
                         _exif_rotated),
    "smaller-than-crop": ("tiny.png", "1 x 1 image, upscaled to the crop size", "read",
                          lambda: _encoded(Image.new("RGB", (1, 1), (9, 9, 9)), "PNG")),
    "bomb-huge": ("bomb.png", "PNG header claiming 100,000 x 100,000 pixels", "skipped",
                  lambda: _png_claiming(100_000, 100_000)),
    "bomb-large": ("large.png", "PNG header claiming 10,000 x 10,000 pixels (over the 89 M "
                   "pixel limit, under PIL's own error limit)", "skipped",
                   lambda: _png_claiming(10_000, 10_000)),
}  # fmt: skip


def _image_case(name: str) -> Callable[[Path], str]:
    file_name, _, _, data = _IMAGES[name]

    def write(folder: Path) -> str:
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(GOOD):
            (folder / f"good{i}.png").write_bytes(_good_png(i))
        (folder / file_name).write_bytes(data())
        return f"folder:{folder}"

    return write


# ---- text files ----------------------------------------------------------------------------


def _text_case(files: dict[str, bytes]) -> Callable[[Path], str]:
    def write(folder: Path) -> str:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "good.txt").write_text("".join(f"good document {i}\n" for i in range(GOOD)))
        for name, data in files.items():
            (folder / name).write_bytes(data)
        return f"text:{folder}"

    return write


# ---- caption files -------------------------------------------------------------------------


def _captions_case(header: str, rows: list[str], suffix: str = ".csv") -> Callable[[Path], str]:
    def write(folder: Path) -> str:
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(GOOD):
            (folder / f"good{i}.png").write_bytes(_good_png(i))
        good = (
            [f'{{"image": "good{i}.png", "caption": "good {i}"}}' for i in range(GOOD)]
            if suffix == ".jsonl"
            else [f"good{i}.png,good {i}" for i in range(GOOD)]
        )
        path = folder / f"captions{suffix}"
        path.write_text("".join(line + "\n" for line in [header, *good, *rows] if line))
        return f"captions:{path}"

    return write


# ---- tar shards ----------------------------------------------------------------------------


def _tar(members: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _good_members(first: int = 0, count: int = GOOD) -> list[tuple[str, bytes]]:
    members = []
    for i in range(first, first + count):
        members += [(f"s{i:03d}.png", _good_png(i)), (f"s{i:03d}.cls", str(i % 2).encode())]
    return members


def _shard_case(make: Callable[[], bytes], suffix: str = ".tar") -> Callable[[Path], str]:
    def write(folder: Path) -> str:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"shard-000{suffix}").write_bytes(make())
        return f"shards:{folder}"

    return write


def _truncated_tar() -> bytes:
    data = _tar(_good_members(0, 6))
    return data[: len(data) // 2 + 100]  # cut inside a member


def _gzip_cut() -> bytes:
    import gzip

    data = gzip.compress(_tar(_good_members(0, 6)))
    return data[: len(data) * 2 // 3]


# ---- whole sources -------------------------------------------------------------------------


def _empty_folder(folder: Path) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    return f"folder:{folder}"


def _all_corrupt(folder: Path) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(GOOD):
        (folder / f"bad{i}.jpg").write_bytes(b"not a jpeg")
    return f"folder:{folder}"


def _all_binary(folder: Path) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "a.txt").write_bytes(b"\0\1\2" * 100)
    return f"text:{folder}"


CASES: list[Case] = [
    *(Case("image", name, desc, expect, _image_case(name))
      for name, (_, desc, expect, _) in _IMAGES.items()),
    Case("text", "invalid-utf8", "text with invalid UTF-8 bytes (read with U+FFFD)", "read",
         _text_case({"latin1.txt": "café au lait\n".encode("latin-1")})),
    Case("text", "empty-documents", "blank and whitespace-only lines and an empty file", "read",
         _text_case({"blank.txt": b"\n   \n\t\n", "empty.txt": b""})),
    Case("text", "enormous-line", "one 2.5 M-character line (read in 1 M-character pieces)",
         "read", _text_case({"long.txt": b"word " * 500_000})),
    Case("text", "binary-file", "binary file named .txt (NUL bytes)", "skipped",
         _text_case({"data.txt": bytes(range(256)) * 64})),
    Case("captions", "missing-columns", "CSV header without a caption column", "error",
         lambda folder: _captions_case("image,description", [])(folder)),
    Case("captions", "bad-quoting", "CSV row with an unclosed quote", "left out",
         _captions_case("image,caption", ['good0.png,"an unclosed quote'])),
    Case("captions", "wrong-field-count", "CSV row with an extra field", "left out",
         _captions_case("image,caption", ["good0.png,one,two"])),
    Case("captions", "missing-image", "row naming an image that does not exist", "left out",
         _captions_case("image,caption", ["nowhere.png,lost"])),
    Case("captions", "empty-caption", "row with an empty caption", "left out",
         _captions_case("image,caption", ["good0.png,"])),
    Case("captions", "invalid-json", "JSONL line that is not JSON", "left out",
         _captions_case("", ['{"image": "good0.png", "caption": '], suffix=".jsonl")),
    Case("captions", "corrupt-image", "row naming an undecodable image", "skipped",
         lambda folder: _corrupt_caption_image(folder)),
    Case("shards", "truncated-tar", "tar shard cut inside a member", "skipped",
         _shard_case(_truncated_tar)),
    Case("shards", "truncated-gzip", ".tar.gz shard cut at two thirds", "skipped",
         _shard_case(_gzip_cut, ".tar.gz")),
    Case("shards", "unpaired-members", "sample with a .cls but no image", "skipped",
         _shard_case(lambda: _tar(_good_members() + [("orphan.cls", b"1")]))),
    Case("shards", "path-traversal", "members named ../evil.png and /etc/evil.png", "skipped",
         _shard_case(lambda: _tar([("../evil.png", _good_png(9)), ("/etc/evil.png", _good_png(8)),
                                   *_good_members()]))),
    Case("shards", "corrupt-image", "sample whose .png is garbage", "skipped",
         _shard_case(lambda: _tar(_good_members() + [("bad.png", b"garbage")]))),
    Case("source", "empty-folder", "image folder with no images", "error", _empty_folder),
    Case("source", "all-corrupt", "image folder whose every image is corrupt", "error",
         _all_corrupt),
    Case("source", "all-binary", "text folder whose only file is binary", "error", _all_binary),
    Case("source", "all-corrupt-shard", "tar shard whose every image is garbage", "error",
         _shard_case(lambda: _tar([(f"s{i}.png", b"garbage") for i in range(GOOD)]))),
]  # fmt: skip


def _corrupt_caption_image(folder: Path) -> str:
    spec = _captions_case("image,caption", ["broken.jpg,a broken image"])(folder)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    return spec


def write_case(case: Case, root: str | os.PathLike[str]) -> str:
    """Create ``case`` under ``root/KIND-NAME`` and return its data spec."""
    return case.write(Path(root) / f"{case.kind}-{case.name}")


def run_case(case: Case, root: str | os.PathLike[str], image_size: int = 16) -> Outcome:
    """Write ``case`` and read every training sample of it as a training run would (faults
    skipped and recorded), returning what happened."""
    spec = write_case(case, root)
    try:
        source = build_source(spec, image_size=image_size, seed=0, shuffle_buffer=0)
        preflight(source.train)
    except DataError as err:
        return Outcome("error", 0, 0, str(err))
    counter = FaultCounter()
    set_fault_log(source.train, counter)
    train = source.train
    if isinstance(train, IterableDataset):
        samples = sum(1 for _ in train)
    else:  # a map-style dataset replaces a bad sample: count each index's own read
        samples = len(train)  # type: ignore[arg-type]
        for i in range(samples):
            train[i]
        samples -= len(counter.errors)
    faults = list(source.faults) + counter.errors
    if counter.errors:
        outcome = "skipped"
    elif source.faults:
        outcome = "left out"
    else:
        outcome = "read"
    return Outcome(outcome, samples, len(faults), faults[0] if faults else "")
