"""``captions:FILE`` — image paths with captions, from a CSV or JSONL file (kind ``"pair"``).

- CSV (``.csv``, or ``.tsv`` tab-separated): a header row is required, with an image column named
  ``image``, ``filepath`` or ``path`` and a caption column named ``caption`` or ``text``
  (first match wins, case-insensitive). An optional ``label`` column holds integer labels.
- JSONL (any other suffix, typically ``.jsonl``): one JSON object per line with the same keys;
  blank lines are skipped.

Image paths are relative to the caption file's folder, or absolute. Every referenced image must
exist and be non-empty when the source is built; decoding happens per sample. Test split: rows 9, 19, 29, ... (every 10th, counting data rows
from 0) are held out; the train split is the rest.
"""

from __future__ import annotations

import csv
import json
import os
from typing import Any

from torch.utils.data import Dataset

from selfsup.data.decode import decode_image
from selfsup.data.registry import register_dataset, require_arg
from selfsup.data.source import DataError, DataSource

__all__ = ["CAPTION_KEYS", "HOLDOUT_EVERY", "IMAGE_KEYS", "CaptionDataset", "read_caption_file"]

IMAGE_KEYS = ("image", "filepath", "path")
CAPTION_KEYS = ("caption", "text")
HOLDOUT_EVERY = 10


def _pick(names: list[str], wanted: tuple[str, ...]) -> str | None:
    lowered = {name.strip().lower(): name for name in names}
    return next((lowered[w] for w in wanted if w in lowered), None)


def _rows_csv(path: str) -> list[tuple[int, dict[str, Any]]]:
    delimiter = "\t" if path.lower().endswith(".tsv") else ","
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f, delimiter=delimiter)
        header = reader.fieldnames or []
        image_key, caption_key = _pick(header, IMAGE_KEYS), _pick(header, CAPTION_KEYS)
        if image_key is None or caption_key is None:
            raise DataError(
                f"caption file {path}: header must name an image column ({'/'.join(IMAGE_KEYS)}) "
                f"and a caption column ({'/'.join(CAPTION_KEYS)}); found columns {header}"
            )
        label_key = _pick(header, ("label",))
        rows = []
        for row in reader:
            # reader.line_num is the file line just read, so messages point at the right line.
            rows.append(
                (
                    reader.line_num,
                    {
                        "image": row.get(image_key),
                        "caption": row.get(caption_key),
                        "label": row.get(label_key) if label_key else None,
                    },
                )
            )
    return rows


def _rows_jsonl(path: str) -> list[tuple[int, dict[str, Any]]]:
    rows = []
    with open(path, encoding="utf-8-sig") as f:
        for line_num, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(
                    f"caption file {path}, line {line_num}: invalid JSON ({exc})"
                ) from exc
            if not isinstance(obj, dict):
                raise DataError(f"caption file {path}, line {line_num}: expected a JSON object")
            image_key, caption_key = _pick(list(obj), IMAGE_KEYS), _pick(list(obj), CAPTION_KEYS)
            if image_key is None or caption_key is None:
                raise DataError(
                    f"caption file {path}, line {line_num}: object must have an image key "
                    f"({'/'.join(IMAGE_KEYS)}) and a caption key ({'/'.join(CAPTION_KEYS)}); "
                    f"found keys {sorted(obj)}"
                )
            label_key = _pick(list(obj), ("label",))
            rows.append(
                (
                    line_num,
                    {
                        "image": obj[image_key],
                        "caption": obj[caption_key],
                        "label": obj[label_key] if label_key else None,
                    },
                )
            )
    return rows


def read_caption_file(path: str) -> tuple[list[str], list[str], list[int]]:
    """Read and validate a caption file.

    Args:
        path: CSV/TSV or JSONL file.

    Returns:
        ``(image_paths, captions, labels)``, one entry per data row; paths are resolved against
        the file's folder; labels are ``-1`` without a ``label`` column.

    Raises:
        DataError: Missing file, missing columns/keys, empty cells, a non-integer label, or a
            referenced image that is missing or empty; the message names the file and line.
    """
    if not os.path.exists(path):
        raise DataError(f"caption file {path!r} does not exist")
    if not os.path.isfile(path):
        raise DataError(f"caption file {path!r} is not a file")
    is_csv = path.lower().endswith((".csv", ".tsv"))
    try:
        rows = _rows_csv(path) if is_csv else _rows_jsonl(path)
    except UnicodeDecodeError as exc:
        raise DataError(f"caption file {path} is not UTF-8 text ({exc})") from exc
    if not rows:
        raise DataError(f"caption file {path} has no data rows")
    folder = os.path.dirname(os.path.abspath(path))
    images, captions, labels = [], [], []
    bad: list[str] = []  # missing or empty images, reported together
    for line_num, row in rows:
        where = f"caption file {path}, line {line_num}"
        image, caption, label = row["image"], row["caption"], row["label"]
        if not isinstance(image, str) or not image.strip():
            raise DataError(f"{where}: empty image path")
        if not isinstance(caption, str) or not caption.strip():
            raise DataError(f"{where}: empty caption")
        image_path = os.path.join(folder, os.path.expanduser(image.strip()))
        if not os.path.isfile(image_path):
            bad.append(f"{where}: image {image_path} does not exist")
        elif os.path.getsize(image_path) == 0:
            bad.append(f"{where}: image {image_path} is empty (0 bytes)")
        if label is None or (isinstance(label, str) and not label.strip()):
            label = -1
        try:
            label = int(label)
        except (TypeError, ValueError) as exc:
            raise DataError(f"{where}: label must be an integer, got {label!r}") from exc
        images.append(image_path)
        captions.append(caption.strip())
        labels.append(label)
    if bad:
        more = f" (and {len(bad) - 1} more bad images)" if len(bad) > 1 else ""
        raise DataError(bad[0] + more)
    return images, captions, labels


class CaptionDataset(Dataset):
    """Map-style image-caption pairs.

    Args:
        images: Image paths.
        captions: One caption per image.
        labels: One label per image (``-1`` = none).
        image_size: Side S of the decoded images.

    Returns samples ``{"image": uint8 (3, S, S), "text": str, "label": int}``.
    """

    def __init__(
        self, images: list[str], captions: list[str], labels: list[int], image_size: int
    ) -> None:
        if not len(images) == len(captions) == len(labels):
            raise ValueError("images, captions and labels must have equal lengths")
        self.images = images
        self.captions = captions
        self.labels = labels
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {
            "image": decode_image(self.images[index], self.image_size),
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
    images, captions, labels = read_caption_file(os.path.expanduser(path))
    train_rows = [i for i in range(len(images)) if i % HOLDOUT_EVERY != HOLDOUT_EVERY - 1]
    test_rows = [i for i in range(len(images)) if i % HOLDOUT_EVERY == HOLDOUT_EVERY - 1]

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
    )
