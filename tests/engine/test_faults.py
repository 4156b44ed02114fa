"""Unreadable samples while training: skipped, counted, listed, and the run stops past
``max_bad_fraction``; a source with nothing readable stops before the run directory exists."""

import json

import numpy as np
import pytest
from PIL import Image

from selfsup.config import load_config
from selfsup.data import DataError
from selfsup.data.faults import TooManyFaultsError
from selfsup.pipeline import pretrain


def folder(root, good, bad, empty=0):
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(good):
        pixels = rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / f"good{i:02d}.png")
    for i in range(bad):
        (root / f"bad{i:02d}.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    for i in range(empty):
        (root / f"empty{i:02d}.png").write_bytes(b"")
    return root


def config(data, out, steps=6, **extra):
    values = {"method": "simclr", "data": f"folder:{data}", "image_size": 16, "batch_size": 4,
              "method_args": {"proj_hidden_dim": 16, "proj_dim": 8}, "budget": f"{steps}steps",
              "out": str(out), "num_workers": 0, "log_every": 1, "progress": False,
              "diagnostics_every": 0, "decode_cache": "off", **extra}  # fmt: skip
    return load_config(values=values)


@pytest.mark.parametrize("workers", [0, 2])
def test_bad_samples_are_skipped_counted_and_listed(tmp_path, workers):
    data = folder(tmp_path / "data", good=20, bad=2, empty=1)
    run = pretrain(config(data, tmp_path / "run", num_workers=workers, max_bad_fraction=0.5))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 6 and summary["bad_samples"] >= 1  # the empty file at least
    listed = [json.loads(line)["error"] for line in (run / "faults.jsonl").read_text().splitlines()]
    assert len(listed) == summary["bad_samples"]
    assert any("empty00.png is empty" in e for e in listed)
    assert all("bad0" in e or "empty00" in e for e in listed)
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["bad_samples"] == summary["bad_samples"]


def test_too_many_bad_samples_stop_the_run_with_examples(tmp_path):
    data = folder(tmp_path / "data", good=8, bad=8)
    with pytest.raises(TooManyFaultsError, match=r"max_bad_fraction=0\.002.*bad0\d\.jpg.*faults"):
        pretrain(config(data, tmp_path / "run", steps=20, max_bad_fraction=0.002))


def test_strict_mode_stops_at_the_first_bad_sample(tmp_path):
    data = folder(tmp_path / "data", good=12, bad=1)
    with pytest.raises(TooManyFaultsError, match="1 unreadable sample skipped.*bad00.jpg"):
        pretrain(config(data, tmp_path / "run", steps=10, max_bad_fraction=0))


def test_nothing_readable_stops_before_the_run_directory(tmp_path):
    data = folder(tmp_path / "data", good=0, bad=6)
    with pytest.raises(DataError, match="could not be read.*bad0"):
        pretrain(config(data, tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_too_many_left_out_at_build_stops_before_the_run_directory(tmp_path):
    data = folder(tmp_path / "data", good=4, bad=0, empty=4)
    with pytest.raises(DataError, match="4 of the 8 samples.*max_bad_fraction.*empty00.png"):
        pretrain(config(data, tmp_path / "run", max_bad_fraction=0.001))
    assert not (tmp_path / "run").exists()


def test_decode_cache_skips_bad_images_once_before_training(tmp_path):
    data = folder(tmp_path / "data", good=20, bad=2, empty=1)
    run = pretrain(config(data, tmp_path / "run", num_workers=2, decode_cache="on"))
    listed = (run / "faults.jsonl").read_text()
    assert "bad00.jpg" in listed and "bad01.jpg" in listed and "empty00.png" in listed
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 6 and summary["bad_samples"] == listed.count("\n")


def test_monitor_counts_complete_lines_and_forgets_redone_steps(tmp_path):
    from selfsup.data.faults import FaultLog, FaultMonitor

    path = tmp_path / "faults.jsonl"
    log, monitor = FaultLog(path), FaultMonitor(path, max_fraction=0.01)
    assert monitor.poll() == [] and monitor.count == 0  # no file yet
    log.record("image a.jpg is broken")
    log.record("image b.jpg is broken")
    with open(path, "a") as f:
        f.write('{"error": "half a li')  # a worker still writing
    assert monitor.poll() == ["image a.jpg is broken", "image b.jpg is broken"]
    saved = monitor.offset  # what a checkpoint stores
    with open(path, "a") as f:
        f.write('ne"}\n')
    assert monitor.poll() == ["half a line"] and monitor.count == 3
    monitor.truncate(saved)  # resumed from that checkpoint: the third fault is redone later
    assert monitor.count == 2 and path.read_text().count("\n") == 2
    # 1 % of at least 1000 samples: 10 faults are tolerated, the 11th is not.
    assert not monitor.over_limit(0)
    monitor.count = 11
    assert monitor.over_limit(0) and not monitor.over_limit(2000)


def test_the_limit_counts_the_faults_of_every_process(tmp_path):
    # max_bad_fraction is a share of the whole run's samples: 6 faults here and 6 on the other
    # process pass 1 % of 1000 samples, though neither process's own 6 do
    import torch

    from selfsup.data.faults import FaultLog, FaultMonitor
    from selfsup.engine.guard import StepGuard

    class TwoProcesses:  # the other process: 6 faults, finite, no Ctrl-C, no write failure
        world_size, device = 2, torch.device("cpu")

        def all_reduce(self, flags, reduce_op):
            assert reduce_op == "sum"
            return flags + torch.tensor([0.0, 6.0, 0.0, 0.0])

    path = tmp_path / "faults.jsonl"
    for i in range(6):
        FaultLog(path).record(f"image {i}.jpg is broken")
    monitor = FaultMonitor(path, max_fraction=0.01)
    guard = StepGuard(TwoProcesses(), "stop", manual=False, faults=monitor)
    finite, too_many = guard.verdict(torch.tensor(1.0), None, samples=500)
    assert finite and too_many and not guard.stop_after_step
    assert (monitor.count, monitor.total) == (6, 12)
    error = str(monitor.error(500))
    assert error.startswith("12 unreadable samples") and "faults-rank*.jsonl" in error
