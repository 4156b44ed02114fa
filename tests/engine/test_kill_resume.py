"""SIGKILL at a random moment, twice, then resume: the run ends with exactly the weights of an
uninterrupted run (CPU, fp32), and every kill leaves a loadable checkpoint behind."""

import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from selfsup.engine.checkpoint import latest_checkpoint, load_checkpoint

STEPS = 40
CONFIG = {"method": "simclr", "data": "digits", "image_size": 16, "batch_size": 16,
          "method_args": {"proj_hidden_dim": 32, "proj_dim": 8}, "budget": f"{STEPS}steps",
          "num_workers": 0, "checkpoint_every": 1, "keep_checkpoints": 2, "log_every": 1,
          "diagnostics_every": 0, "progress": False}  # fmt: skip


def selfsup(*args):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the same arithmetic in every process
    return subprocess.Popen([sys.executable, "-m", "selfsup", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip


def newest_step(run):
    ckpt = latest_checkpoint(run / "checkpoints")
    return -1 if ckpt is None else int(ckpt.name.split("-")[1])


def kill_after(process, run, step, rng):
    """SIGKILL ``process`` at a random moment once checkpoint ``step`` exists."""
    while newest_step(run) < step:
        if process.poll() is not None:
            pytest.fail(f"the run ended before step {step}: {process.stderr.read().decode()}")
        time.sleep(0.005)
    time.sleep(rng.uniform(0, 0.05))  # anywhere in a step, a checkpoint write included
    process.send_signal(signal.SIGKILL)
    process.wait()


def final_weights(run):
    state, meta = load_checkpoint(latest_checkpoint(run / "checkpoints"))
    assert meta["state"]["step"] == STEPS
    return state["method"]


def test_sigkill_twice_then_resume_matches_uninterrupted(tmp_path):
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(CONFIG))
    rng = random.Random(os.getpid())
    full = selfsup("pretrain", "--config", str(tmp_path / "run.yaml"), "--out", str(tmp_path / "a"))
    cut = tmp_path / "b"
    process = selfsup("pretrain", "--config", str(tmp_path / "run.yaml"), "--out", str(cut))
    kill_after(process, cut, rng.randint(2, 12), rng)
    for _ in range(2):
        state, meta = load_checkpoint(latest_checkpoint(cut / "checkpoints"))  # loadable
        assert meta["state"]["step"] >= 2 and "method" in state
        process = selfsup("pretrain", "--resume", str(cut))
        if _ == 0:
            kill_after(process, cut, meta["state"]["step"] + rng.randint(2, 10), rng)
    assert process.wait() == 0, process.stderr.read().decode()
    assert full.wait() == 0, full.stderr.read().decode()
    a, b = final_weights(tmp_path / "a"), final_weights(cut)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs after two kills and resumes"


def test_a_schedulers_sigterm_to_every_process_saves_and_stops(tmp_path):
    # SLURM signals every process of the job, DataLoader workers included: the run finishes
    # its step (fetching batches from the workers), saves it and stops with exit code 130
    config = {**CONFIG, "num_workers": 2, "budget": "1000steps", "checkpoint_every": 1000,
              "decode_cache": "off"}  # fmt: skip
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "selfsup", "pretrain", "--config", str(tmp_path / "run.yaml"),
         "--out", str(run)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    metrics = run / "metrics.jsonl"
    while not (metrics.is_file() and metrics.read_text().count("\n") >= 2):
        assert process.poll() is None, process.stderr.read().decode()[-3000:]
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGTERM)  # the main process and its workers
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr.decode()[-3000:]
    assert "continue with: selfsup pretrain --resume" in stderr.decode()
    step = newest_step(run)
    assert 2 <= step < 1000 and load_checkpoint(latest_checkpoint(run / "checkpoints"))
