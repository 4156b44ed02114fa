"""Deterministic, resumable epochs over map-style and iterable datasets.

The order of an epoch depends only on (seed, epoch), so a run resumed at (epoch, batch) sees
exactly the batches the interrupted run would have seen. Map-style datasets skip ahead by slicing
the epoch's permutation (free); iterable datasets (streamed shards, text) are told the epoch with
``set_epoch`` and replay-and-skip the consumed batches (costs decoding time, never correctness).
An endless (resampled) stream is cut into nominal epochs of ``steps_per_epoch`` batches (or of
``NOMINAL_EPOCH_STEPS`` when its length is unknown and nobody counted it), which keeps epoch
budgets meaningful and the replay on resume shorter than one epoch.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

NOMINAL_EPOCH_STEPS = 1000  # batches per epoch of a resampled stream of unknown length


class EpochLoader:
    """Batches of one epoch at a time, from a given position.

    Args:
        dataset: map-style or iterable dataset of dict samples.
        batch_size: samples per batch on this process.
        seed: base seed of the shuffling.
        rank, world_size: this process's share of each epoch (map-style datasets; iterable ones
            split themselves by rank).
        num_workers: decoding workers.
        collate_fn: batch builder (default: torch's default collate).
        shuffle: shuffle map-style datasets each epoch.
        num_samples: samples per epoch of an iterable dataset when known (all processes together);
            otherwise :meth:`count_steps` finds the number of batches by reading one epoch.
        finish: applied to each batch in the main process (e.g. decoding JPEGs on the device,
            ``selfsup.data.device_decode``).
        pin_memory: batches in page-locked memory, so that copies to a GPU run asynchronously.
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        num_workers: int = 0,
        collate_fn: Callable[[list[Any]], Any] | None = None,
        shuffle: bool = True,
        num_samples: int | None = None,
        finish: Callable[[Any], Any] | None = None,
        pin_memory: bool = False,
    ) -> None:
        self.dataset = dataset
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.num_workers = num_workers
        self.collate_fn = collate_fn
        self.finish = finish
        self.pin_memory = pin_memory
        self.shuffle = shuffle
        self.iterable = isinstance(dataset, IterableDataset)
        self._steps: int | None = None
        if self.iterable and num_samples is not None:
            self._steps = num_samples // (batch_size * world_size)
        if not self.iterable and len(dataset) < batch_size * world_size:  # type: ignore[arg-type]
            raise ValueError(
                f"the dataset has {len(dataset)} samples, fewer than one global batch "  # type: ignore[arg-type]
                f"({batch_size} x {world_size} processes); lower batch_size"
            )

    @property
    def steps_per_epoch(self) -> int | None:
        """Batches per epoch on this process (None for streams of unknown length)."""
        if self.iterable:
            return self._steps
        return len(self.dataset) // (self.batch_size * self.world_size)  # type: ignore[arg-type]

    @property
    def endless(self) -> bool:
        """Whether the dataset is a resampled stream, which never ends by itself."""
        return self.iterable and bool(getattr(self.dataset, "resample", False))

    def count_steps(self) -> int:
        """Read one epoch to count its batches (streams of unknown length, e.g. packed text);
        a resampled stream counts the batches of one plain pass over its parts."""
        if self.steps_per_epoch is None:
            resample = self.endless
            if resample:
                self.dataset.resample = False  # type: ignore[attr-defined]
            try:
                self._steps = sum(1 for _ in self._batches(0))
            finally:
                if resample:
                    self.dataset.resample = True  # type: ignore[attr-defined]
        return self.steps_per_epoch  # type: ignore[return-value]

    def first_examples(self) -> int:
        """How many examples a stream of unknown length holds for this process, counted up to
        one batch: its start is read here, in this process, with the RNGs left as they were (a
        dataset that is too small is found before the run starts; with several DataLoader
        workers, each must still fill its own batches)."""
        from selfsup.engine.checkpoint import rng_state, set_rng_state

        state = rng_state()
        try:
            if hasattr(self.dataset, "set_epoch"):
                self.dataset.set_epoch(0)
            start = itertools.islice(iter(self.dataset), self.batch_size)  # type: ignore[call-overload]
            return sum(1 for _ in start)
        finally:
            set_rng_state(state)

    def set_steps_per_epoch(self, steps: int) -> None:
        """Agree on one epoch length across processes (the shortest share)."""
        self._steps = steps

    def _indices(self, epoch: int) -> list[int]:
        n = len(self.dataset)  # type: ignore[arg-type]
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            order = torch.randperm(n, generator=g).tolist()
        else:
            order = list(range(n))
        per_rank = n // self.world_size
        return order[self.rank * per_rank : (self.rank + 1) * per_rank]

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[Any]:
        """Yield the batches of ``epoch`` starting at batch ``start_batch``."""
        batches = self._batches(epoch, start_batch)
        return batches if self.finish is None else map(self.finish, batches)

    def _batches(self, epoch: int, start_batch: int = 0) -> Iterator[Any]:
        common = {
            "batch_size": self.batch_size,
            "num_workers": self.num_workers,
            "collate_fn": self.collate_fn,
            "drop_last": True,
            "persistent_workers": False,
            "pin_memory": self.pin_memory,
            # A DataLoader iterator draws its workers' base seed from this generator; without one
            # it would draw from the global RNG, which the views use, and a resumed run (which
            # opens its iterator mid-epoch) would see different augmentations.
            "generator": torch.Generator().manual_seed(self.seed * 1_000_003 + epoch),
            "worker_init_fn": leave_stop_signals_to_the_main_process if self.num_workers else None,
        }
        if self.iterable:
            if hasattr(self.dataset, "set_epoch"):
                self.dataset.set_epoch(epoch)
            loader = DataLoader(self.dataset, **common)
            stop = (self._steps or NOMINAL_EPOCH_STEPS) if self.endless else None
            yield from itertools.islice(loader, start_batch, stop)
            return
        indices = self._indices(epoch)[start_batch * self.batch_size :]
        if len(indices) < self.batch_size:
            return
        yield from DataLoader(self.dataset, sampler=indices, **common)


def leave_stop_signals_to_the_main_process(worker_id: int) -> None:
    """A training DataLoader worker leaves Ctrl-C, SIGTERM and SIGUSR1 to its main process,
    which finishes its step (fetching batches from the workers), saves it and stops (see
    :meth:`selfsup.engine.guard.StepGuard.catch_ctrl_c`): a cluster's scheduler and a terminal
    signal every process of a job, and a worker that ended would fail the main process first.
    SIGINT and SIGUSR1 are ignored; SIGTERM ends the worker only when the main process sends it
    (its loader shutting down, multiprocessing's exit), as torch's own handler tells them apart.
    The worker still ends with its loader, and when the main process dies."""
    import multiprocessing
    import signal
    import threading

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "SIGUSR1"):
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    if not hasattr(signal, "sigwaitinfo"):  # not on macOS or Windows: torch's handling stays
        return
    parent = multiprocessing.parent_process()
    main_pid = parent.pid if parent is not None else os.getppid()

    def exit_on_the_main_process_sigterm() -> None:
        while True:
            if signal.sigwaitinfo({signal.SIGTERM}).si_pid == main_pid:
                os._exit(0)

    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # for every thread from now on
    threading.Thread(target=exit_on_the_main_process_sigterm, daemon=True).start()
