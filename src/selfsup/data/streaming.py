"""Streamed (iterable) datasets: split work across ranks and workers, shuffle reproducibly.

A stream reads an ordered list of *parts* (tar shards, text files). Each consumer — one
DataLoader worker on one distributed rank — reads a disjoint subset:

- with at least as many parts as consumers, consumer ``c`` of ``n`` reads parts ``c, c+n, ...``;
- with fewer parts (say one file and 4 workers), every consumer reads every part and keeps the
  samples whose running index ``i`` has ``i % n == c``, so no worker sits idle and every sample is
  still seen exactly once.

On the train split the part order is shuffled per epoch with an RNG seeded by ``(seed, epoch)``
(identical on every consumer, so the partition stays disjoint), and samples pass through a
shuffle buffer seeded by ``(seed, epoch, rank, worker)``. Call ``set_epoch(epoch)`` before each
epoch: the order is then a deterministic function of (seed, epoch, world size, worker count).
DataLoader copies the dataset into its workers when an iterator starts, so ``set_epoch`` must be
called before ``iter(loader)``; with ``persistent_workers=True`` the workers keep the old epoch.

Faults: with ``faults`` set to a :class:`~selfsup.data.faults.FaultLog`, a record that
:meth:`decode` cannot decode is recorded and skipped, and a part that fails while being read (a
truncated tar shard, a binary "text" file) is recorded and the rest of it skipped; with
``faults=None`` (the default) both raise :class:`DataError`.

With shard-level partitioning, ranks can receive different numbers of samples; a distributed
loop should stop on a step budget rather than on exhaustion of the stream.

Resampling (``resample = True``, train split only): instead of splitting the parts, every consumer
draws whole parts at random with replacement, from an RNG seeded by ``(seed, epoch, rank,
worker)``, and never runs out. No consumer waits for a share, however few the parts (one shard
and 16 workers), and no process ends its epoch early; the price is that a sample may come twice
before another comes once. The stream is endless: the reader decides where an "epoch" ends
(:class:`~selfsup.engine.loader.EpochLoader` cuts it at the nominal number of batches).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from typing import Any, Generic, TypeVar

import numpy as np
import torch.distributed as dist
from torch.utils.data import IterableDataset, get_worker_info

from selfsup.data.source import DataError

__all__ = ["PartitionedStream", "consumer_index", "seeded_rng", "shuffle_buffer"]

Raw = TypeVar("Raw")


def seeded_rng(*key: int) -> random.Random:
    """A ``random.Random`` whose state is a stable function of the integers in ``key``."""
    state = np.random.SeedSequence([k & 0xFFFFFFFF for k in key]).generate_state(2)
    return random.Random(int(state[0]) << 32 | int(state[1]))


def process_placement() -> tuple[int, int] | None:
    """``(rank, world_size)`` of this process in its process group; None outside one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return None


def consumer_index(placement: tuple[int, int] | None = None) -> tuple[int, int, int, int]:
    """Where the calling code runs; ``placement``: the process's ``(rank, world_size)`` as a
    dataset recorded it, for a DataLoader worker that was spawned rather than forked (it has no
    process group).

    Returns:
        ``(rank, world_size, worker, num_workers)``; ``(0, 1, 0, 1)`` in a plain process.
    """
    rank, world = process_placement() or placement or (0, 1)
    info = get_worker_info()
    worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
    return rank, world, worker, num_workers


def shuffle_buffer(items: Iterable[Raw], size: int, rng: random.Random) -> Iterator[Raw]:
    """Approximately shuffle a stream with a buffer of ``size`` items.

    Args:
        items: The stream.
        size: Buffer capacity; ``<= 1`` passes the stream through unchanged.
        rng: Source of randomness.

    Yields:
        Every item of ``items`` exactly once.
    """
    if size <= 1:
        yield from items
        return
    buffer: list[Raw] = []
    for item in items:
        if len(buffer) < size:
            buffer.append(item)
            continue
        j = rng.randrange(size)
        buffer[j], item = item, buffer[j]
        yield item
    rng.shuffle(buffer)
    yield from buffer


