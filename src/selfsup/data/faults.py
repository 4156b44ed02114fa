"""Per-sample faults: skip what cannot be read, count it, and stop when there is too much of it.

A long run should not die at hour ten on one truncated JPEG, nor train for ten hours on a folder
that is half garbage. So, while training, a sample that cannot be read is skipped and recorded:

- A dataset that supports skipping has a ``faults`` attribute, ``None`` by default (every fault
  raises :class:`DataError`; evaluation reads past those, dropping the sample, see
  :class:`selfsup.evaluate.features.Readable`). The training pipeline sets it to a
  :class:`FaultLog`, a JSON-lines file that any process (DataLoader workers, distributed ranks)
  appends one line to per fault: ``{"error": "cannot decode image /data/x.jpg: ...", "pid": 12}``.
- Map-style datasets replace an unreadable sample ``i`` by the next readable one of a fixed
  sequence (``i + s``, ``i + 2s``, ... modulo the size, ``s`` a large prime), so batches keep
  their size and a resumed run sees the same samples (:func:`read_or_replace`). Streams drop the record and read on.
- In the training process, a :class:`FaultMonitor` reads the new lines of its log every step,
  logs the first few, and raises :class:`DataError` with examples once the faults exceed
  ``max_bad_fraction`` of the samples read (counting from at least :data:`MIN_DENOMINATOR`
  samples, so that one bad file among the first ten does not stop a run).

Faults found while a source is built (an empty image file, a caption row naming a missing image)
are dropped there and listed in ``DataSource.faults``; the pipeline writes them to the same log.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from torch.utils.data import IterableDataset

from selfsup.data.source import DataError

__all__ = [
    "MAX_REPLACEMENTS",
    "MIN_DENOMINATOR",
    "FaultCounter",
    "FaultLog",
    "FaultMonitor",
    "TooManyFaultsError",
    "preflight",
    "read_faults",
    "read_or_replace",
    "set_fault_log",
]

log = logging.getLogger("selfsup")

T = TypeVar("T")

MAX_REPLACEMENTS = 100  # unreadable samples in a row a map-style dataset looks past
MIN_DENOMINATOR = 1000  # the fault fraction is taken of at least this many samples
SHOWN = 5  # faults logged one by one; later ones are only counted
_STRIDE = 1_000_003  # a prime: index + k * stride (mod n) visits every index for n < stride


class FaultLog:
    """Append-only JSON-lines record of skipped samples; picklable (it is only a path), so it
    travels into DataLoader worker processes with the dataset that holds it.

    Args:
        path: The file; its folder must exist when the first fault is recorded.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)

    def record(self, error: str) -> None:
        """Append one fault. One ``write`` of one line on a file opened for appending, so lines
        from concurrent processes do not interleave."""
        line = json.dumps({"error": error, "pid": os.getpid()}) + "\n"
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line)

    def __repr__(self) -> str:
        return f"FaultLog({self.path!r})"


class FaultCounter:
    """A fault sink in memory that gives up after ``limit`` faults (the pre-flight check)."""

    def __init__(self, limit: int = 2**62) -> None:
        self.limit = limit
        self.errors: list[str] = []

    def record(self, error: str) -> None:
        self.errors.append(error)
        if len(self.errors) >= self.limit:
            raise DataError(
                f"none of the first {self.limit} samples could be read; for example: "
                + "; ".join(self.errors[:3])
            )


def set_fault_log(dataset: Any, faults: FaultLog | FaultCounter | None) -> bool:  # noqa: ANN401
    """Give ``dataset`` a fault sink (``None`` makes faults raise again); returns whether the
    dataset can skip faults at all (array-backed built-in datasets have none)."""
    if not hasattr(dataset, "faults"):
        return False
    dataset.faults = faults
    return True


def preflight(dataset: Any, tries: int = MAX_REPLACEMENTS) -> None:  # noqa: ANN401
    """Read one sample of ``dataset``, looking past up to ``tries`` unreadable ones.

    Raises:
        DataError: The first ``tries`` samples are all unreadable, or the dataset yields none.
    """
    if not hasattr(dataset, "faults"):
        return
    saved = dataset.faults
    counter = dataset.faults = FaultCounter(tries)
    try:
        if isinstance(dataset, IterableDataset):
            if next(iter(dataset), None) is None:
                if counter.errors:
                    raise DataError(
                        f"none of the {len(counter.errors)} samples could be read; for example: "
                        + "; ".join(counter.errors[:3])
                    )
                raise DataError("the data holds no samples")
        else:
            dataset[0]
    finally:
        dataset.faults = saved


