"""Frozen features of a method over a dataset, in the dataset's order."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, IterableDataset, default_collate

from selfsup.data.faults import FaultCounter
from selfsup.data.source import DataError
from selfsup.engine.logging import SHOW_PROGRESS, Progress
from selfsup.methods import Method

log = logging.getLogger("selfsup")


class TextCollate:
    """Tokenise ``{"text": str}`` samples into padded ``(B, L)`` batches for text encoders."""

    def __init__(self, tokenizer: Any, max_len: int) -> None:  # noqa: ANN401
        self.tokenizer = tokenizer
        self.max_len = max_len

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        enc = self.tokenizer(
            [s["text"] for s in samples],
            padding=True,
            truncation=True,
            max_length=self.max_len,
            return_tensors="pt",
            return_special_tokens_mask=True,
        )
        batch = {
            "input_ids": enc["input_ids"],
            "attention_mask": enc["attention_mask"],
            "special_tokens_mask": enc["special_tokens_mask"].bool(),
            "text": [s["text"] for s in samples],
        }
        if "label" in samples[0]:
            batch["label"] = torch.tensor([s["label"] for s in samples])
        return batch


SUBSET_SEED = 0


def _length(dataset: Dataset, limit: int | None) -> int | None:
    """Samples that :func:`extract` will read, None when a stream does not say."""
    try:
        n = len(dataset)  # type: ignore[arg-type]
    except TypeError:
        return limit
    return n if limit is None else min(n, limit)


def fixed_subset(dataset: Dataset, limit: int | None) -> Readable:
    """``limit`` samples of a map-style dataset drawn from all of it, in index order, without
    those that cannot be read (see :class:`Readable`).

    Datasets are often sorted by class (a folder lists its images class by class, ``polarity``
    its negative reviews first), so the first ``limit`` samples could be one class. The draw is
    without replacement and seeded (:data:`SUBSET_SEED`), so every protocol, run and cached
    feature file of a dataset uses the same samples. Streams are cut while iterating, in their
    own order.
    """
    if isinstance(dataset, IterableDataset):
        return Readable(dataset, None)
    size = len(dataset)  # type: ignore[arg-type]
    if limit is None or limit >= size:
        return Readable(dataset, range(size))
    generator = torch.Generator().manual_seed(SUBSET_SEED)
    index = torch.randperm(size, generator=generator)[:limit].sort().values
    return Readable(dataset, index.tolist())


class Readable(IterableDataset):
    """The samples ``indices`` of a map-style dataset (with None, all of a stream), in order,
    skipping those that cannot be read: evaluating a run skips the truncated JPEG its
    pretraining skipped, rather than stop at it. The skipped samples are logged, with the first
    error, once the reading ends. Read in the main process (``num_workers=0``).

    Raises:
        DataError: not one sample could be read.
    """

    def __init__(self, dataset: Dataset, indices: Sequence[int] | None) -> None:
        self.dataset, self.indices = dataset, indices
        self.skipped: list[str] = []

    def __len__(self) -> int:
        if self.indices is None:
            return len(self.dataset)  # type: ignore[arg-type] - a TypeError for most streams
        return len(self.indices)

    def __iter__(self) -> Iterator[Any]:
        self.skipped, read = [], 0
        samples = self._samples()
        try:
            for sample in samples:
                read += 1
                yield sample
        finally:
            samples.close()  # a stream's own fault sink back, its faults in ``skipped``
            if self.skipped:
                more = f" (the first of {len(self.skipped)})" if len(self.skipped) > 1 else ""
                log.warning("skipped an unreadable sample: %s%s", self.skipped[0], more)
                if read == 0:
                    raise DataError(f"none of the {len(self.skipped)} samples could be read; "
                                    f"the first: {self.skipped[0]}")  # fmt: skip

    def _samples(self) -> Iterator[Any]:
        if self.indices is not None:
            for index in self.indices:
                try:
                    yield self.dataset[index]
                except DataError as err:
                    self.skipped.append(str(err))
            return
        # a stream drops what it cannot read once it has a fault sink (its own, in training)
        saved = getattr(self.dataset, "faults", False)
        if saved is None:
            self.dataset.faults = counter = FaultCounter()  # type: ignore[attr-defined]
        try:
            yield from self.dataset  # type: ignore[misc]
        finally:
            if saved is None:
                self.dataset.faults = None  # type: ignore[attr-defined]
                self.skipped = counter.errors


def data_fingerprint(dataset: Dataset) -> dict[str, Any]:
    """What identifies a dataset's contents cheaply, for feature-cache keys: its length and, for
    file-backed datasets, a hash of every file's path, size and modification time and of the
    labels and captions (so added, changed or relabelled files are embedded again)."""
    out: dict[str, Any] = {}
    try:
        out["len"] = len(dataset)  # type: ignore[arg-type]
    except TypeError:
        pass
    files = next(
        (getattr(dataset, name) for name in ("paths", "images", "parts") if hasattr(dataset, name)),
        None,
    )
    if files is not None:
        digest = hashlib.sha1()
        for file in files:
            try:
                stat = os.stat(file)
                digest.update(f"{file}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
            except (OSError, TypeError, ValueError):
                digest.update(f"{file}|?\n".encode())
        for name in ("labels", "captions"):
            if getattr(dataset, name, None) is not None:
                digest.update(repr(list(getattr(dataset, name))).encode())
        out["files"] = digest.hexdigest()[:20]
    return out


@torch.no_grad()
def extract(
    fn: Callable[[dict[str, Any]], Tensor],
    dataset: Dataset,
    batch_size: int = 256,
    limit: int | None = None,
    collate_fn: Callable[[list[Any]], Any] | None = None,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
) -> tuple[Tensor, Tensor, list[str]]:
    """Apply ``fn`` to every batch of ``dataset`` in order.

    Returns:
        features (N, D) float32 on CPU, labels (N,) int64 (-1 where unlabelled) and the texts of
        the samples (empty when samples carry none).
    """
    subset = fixed_subset(dataset, limit)
    loader = DataLoader(
        subset, batch_size=batch_size, shuffle=False, collate_fn=collate_fn, num_workers=num_workers
    )
    count = _length(subset, limit)  # None: a stream of unknown length
    bar = Progress(
        math.ceil(count / batch_size) if count is not None else None,
        "batches",
        enabled=SHOW_PROGRESS.get() and (count is None or count > batch_size),
        label="embed",
    )
    feats, labels, texts = [], [], []
    seen = 0
    for step, batch in enumerate(loader, 1):
        if limit is not None and seen >= limit:
            break
        n = len(batch["label"]) if "label" in batch else len(next(iter(batch.values())))
        take = n if limit is None else min(n, limit - seen)
        on_device = {k: v.to(device) if isinstance(v, Tensor) else v for k, v in batch.items()}
        feats.append(fn(on_device)[:take].float().cpu())
        if "label" in batch:
            labels.append(torch.as_tensor(batch["label"])[:take])
        else:
            labels.append(torch.full((take,), -1))
        texts.extend(list(batch.get("text", []))[:take])
        seen += take
        if bar.enabled:
            bound = "" if _length(subset, None) is not None else "at most "  # a stream's limit
            of = f" of {bound}{count:,}" if count else ""
            bar.update(step, f"{seen:,}{of} samples")
    bar.close()
    if not feats:
        raise ValueError("the dataset yielded no samples")
    return torch.cat(feats), torch.cat(labels).long(), texts


def cached_extract(
    cache_dir: Path | None,
    key: dict[str, Any],
    fn: Callable[[dict[str, Any]], Tensor],
    dataset: Dataset,
    batch_size: int = 256,
    limit: int | None = None,
    collate_fn: Callable[[list[Any]], Any] | None = None,
    device: str | torch.device = "cpu",
) -> tuple[Tensor, Tensor]:
    """:func:`extract`'s features and labels, kept in ``cache_dir`` under a name made from
    ``key`` (what determines them: run step, data, split, limit, pooling, ...), so that the
    protocols of one checkpoint embed a dataset once. Files are safetensors written atomically;
    an unreadable one is recomputed. ``cache_dir=None`` computes without caching."""
    if cache_dir is None:
        feats, labels, _ = extract(fn, dataset, batch_size, limit, collate_fn, device)
        return feats, labels
    name = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    path = cache_dir / f"{name}.safetensors"
    if path.is_file():
        try:
            saved = load_file(str(path))
            return saved["features"], saved["labels"]
        except Exception:  # noqa: BLE001 - a torn or foreign file: embed again
            path.unlink(missing_ok=True)
    feats, labels, _ = extract(fn, dataset, batch_size, limit, collate_fn, device)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    save_file({"features": feats.contiguous(), "labels": labels.contiguous()}, str(tmp),
              metadata={"key": json.dumps(key, sort_keys=True)})  # fmt: skip
    os.replace(tmp, path)
    return feats, labels


def collate_for(method: Method, tokenizer: Any, seq_len: int) -> Callable[[list[Any]], Any] | None:  # noqa: ANN401
    """The collate function a method's ``embed`` needs for raw samples."""
    if method.kind == "text":
        return TextCollate(tokenizer, seq_len)
    if method.kind == "pair":
        return PairCollate(tokenizer, seq_len)
    return None


class PairCollate:
    """Image-caption samples batched with their tokenised captions; samples without captions (a
    labelled image dataset that a pair run's image tower embeds) batched as they are."""

    def __init__(self, tokenizer: Any, max_len: int) -> None:  # noqa: ANN401
        from selfsup.data.packing import CaptionCollate

        self.captions = CaptionCollate(tokenizer, max_len)

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        if "text" in samples[0]:
            return self.captions(samples)
        return default_collate(samples)