class PartitionedStream(IterableDataset, Generic[Raw]):
    """Base class: stream raw records from ``parts``, partitioned and optionally shuffled.

    Subclasses implement :meth:`read_part` (cheap, yields raw records such as encoded bytes) and
    :meth:`decode` (the expensive step, run only on records this consumer keeps, after the
    shuffle buffer so the buffer holds compact raw records).

    Args:
        parts: Ordered part identifiers (paths).
        shuffle: Shuffle part order and samples (train split); ``False`` streams in order.
        buffer_size: Shuffle buffer capacity when ``shuffle`` is true.
        seed: Base seed of the shuffling.
    """

    def __init__(self, parts: list[str], *, shuffle: bool, buffer_size: int, seed: int) -> None:
        super().__init__()
        self.parts = list(parts)
        self.shuffle = shuffle
        self.buffer_size = buffer_size
        self.seed = seed
        self.epoch = 0
        self.resample = False  # draw parts with replacement, endlessly (see the module docstring)
        self.faults: Any = None  # a FaultLog while training (see selfsup.data.faults)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose shuffled order the next iteration produces."""
        self.epoch = int(epoch)

    def __getstate__(self) -> dict[str, Any]:
        # A DataLoader worker started by spawn or forkserver (Python 3.14's default on Linux)
        # receives the dataset pickled, without the process group: it carries its process's place.
        state = self.__dict__.copy()
        state["placement"] = process_placement() or state.get("placement")
        return state

    def read_part(self, part: str) -> Iterator[Raw]:
        """Yield the raw records of one part, in file order."""
        raise NotImplementedError

    def decode(self, raw: Raw) -> dict[str, Any]:
        """Turn one raw record into a sample dict."""
        raise NotImplementedError

    def records(self, part: str) -> Iterator[Raw]:
        """The records of ``part``, a part that fails recorded and cut short as in training (for
        readers of the whole dataset: tokenizer training, vocabulary counts)."""
        return self._read(part, report=True)

    def _read(self, part: str, report: bool) -> Iterator[Raw]:
        """The records of ``part``; with a fault log, a part that fails is recorded (when
        ``report``: consumers that all read the same part record it once) and cut short."""
        try:
            yield from self.read_part(part)
        except DataError as err:
            if self.faults is None:
                raise
            if report:
                self.faults.record(f"{err}; the rest of it is skipped")

    def _resampled(self, rng: random.Random) -> Iterator[Raw]:
        """Whole parts drawn with replacement, forever (a consumer reports its own faults)."""
        if not self.parts:
            return
        while True:
            yield from self._read(rng.choice(self.parts), report=True)

    def _records(self, rank: int, world: int, worker: int, workers: int) -> Iterator[Raw]:
        """This consumer's records: whole parts when there are as many as consumers; else, when
        the parts divide evenly between the processes, each process's whole parts dealt record by
        record among its workers; else every part's records dealt among all consumers (equal
        shares, each part read by every consumer)."""
        order = list(self.parts)
        if self.shuffle:
            seeded_rng(self.seed, self.epoch).shuffle(order)
        consumer, consumers = rank * workers + worker, world * workers
        if len(order) >= consumers:
            for part in order[consumer::consumers]:
                yield from self._read(part, report=True)
            return
        if len(order) % world == 0:  # a part is read by one process's workers only
            order, consumer, consumers = order[rank::world], worker, workers
        index = 0
        for part in order:
            for raw in self._read(part, report=consumer == 0):
                if index % consumers == consumer:
                    yield raw
                index += 1

    def __iter__(self) -> Iterator[dict[str, Any]]:
        rank, world, worker, num_workers = consumer_index(getattr(self, "placement", None))
        if self.resample and self.shuffle:
            records = self._resampled(seeded_rng(self.seed, self.epoch, rank, worker, 1))
        else:
            records = self._records(rank, world, worker, num_workers)
        if self.shuffle:
            rng = seeded_rng(self.seed, self.epoch, rank, worker)
            records = shuffle_buffer(records, self.buffer_size, rng)
        for raw in records:
            try:
                sample = self.decode(raw)
            except DataError as err:
                if self.faults is None:
                    raise
                self.faults.record(str(err))
                continue
            yield sample
