"""Decode once: the training images of a file-backed source, decoded a single time into memory.

A source that reads image files (``folder:``, ``shards:``, ``captions:``) decodes every image again
in every epoch, in DataLoader workers that compete with the model for the same CPU cores. When
the decoded images fit in memory (``decode_cache``), they are decoded once, before training, by a
few workers, into one uint8 tensor ``(N, 3, S, S)``; training then reads batches from it with no
worker at all, and the views are drawn batched on the device as always.

CIFAR-10 at 32 px takes 150 MiB; ImageNet at 224 px would take 190 GiB, so ``decode_cache=auto``
caches only when the decoded images take at most :data:`AUTO_LIMIT_BYTES`.

The cache is a map-style dataset whatever the source: a streamed source (tar shards) becomes
shuffled per epoch by a full permutation instead of a shuffle buffer. Samples that carry their
stream ``index`` (uncompressed shards) are stored in that order, whatever the number of decoding
workers, so a run resumed with another ``num_workers`` reads the same samples; the others
(compressed shards) in the order they were read, which depends on the worker count.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from selfsup.data.device_decode import EncodedJPEG, decode_on_device
from selfsup.data.source import DataError

__all__ = ["AUTO_LIMIT_BYTES", "DecodedImages", "cacheable", "decoded_cache"]

log = logging.getLogger("selfsup")

AUTO_LIMIT_BYTES = 4 * 2**30


class DecodedImages(Dataset):
    """Map-style samples ``{"image": uint8 (3, S, S), "label": int, "index": int}`` (plus
    ``"text"`` for image-caption pairs) served from decoded tensors in memory."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, texts: list[str] | None) -> None:
        self.images = images
        self.labels = labels
        self.texts = texts

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample: dict[str, Any] = {
            "image": self.images[index],
            "label": int(self.labels[index]),
            "index": index,
        }
        if self.texts is not None:
            sample["text"] = self.texts[index]
        return sample

    def __getitems__(self, indices: list[int]) -> list[dict[str, Any]]:
        # One gather for the whole batch instead of one tensor view per sample.
        images = self.images[torch.as_tensor(indices)]
        labels = self.labels[torch.as_tensor(indices)].tolist()
        return [
            {"image": images[i], "label": labels[i], "index": index}
            | ({"text": self.texts[index]} if self.texts is not None else {})
            for i, index in enumerate(indices)
        ]


def cacheable(dataset: Any) -> bool:  # noqa: ANN401
    """Whether ``dataset`` decodes image files (array-backed built-ins need no cache)."""
    return bool(getattr(dataset, "decodes_image_files", False))


def _collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    images = [s["image"] for s in samples]
    encoded = any(isinstance(image, EncodedJPEG) for image in images)
    out: dict[str, Any] = {
        "image": images if encoded else torch.stack(images),  # a list: JPEGs left to the device
        "label": torch.tensor([s["label"] for s in samples], dtype=torch.int64),
    }
    if "text" in samples[0]:
        out["text"] = [s["text"] for s in samples]
    if "index" in samples[0]:
        out["index"] = torch.tensor([s["index"] for s in samples], dtype=torch.int64)
    return out


def _decode_batch(
    batch: dict[str, Any],
    size: int,
    device: torch.device,
    faults: Any,  # noqa: ANN401
) -> dict[str, Any]:
    """A collated batch whose JPEGs are decoded on ``device``; a sample that fails is recorded
    in ``faults`` and dropped, or without a fault log, raises."""
    images, kept, errors = decode_on_device(batch["image"], size, device)
    if errors and faults is None:
        raise DataError(errors[0])
    for error in errors:
        faults.record(error)
    keep = torch.as_tensor(kept, dtype=torch.int64)
    out = {"image": images.cpu(), "label": batch["label"][keep]}
    if "index" in batch:
        out["index"] = batch["index"][keep]
    if "text" in batch:
        out["text"] = [batch["text"][i] for i in kept]
    return out


