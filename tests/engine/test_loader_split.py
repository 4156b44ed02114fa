"""In one epoch, processes and their DataLoader workers see every sample at most once and, but for
the remainder that does not fill a global batch, exactly once: for image folders, in-memory arrays,
decoded caches and tar shards."""

import subprocess

import pytest
import torch

from selfsup.data import build_source
from selfsup.data.cache import decoded_cache
from selfsup.engine.loader import EpochLoader
from selfsup.testing import image_folder


def indices_seen(dataset, batch, world, workers, epoch=0):
    seen = []
    for rank in range(world):
        loader = EpochLoader(dataset, batch, seed=3, rank=rank, world_size=world,
                             num_workers=workers)  # fmt: skip
        for batch_ in loader.epoch(epoch):
            seen += batch_["index"].tolist()
    return seen


@pytest.mark.parametrize("kind", ["folder", "digits", "cache"])
@pytest.mark.parametrize(("world", "workers"), [(1, 2), (2, 0), (2, 2)])
def test_map_style_epoch_covers_each_sample_once(tmp_path, kind, world, workers):
    if kind == "digits":
        dataset = build_source("digits", image_size=8).train
    else:
        source = build_source(f"folder:{image_folder(tmp_path / 'f', per_class=9)}", image_size=8)
        dataset = source.train
        if kind == "cache":
            dataset = decoded_cache(dataset, source.num_samples, 8, workers=0)
    batch = 4
    seen = indices_seen(dataset, batch, world, workers)
    n = len(dataset)
    assert len(seen) == len(set(seen))  # nothing twice
    assert len(seen) == n // (batch * world) * batch * world  # all but the last partial batch
    # a second epoch reshuffles: different order, the same guarantee
    again = indices_seen(dataset, batch, world, workers, epoch=1)
    assert len(again) == len(set(again)) == len(seen) and again != seen


def test_shard_epoch_covers_each_sample_once_across_workers(tmp_path):
    import io
    import tarfile

    from PIL import Image

    root = tmp_path / "shards"
    root.mkdir()
    for s in range(3):
        with tarfile.open(root / f"train-{s}.tar", "w") as archive:
            for i in range(8):
                buffer = io.BytesIO()
                Image.new("RGB", (4, 4), (s * 8 + i, 0, 0)).save(buffer, format="PNG")
                info = tarfile.TarInfo(f"k{s}_{i}.png")
                info.size = len(buffer.getvalue())
                archive.addfile(info, io.BytesIO(buffer.getvalue()))
    source = build_source(f"shards:{root}", image_size=4, shuffle_buffer=5)
    loader = EpochLoader(source.train, 2, seed=0, num_workers=2)
    labels = torch.cat([b["image"][:, 0, 0, 0] for b in loader.epoch(0)]).tolist()
    assert sorted(labels) == list(range(24))


def test_workers_leave_stop_signals_to_the_main_process():
    # A scheduler or a terminal signals every process of a job; the main process finishes its
    # step, fetching batches from its workers, and saves it (tests/engine/test_loop.py), which a
    # worker that ended would prevent. Only the main process's own SIGTERM ends a worker.
    import multiprocessing
    import time

    loader = EpochLoader(torch.arange(64).float().reshape(64, 1), 4, num_workers=1)
    batches = loader.epoch(0)
    try:
        next(batches)
        (worker,) = multiprocessing.active_children()
        for name in ("SIGINT", "SIGUSR1", "SIGTERM"):  # sent by another process (`kill`)
            subprocess.run(["kill", f"-{name[3:]}", str(worker.pid)], check=True)
        time.sleep(0.5)
        assert worker.is_alive()
        assert len(list(batches)) == 15  # the rest of the epoch
    finally:
        batches.close()
    loader = EpochLoader(torch.arange(64).float().reshape(64, 1), 4, num_workers=1)
    batches = loader.epoch(0)
    try:
        next(batches)
        (worker,) = multiprocessing.active_children()
        worker.terminate()  # the main process's SIGTERM (as at its exit): the worker ends
        worker.join(timeout=10)
        assert worker.exitcode == 0
    finally:
        batches.close()
