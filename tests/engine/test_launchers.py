"""Outside launchers: torchrun and SLURM's srun set the process count, selfsup follows them."""

import json
import logging
import math
import os
import subprocess
import sys

import pytest
import torch
import yaml

from selfsup.config import ConfigError, load_config
from selfsup.launch import is_global_zero, launcher_processes, make_fabric


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"LOCAL_WORLD_SIZE": "4", "WORLD_SIZE": "8"}, (4, 2)),  # torchrun, 2 nodes of 4
        ({"SLURM_NTASKS_PER_NODE": "2", "SLURM_NNODES": "3", "SLURM_JOB_NAME": "train"}, (2, 3)),
        ({"SLURM_NTASKS_PER_NODE": "2", "SLURM_NNODES": "3", "SLURM_JOB_NAME": "bash"}, None),
        ({"SLURM_NTASKS_PER_NODE": "2(x3)", "SLURM_NNODES": "3"}, None),
    ],
)
def test_launcher_processes(env, expected):
    assert launcher_processes(env) == expected


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, True),
        ({"RANK": "1", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2", "WORLD_SIZE": "2"}, False),
        ({"RANK": "0", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "2", "WORLD_SIZE": "2"}, True),
        ({"SLURM_PROCID": "3", "SLURM_NTASKS_PER_NODE": "2", "SLURM_NNODES": "2"}, False),
        ({"SLURM_PROCID": "0", "SLURM_JOB_NAME": "bash"}, True),  # an interactive job
        ({"NODE_RANK": "0", "LOCAL_RANK": "1"}, False),  # Fabric's own launcher, second process
        ({"NODE_RANK": "1", "LOCAL_RANK": "0"}, False),
    ],
)
def test_is_global_zero(env, expected):
    assert is_global_zero(env) is expected


def test_devices_that_contradict_torchrun_are_refused(monkeypatch):
    torchrun = {"RANK": "0", "LOCAL_RANK": "0", "GROUP_RANK": "0", "WORLD_SIZE": "2",
                "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29555",
                "TORCHELASTIC_RUN_ID": "test"}  # fmt: skip
    for key, value in torchrun.items():
        monkeypatch.setenv(key, value)
    cpu = {"accelerator": "cpu", "precision": "32-true"}
    config = load_config(values={"devices": 3, "strategy": "ddp", **cpu})
    with pytest.raises(ConfigError, match="devices=3, num_nodes=1 contradict the launcher"):
        make_fabric(config)
    followed = load_config(values=cpu)
    make_fabric(followed)  # not launched: building Fabric starts no process group
    assert (followed.devices, followed.num_nodes, followed.strategy) == (2, 1, "ddp")
    # as many processes, laid out otherwise (a run saved on 1 x 2 resumed on 2 x 1): the
    # launcher's layout
    relaid = load_config(values={"devices": 1, "num_nodes": 2, "strategy": "ddp", **cpu})
    make_fabric(relaid)
    assert (relaid.devices, relaid.num_nodes) == (2, 1)


def torchrun_pretrain(*args: str) -> subprocess.CompletedProcess:
    """``torchrun --nproc-per-node 2 -m selfsup pretrain ARGS progress=false``, checked."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc-per-node", "2", "-m", "selfsup", "pretrain", *args, "progress=false"]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_torchrun_two_processes(tmp_path):
    run = tmp_path / "run"
    done = torchrun_pretrain("--method", "simclr", "--data", "digits", "--budget", "2steps",
                             "--batch-size", "8", "--image-size", "16", "--out", str(run),
                             "precision=32-true", "num_workers=0", "diagnostics_every=0",
                             "method_args.proj_hidden_dim=16", "method_args.proj_dim=8")  # fmt: skip
    assert done.stdout.count("run directory:") == 1  # printed by rank 0 only
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert (config["devices"], config["num_nodes"], config["strategy"]) == (2, 1, "ddp")
    state = torch.load(
        sorted((run / "checkpoints").glob("step-*"))[-1] / "state.pt", weights_only=True
    )
    assert len(state["ranks"]) == 2


def test_torchrun_trains_a_token_loss_method(tmp_path):
    # ELECTRA's two token means (masked tokens, real tokens) each all-reduce their counts in the
    # forward pass (selfsup.losses.global_mean); both processes must reach them every step.
    run = tmp_path / "run"
    torchrun_pretrain("--method", "electra", "--data", "lee", "--backbone", "bert-tiny",
                      "--budget", "2steps", "--batch-size", "4", "--out", str(run), "log_every=1")  # fmt: skip
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    logged = [line for line in lines if "rtd_loss" in line]
    assert len(logged) == 2
    for line in logged:  # global means: accuracies are fractions, the loss a finite figure
        assert math.isfinite(line["loss"]) and 0 <= line["disc_acc"] <= 1


@pytest.mark.parametrize("strategy", ["fsdp_cpu_offload", "deepspeed_stage_2"])
def test_other_sharded_strategies_are_refused_naming_the_ones_there_are(strategy):
    with pytest.raises(ConfigError, match="use strategy=fsdp"):
        load_config(values={"strategy": strategy})


def test_fsdp_is_accepted_but_not_with_compile():
    assert load_config(values={"strategy": "fsdp"}).strategy == "fsdp"
    with pytest.raises(ConfigError, match="compile"):
        load_config(values={"strategy": "fsdp", "compile": True})


def test_pretrain_flags_set_processes_nodes_and_strategy():
    from selfsup.cli import PRETRAIN_FLAGS, _parser

    args = _parser().parse_args(
        ["pretrain", "--devices", "8", "--num-nodes", "2", "--strategy", "fsdp"]
    )
    values = {k: getattr(args, k) for k in PRETRAIN_FLAGS if getattr(args, k) is not None}
    config = load_config(values=values)
    assert (config.devices, config.num_nodes, config.strategy) == (8, 2, "fsdp")


def test_lightning_does_not_announce_mixed_precision(caplog):
    with caplog.at_level(logging.INFO):
        make_fabric(load_config(values={"precision": "bf16-mixed", "accelerator": "cpu"}))
    assert "Automatic Mixed Precision" not in caplog.text  # config.yaml records the precision


RANK_ZERO_FAILS = """
import sys, torch.distributed as dist
from selfsup.launch import OtherProcessFailed, on_rank_zero

