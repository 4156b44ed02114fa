"""``captions:FILE`` — image paths with captions, from a CSV or JSONL file (kind ``"pair"``).

- CSV (``.csv``, or ``.tsv`` tab-separated, where quotes are plain characters as in CC3M's
  files): a header row is required, with an image column named
  ``image``, ``filepath`` or ``path`` and a caption column named ``caption`` or ``text``
  (first match wins, case-insensitive). An optional ``label`` column holds integer labels.
- JSONL (any other suffix, typically ``.jsonl``): one JSON object per line with the same keys;
  blank lines are skipped.

Image paths are relative to the caption file's folder, or absolute. Rows that cannot be used (broken
quoting, a wrong number of fields, an empty cell, a missing or empty image) are left out when the
source is built and listed in ``DataSource.faults``; a file without a usable row is an error.
Decoding happens per sample (while training, an undecodable image is skipped and counted). Test split: rows 9, 19, 29, ... (every 10th, counting data rows
from 0, broken ones included) are held out; the train split is the rest.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from torch.utils.data import Dataset

from selfsup.data.device_decode import read_image
from selfsup.data.faults import FaultLog, read_or_replace
from selfsup.data.registry import register_dataset, require_arg
from selfsup.data.source import DataError, DataSource

__all__ = [
    "CAPTION_KEYS",
    "HOLDOUT_EVERY",
    "IMAGE_KEYS",
    "CaptionDataset",
    "CaptionRows",
    "read_caption_file",
]

IMAGE_KEYS = ("image", "filepath", "path")
CAPTION_KEYS = ("caption", "text")
HOLDOUT_EVERY = 10


def _pick(names: list[str], wanted: tuple[str, ...]) -> str | None:
    lowered = {name.strip().lower(): name for name in names}
    return next((lowered[w] for w in wanted if w in lowered), None)


_MAX_BAD_RECORDS = 1000  # quoting errors tolerated in one CSV file before it is refused


def _csv_records(
    lines: list[str], delimiter: str, quoting: int = csv.QUOTE_MINIMAL
) -> Iterator[tuple[int, list[str] | str]]:
    """``(line number, fields)`` of each CSV record, or ``(line number, error)`` for a record
    whose quoting is broken; parsing then resumes on the line after that record's first line,
    so one stray quote costs one row, not the rest of the file."""
    first = 0  # index into ``lines`` where parsing (re)starts
    while first < len(lines):
        reader = csv.reader(iter(lines[first:]), delimiter=delimiter, quoting=quoting, strict=True)
        consumed = 0  # lines of lines[first:] read by complete records
        try:
            for fields in reader:
                yield first + consumed + 1, fields
                consumed = reader.line_num
            return
        except csv.Error as exc:
            yield first + consumed + 1, f"bad CSV quoting ({exc})"
            first += consumed + 1


def _rows_csv(path: str) -> tuple[list[tuple[int, dict[str, Any]]], list[str]]:
    tsv = path.lower().endswith(".tsv")
    with open(path, encoding="utf-8-sig", newline="") as f:
        lines = f.readlines()  # at \n, \r\n or \r only: a caption may hold U+2028 or U+0085
    records = _csv_records(
        lines, "\t" if tsv else ",", csv.QUOTE_NONE if tsv else csv.QUOTE_MINIMAL
    )
    header: list[str] = []
    for _, fields in records:
        if isinstance(fields, str):
            raise DataError(f"caption file {path}: the header row has {fields}")
        if fields:
            header = fields
            break
    image_key, caption_key = _pick(header, IMAGE_KEYS), _pick(header, CAPTION_KEYS)
    if image_key is None or caption_key is None:
        raise DataError(
            f"caption file {path}: header must name an image column ({'/'.join(IMAGE_KEYS)}) "
            f"and a caption column ({'/'.join(CAPTION_KEYS)}); found columns {header}"
        )
    label_key = _pick(header, ("label",))
    column = {name: i for i, name in enumerate(header)}
    rows, faults = [], []
    for line_num, fields in records:
        where = f"caption file {path}, line {line_num}"
        if not isinstance(fields, str) and not any(f.strip() for f in fields):
            continue  # a blank line
        position = len(rows) + len(faults)  # data row number, counting rows left out
        if isinstance(fields, str):
            faults.append(f"{where}: {fields}")
            if len(faults) >= _MAX_BAD_RECORDS:
                raise DataError(f"caption file {path}: {len(faults)} rows with broken quoting")
            continue
        if len(fields) != len(header):
            faults.append(f"{where}: {len(fields)} fields where the header has {len(header)}")
            continue
        rows.append(
            (
                line_num,
                {
                    "position": position,
                    "image": fields[column[image_key]],
                    "caption": fields[column[caption_key]],
                    "label": fields[column[label_key]] if label_key else None,
                },
            )
        )
    return rows, faults


def _rows_jsonl(path: str) -> tuple[list[tuple[int, dict[str, Any]]], list[str]]:
    rows, faults = [], []
    with open(path, encoding="utf-8-sig") as f:
        for line_num, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"caption file {path}, line {line_num}"
            position = len(rows) + len(faults)  # data row number, counting rows left out
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                faults.append(f"{where}: invalid JSON ({exc})")
                continue
            if not isinstance(obj, dict):
                faults.append(f"{where}: expected a JSON object")
                continue
            image_key, caption_key = _pick(list(obj), IMAGE_KEYS), _pick(list(obj), CAPTION_KEYS)
            if image_key is None or caption_key is None:
                faults.append(
                    f"{where}: object must have an image key ({'/'.join(IMAGE_KEYS)}) and a "
                    f"caption key ({'/'.join(CAPTION_KEYS)}); found keys {sorted(obj)}"
                )
                continue
            label_key = _pick(list(obj), ("label",))
            rows.append(
                (
                    line_num,
                    {
                        "position": position,
                        "image": obj[image_key],
                        "caption": obj[caption_key],
                        "label": obj[label_key] if label_key else None,
                    },
                )
            )
    return rows, faults


@dataclass
class CaptionRows:
    """The usable rows of a caption file, and a message for each row left out."""

    images: list[str] = field(default_factory=list)
    captions: list[str] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)  # data row numbers, from 0
    faults: list[str] = field(default_factory=list)


def read_caption_file(path: str) -> CaptionRows:
    """Read and validate a caption file.

    A row is left out, with a message in ``faults`` naming the file and line, when its quoting
    is broken, its number of fields differs from the header's, a JSON line is invalid or lacks
    the keys, the image path or caption is empty, the label is not an integer, or the image is
    missing or empty.

    Args:
        path: CSV/TSV or JSONL file.

    Returns:
        The usable rows; image paths are resolved against the file's folder; labels are ``-1``
        without a ``label`` column.

    Raises:
        DataError: A missing or non-UTF-8 file, a CSV header without the columns, or no usable
            row; the message names the file (and a left-out row).
    """
    if not os.path.exists(path):
        raise DataError(f"caption file {path!r} does not exist")
    if not os.path.isfile(path):
        raise DataError(f"caption file {path!r} is not a file")
    is_csv = path.lower().endswith((".csv", ".tsv"))
    try:
        rows, faults = _rows_csv(path) if is_csv else _rows_jsonl(path)
    except UnicodeDecodeError as exc:
        raise DataError(f"caption file {path} is not UTF-8 text ({exc})") from exc
    folder = os.path.dirname(os.path.abspath(path))
    out = CaptionRows(faults=faults)
    for line_num, row in rows:
        where = f"caption file {path}, line {line_num}"
        image, caption, label = row["image"], row["caption"], row["label"]
        if not isinstance(image, str) or not image.strip():
            out.faults.append(f"{where}: empty image path")
            continue
        if not isinstance(caption, str) or not caption.strip():
            out.faults.append(f"{where}: empty caption")
            continue
        image_path = os.path.join(folder, os.path.expanduser(image.strip()))
        if not os.path.isfile(image_path):
            out.faults.append(f"{where}: image {image_path} does not exist")
            continue
        if os.path.getsize(image_path) == 0:
            out.faults.append(f"{where}: image {image_path} is empty (0 bytes)")
            continue
        if label is None or (isinstance(label, str) and not label.strip()):
            label = -1
        try:
            label = int(label)
        except (TypeError, ValueError):
            out.faults.append(f"{where}: label must be an integer, got {label!r}")
            continue
        out.images.append(image_path)
        out.captions.append(caption.strip())
        out.labels.append(label)
        out.positions.append(row["position"])
    if not out.images:
        first = f"; the first problem: {out.faults[0]}" if out.faults else ""
        raise DataError(f"caption file {path} has no usable data rows{first}")
    return out


class CaptionDataset(Dataset):
    """Map-style image-caption pairs.

    Args:
        images: Image paths.
        captions: One caption per image.
        labels: One label per image (``-1`` = none).
        image_size: Side S of the decoded images.

    Returns samples ``{"image": uint8 (3, S, S), "text": str, "label": int}``.
    """

    decodes_image_files = True  # worth a decoded cache (selfsup.data.cache)
    defer_jpeg = False  # JPEGs left encoded, for the device (selfsup.data.device_decode)

    def __init__(
        self, images: list[str], captions: list[str], labels: list[int], image_size: int
    ) -> None:
        if not len(images) == len(captions) == len(labels):
            raise ValueError("images, captions and labels must have equal lengths")
        self.images = images
        self.captions = captions
        self.labels = labels
        self.image_size = image_size
        self.faults: FaultLog | None = None  # see selfsup.data.faults

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return read_or_replace(self.faults, index, len(self.images), self._read)

    def _read(self, index: int) -> dict[str, Any]:
        return {
            "image": read_image(self.images[index], self.image_size, defer_jpeg=self.defer_jpeg),
            "text": self.captions[index],
            "label": self.labels[index],
        }


@register_dataset(
    "captions",
    usage="captions:FILE",
    description="image-caption pairs from a CSV (image,caption header) or JSONL file",
)
def build_captions(
    arg: str | None, *, image_size: int, seed: int, shuffle_buffer: int
) -> DataSource:
    """Build ``captions:FILE`` (see the module docstring)."""
    path = require_arg("captions", arg, "FILE")
    rows = read_caption_file(os.path.expanduser(path))
    images, captions, labels = rows.images, rows.captions, rows.labels
    # Held out by data row number, so leaving out a broken row does not move the split.
    held_out = [p % HOLDOUT_EVERY == HOLDOUT_EVERY - 1 for p in rows.positions]
    train_rows = [i for i, held in enumerate(held_out) if not held]
    test_rows = [i for i, held in enumerate(held_out) if held]

    def subset(rows: list[int]) -> CaptionDataset:
        return CaptionDataset(
            [images[i] for i in rows],
            [captions[i] for i in rows],
            [labels[i] for i in rows],
            image_size,
        )

    return DataSource(
        name=f"captions:{path}",
        kind="pair",
        train=subset(train_rows),
        test=subset(test_rows) if test_rows else None,
        classes=None,
        num_samples=len(train_rows),
        description=f"image-caption pairs from {path} ({len(images)} rows)",
        faults=rows.faults,
    )