def read_or_replace(
    faults: FaultLog | FaultCounter | None, index: int, size: int, read: Callable[[int], T]
) -> T:
    """``read(index)``, or with a fault sink, the first readable of ``index``, ``index + s``,
    ``index + 2s``, ... (modulo ``size``; ``s`` a large prime), each unreadable one recorded.

    Raises:
        DataError: Without a sink, the sample's own error; with one, when
            :data:`MAX_REPLACEMENTS` samples in a row (or all of them) cannot be read.
    """
    if faults is None:
        return read(index)
    tries = min(size, MAX_REPLACEMENTS)
    # Replacements stride through the dataset rather than take the neighbours: bad files come in
    # runs (a corrupted class folder), and counting a run once per request would overstate it.
    stride = _STRIDE % size or 1
    for attempt in range(tries):
        try:
            return read((index + attempt * stride) % size)
        except DataError as err:
            faults.record(str(err))
            last = str(err)
    raise DataError(f"{tries} samples tried from #{index} could not be read; the last: {last}")


def read_faults(path: str | os.PathLike[str]) -> list[str]:
    """The messages of a :class:`FaultLog` file (empty when it does not exist)."""
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [str(json.loads(line)["error"]) for line in f if line.endswith("\n")]


class TooManyFaultsError(DataError):
    """More training samples were unreadable than ``max_bad_fraction`` allows; the run stops."""


class FaultMonitor:
    """Follows one process's :class:`FaultLog` during training; :attr:`total` adds the other
    processes' counts, as the last step's verdict summed them (``max_bad_fraction`` is a share
    of the whole run's samples).

    Args:
        path: The log file (need not exist yet).
        max_fraction: Largest tolerated share of skipped samples, in [0, 1].
    """

    def __init__(self, path: str | os.PathLike[str], max_fraction: float) -> None:
        self.path = Path(path)
        self.max_fraction = max_fraction
        self.count = 0  # this process's
        self.others = 0  # the other processes', at the last step
        self.examples: list[str] = []
        self.offset = 0  # bytes of the log already read

    @property
    def total(self) -> int:
        """Unreadable samples skipped by every process of the run."""
        return self.count + self.others

    def truncate(self, offset: int) -> None:
        """Forget faults recorded after ``offset`` bytes (those of steps a resumed run redoes)."""
        if self.path.exists() and self.path.stat().st_size > offset:
            with open(self.path, "r+b") as f:
                f.truncate(offset)
        self.offset = 0
        self.count = 0
        self.poll()

    def poll(self) -> list[str]:
        """Read the faults recorded since the last call; the first few are logged."""
        try:
            if self.path.stat().st_size <= self.offset:
                return []
        except FileNotFoundError:
            return []
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        complete = data.rfind(b"\n") + 1  # a line still being written is read next time
        self.offset += complete
        new = []
        for line in data[:complete].splitlines():
            try:
                new.append(str(json.loads(line)["error"]))
            except (ValueError, KeyError, TypeError):
                new.append(line.decode("utf-8", "replace"))
        for error in new:
            if self.count < SHOWN:
                log.warning("skipped a sample: %s", error)
                if self.count == SHOWN - 1:
                    log.warning("further skipped samples are counted, not shown (%s)", self.path)
            if len(self.examples) < 3:
                self.examples.append(error)
            self.count += 1
        return new

    def allowed(self, samples: int) -> float:
        """Faults tolerated after ``samples`` good samples (of every process)."""
        return self.max_fraction * max(samples + self.total, MIN_DENOMINATOR)

    def over_limit(self, samples: int) -> bool:
        """Whether the faults of every process exceed ``max_bad_fraction`` of the samples read."""
        return self.total > self.allowed(samples)

    def error(self, samples: int) -> TooManyFaultsError:
        """The error that stops a run for bad data."""
        where = str(self.path)
        if self.others:
            where += f" and, for the other processes, {self.path.parent / 'faults-rank*.jsonl'}"
        examples = "; ".join(self.examples) or "see the other processes' lists"
        return TooManyFaultsError(
            f"{self.total} unreadable sample{'s' if self.total != 1 else ''} skipped by the time "
            f"{samples} had been trained on, more than max_bad_fraction={self.max_fraction:g} "
            f"allows (of at least {MIN_DENOMINATOR} samples); for example: {examples}. Every "
            f"one is listed in {where}. Fix or remove the files, or raise max_bad_fraction, "
            "then resume"
        )