class Fabric:  # what on_rank_zero uses of Lightning Fabric
    world_size = 2
    def __init__(self, rank):
        self.is_global_zero = rank == 0
    def broadcast(self, obj, src=0):
        box = [obj]
        dist.broadcast_object_list(box, src=src)
        return box[0]

def work():
    raise OSError("No space left on device")

rank = int(sys.argv[2])
dist.init_process_group("gloo", init_method=f"file://{sys.argv[1]}", rank=rank, world_size=2)
fabric = Fabric(rank)
print("result:", on_rank_zero(fabric, "counting", lambda: 7))
try:
    on_rank_zero(fabric, "writing the checkpoint of step 2", work)
except OtherProcessFailed as err:
    print("other:", err)
except OSError as err:
    print("own:", err)
"""


def test_a_failure_of_rank_zero_alone_stops_the_other_processes(tmp_path):
    # rank 0 alone writes the run directory, checkpoints and the export; if that fails, the
    # others must stop too, not wait in their next collective until the 30-minute timeout
    script = tmp_path / "fails.py"
    script.write_text(RANK_ZERO_FAILS)
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(tmp_path / "store"), str(rank)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for rank in (0, 1)
    ]
    out = [p.communicate(timeout=120)[0].splitlines() for p in procs]
    assert out[0] == ["result: 7", "own: No space left on device"]
    assert out[1] == [
        "result: None",
        "other: process 0 failed while writing the checkpoint of step 2 "
        "(OSError: No space left on device)",
    ]


def test_srun_tasks_in_an_interactive_job_are_refused():
    # Fabric ignores SLURM in an interactive job: each of srun's tasks would train alone
    from selfsup.launch import check_not_interactive_srun

    interactive = {"SLURM_JOB_NAME": "bash", "SLURM_NTASKS": "8", "SLURM_PROCID": "3"}
    with pytest.raises(ConfigError, match="srun started 8 tasks in an interactive job"):
        check_not_interactive_srun(interactive)
    check_not_interactive_srun({**interactive, "SLURM_JOB_NAME": "train"})  # sbatch's name
    check_not_interactive_srun({**interactive, "SLURM_NTASKS": "1"})
    salloc_shell = {k: v for k, v in interactive.items() if k != "SLURM_PROCID"}
    check_not_interactive_srun(salloc_shell)  # one process, which --devices may multiply
    # the shell of `srun -n 8 --pty bash` is task 0: one process or torchrun starts from it
    check_not_interactive_srun({**interactive, "SLURM_PROCID": "0"})
    check_not_interactive_srun({**interactive, "LOCAL_WORLD_SIZE": "8", "WORLD_SIZE": "8"})


def test_children_left_waiting_for_a_failed_first_process_are_stopped():
    # Fabric's launcher starts the other processes from the first; if the first fails alone
    # (a full disk while logging), they would wait for it until the process group's timeout
    from selfsup.launch import stop_children

    quick = subprocess.Popen([sys.executable, "-c", "pass"])
    stuck = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    stop_children([quick, stuck], grace=5)
    assert quick.returncode == 0 and stuck.returncode != 0