def _decode_all(
    dataset: Dataset,
    num_samples: int | None,
    image_size: int,
    workers: int,
    device: torch.device | None,
) -> tuple[torch.Tensor, torch.Tensor, list[str] | None]:
    """``(images (N, 3, S, S), labels (N,), texts)`` read from ``dataset``: at their ``index``
    when every sample has one below ``num_samples`` (slots of unreadable samples then removed),
    else in reading order."""
    loader = DataLoader(dataset, batch_size=256, num_workers=workers, collate_fn=_collate)
    capacity = num_samples or 1024
    images = torch.empty((capacity, 3, image_size, image_size), dtype=torch.uint8)
    labels = torch.full((capacity,), -1, dtype=torch.int64)
    texts: dict[int, str] = {}  # captions by slot, for image-caption pairs
    filled = torch.zeros(capacity, dtype=torch.bool)
    by_index: bool | None = None  # decided by the first batch
    count = 0
    for batch in loader:
        if isinstance(batch["image"], list):
            batch = _decode_batch(batch, image_size, device, getattr(dataset, "faults", None))
        n = len(batch["image"])
        index = batch.get("index")
        if by_index is None:
            by_index = num_samples is not None and index is not None and bool((index >= 0).all())
        if by_index:
            if n and (bool((index < 0).any()) or int(index.max()) >= capacity):
                raise DataError(f"sample index out of range 0..{capacity - 1}: {index.tolist()}")
            if bool(filled[index].any()):
                raise DataError(f"two samples share the index {index[filled[index]].tolist()}")
            slots = index
        else:
            if count + n > len(images):  # a stream of unknown length: grow geometrically
                size = max(2 * len(images), count + n)
                images = _grown(images, size, count)
                labels = torch.cat([labels, labels.new_full((size - len(labels),), -1)])
                filled = torch.cat([filled, filled.new_zeros(size - len(filled))])
            slots = torch.arange(count, count + n)
        images[slots] = batch["image"]
        labels[slots] = batch["label"]
        filled[slots] = True
        if "text" in batch:
            texts.update(zip(slots.tolist(), batch["text"], strict=True))
        count += n
    keep = filled.nonzero().squeeze(1)
    if len(keep) < len(images):  # unread slots: faults (by index) or spare capacity
        images, labels = images[keep], labels[keep]
    return images, labels, [texts[i] for i in keep.tolist()] if texts else None


def _grown(images: torch.Tensor, size: int, count: int) -> torch.Tensor:
    grown = torch.empty((size, *images.shape[1:]), dtype=torch.uint8)
    grown[:count] = images[:count]
    return grown


def decoded_cache(
    dataset: Dataset,
    num_samples: int | None,
    image_size: int,
    workers: int = 2,
    device: torch.device | None = None,
) -> DecodedImages:
    """Decode every sample of ``dataset`` once, into memory.

    Args:
        dataset: A file-backed image (or image-caption) dataset, map-style or streamed; with a
            fault log set, unreadable samples are skipped and recorded as while training.
        num_samples: Samples it holds when known (sizes the tensor up front).
        image_size: Side S of its images.
        workers: Decoding worker processes.
        device: Where JPEGs decode (:mod:`selfsup.data.device_decode`); ``None``: in the
            workers, with PIL.

    Raises:
        DataError: The dataset yields no sample.
    """
    start = time.perf_counter()
    defer = device is not None and hasattr(dataset, "defer_jpeg")
    if defer:
        dataset.defer_jpeg = True  # the workers read JPEGs, the device decodes them
    try:
        images, labels, texts = _decode_all(dataset, num_samples, image_size, workers, device)
    finally:
        if defer:
            dataset.defer_jpeg = False
    if len(images) == 0:
        raise DataError("the data holds no readable image to cache")
    log.info(
        "decoded %d images once into memory (%.0f MiB) in %.1f s%s",
        len(images), images.numel() / 2**20, time.perf_counter() - start,
        f", JPEGs on {device}" if device is not None else "",
    )  # fmt: skip
    return DecodedImages(images, labels, texts)
