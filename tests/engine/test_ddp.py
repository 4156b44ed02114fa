"""Two processes on CPU (gloo): the engine trains, checkpoints once per run, and a run killed
mid-way and resumed ends with the same weights as an uninterrupted one."""

from pathlib import Path

import pytest
import torch
from processes import final_state, run_script

SCRIPT = Path(__file__).with_name("ddp_run.py")


def run(*args):
    return run_script(SCRIPT, *args)


def test_two_process_run_and_resume(tmp_path):
    full = run(tmp_path / "full")
    assert full.returncode == 0, full.stderr[-2000:]
    crashed = run(tmp_path / "cut", "--crash-at", 3)
    assert crashed.returncode != 0 and "simulated crash" in crashed.stderr
    resumed = run(tmp_path / "cut", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]

    a, b = final_state(tmp_path / "full"), final_state(tmp_path / "cut")
    assert len(a["ranks"]) == 2, "each process's RNG and data position is saved"
    # the two processes draw different views
    assert not torch.equal(a["ranks"][0]["rng"]["torch"], a["ranks"][1]["rng"]["torch"])
    for key in a["method"]:
        assert torch.equal(a["method"][key], b["method"][key]), f"{key} differs after resume"


def test_moco_queue_stays_alike_on_both_processes_without_broadcast(tmp_path):
    done = run(tmp_path / "moco", "--moco")
    assert done.returncode == 0, done.stderr[-2000:]
    first, second = (torch.load(tmp_path / "moco" / f"queue-rank{r}.pt") for r in (0, 1))
    assert first["ignored"] == second["ignored"] == ["queue"]  # DDP does not broadcast it
    assert torch.equal(first["queue"], second["queue"])  # filled with the same gathered keys
    saved = final_state(tmp_path / "moco")["method"]
    assert torch.equal(saved["queue"], first["queue"])
    assert int(saved["queue_ptr"]) == 4 * 2 * 8 % 64


def test_a_failure_of_the_first_process_alone_stops_the_other(tmp_path):
    # the first process alone writes checkpoints: when that fails, the second must stop too,
    # not wait for it in the next collective until the process group's 30-minute timeout
    done = run(tmp_path / "run", "--fail-save")
    assert done.returncode != 0
    cause = f"could not write the checkpoint of step 2 in {tmp_path / 'run' / 'checkpoints'}"
    assert f"WriteFailed: {cause} (No space left on device); stopping" in done.stderr
    assert f"process 0 failed while writing the checkpoint of step 2 (WriteFailed: {cause}" in (
        done.stderr
    )


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_metrics_that_cannot_be_written_stop_both_processes(tmp_path):
    # the first process alone logs: the step's verdict carries its failure to the other
    done = run(tmp_path / "run", "--fail-log")
    assert done.returncode != 0
    told = (
        f"WriteFailed: could not log step 1 to {tmp_path / 'run' / 'metrics.jsonl'} "
        "(OSError: [Errno 28] No space left on device); stopping"
    )
    assert done.stderr.count(told) == 2, done.stderr[-3000:]  # raised by each process
