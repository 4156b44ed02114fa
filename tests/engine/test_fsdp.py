"""strategy=fsdp on CPU (gloo, two processes): a sharded run trains as the DDP run does (same
losses, gradient norms, kNN figures, checkpoints and export, to float tolerance), and a sharded
run killed mid-way and resumed from its whole-tensor checkpoint ends where an uninterrupted one
does, resumed sharded or by DDP (and a DDP run resumed sharded)."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from processes import final_state, run_script
from safetensors.torch import load_file

SCRIPT = Path(__file__).with_name("fsdp_run.py")


def run(*args):
    return run_script(SCRIPT, *args)


def metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def assert_close(a, b, what, near=False):
    """Elementwise to float tolerance; ``near``: within 1 % in norm. LARS scales each gradient by
    1 / its norm, so the momentum of a layer whose gradient is tiny (BYOL's last blocks start with
    zero residual gains) carries float noise of the order of 1e-3 relative; shares put in the
    wrong place would be off by ~100 %."""
    for key in a:
        if not (torch.is_tensor(a[key]) and a[key].is_floating_point()):
            assert torch.equal(torch.as_tensor(a[key]), torch.as_tensor(b[key])), f"{what} {key}"
        elif near:
            error = (a[key] - b[key]).norm()
            assert error <= 1e-2 * a[key].norm() + 1e-6 * a[key].numel() ** 0.5, f"{what} {key}"
        else:
            torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-6, msg=f"{what} {key}")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("fsdp")
    for strategy in ("ddp", "fsdp"):
        done = run(root / strategy, strategy)
        assert done.returncode == 0, done.stderr[-3000:]
    return root


def test_sharded_run_trains_as_ddp_does(runs):
    units = json.loads((runs / "fsdp" / "units.json").read_text())
    assert units[-1] == "BYOL" and len(units) > 1, "blocks of over 1M parameters shard apart"
    ddp, fsdp = final_state(runs / "ddp"), final_state(runs / "fsdp")
    assert_close(ddp["method"], fsdp["method"], "method")  # whole tensors, as DDP writes them
    assert ddp["optimizer"]["param_groups"] == fsdp["optimizer"]["param_groups"]
    for index, state in ddp["optimizer"]["state"].items():
        assert_close(
            state, fsdp["optimizer"]["state"][index], f"optimizer state {index}", near=True
        )
    for a, b in zip(metrics(runs / "ddp"), metrics(runs / "fsdp"), strict=True):
        for key in ("loss", "grad_norm", "knn_top1", "effective_rank"):
            if key in a:
                assert b[key] == pytest.approx(a[key], rel=1e-4), key
    exported = [load_file(runs / s / "export" / "model.safetensors") for s in ("ddp", "fsdp")]
    assert_close(*exported, "export")


def crash_at_step_3(out, strategy):
    crashed = run(out, strategy, "--crash-at", 3)
    assert crashed.returncode != 0 and "simulated crash" in crashed.stderr


def assert_resumes_to(uninterrupted, out, strategy, near=False):
    """Resumed under ``strategy``, the cut run ``out`` ends where ``uninterrupted`` did."""
    resumed = run(out, strategy, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    full, cut = final_state(uninterrupted), final_state(out)
    assert_close(full["method"], cut["method"], "method")
    for index, state in full["optimizer"]["state"].items():
        assert_close(state, cut["optimizer"]["state"][index], f"optimizer state {index}", near)


def test_sharded_run_resumes_where_it_stopped_under_either_strategy(runs, tmp_path):
    crash_at_step_3(tmp_path / "cut", "fsdp")
    shutil.copytree(tmp_path / "cut", tmp_path / "cut-ddp")
    assert_resumes_to(runs / "fsdp", tmp_path / "cut", "fsdp")
    # the same checkpoint continued by DDP: where the uninterrupted DDP run ends
    assert_resumes_to(runs / "ddp", tmp_path / "cut-ddp", "ddp", near=True)


def test_ddp_checkpoint_resumes_sharded(runs, tmp_path):
    """The other direction: a DDP run's checkpoint of step 2, cut into shares, continues under
    FSDP to where the uninterrupted FSDP run ends."""
    shutil.copytree(runs / "ddp", tmp_path / "cut")
    shutil.rmtree(tmp_path / "cut" / "checkpoints" / "step-00000004")  # as if it stopped at 2
    assert_resumes_to(runs / "fsdp", tmp_path / "cut", "fsdp", near=True)


UNITS = """
import sys, torch, torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from selfsup.engine.sharding import is_sharded, shard_method

dist.init_process_group("gloo", init_method=f"file://{sys.argv[1]}", rank=0, world_size=1)
model = nn.Module()
model.embed = nn.Embedding(100, 20)                      # 2000 parameters, tied to model.head
model.body = nn.Sequential(nn.Linear(20, 40), nn.Linear(40, 20))  # 840 and 820
model.head = nn.Linear(20, 100, bias=False)
model.head.weight = model.embed.weight
model.small = nn.Linear(2, 2)                            # 6
model.big = nn.Linear(40, 40)                            # 1640, not an element of a sequence
model.tied = nn.ModuleList([nn.Linear(20, 100, bias=False)])  # 2000, tied to the embedding
model.tied[0].weight = model.embed.weight
shard_method(model, init_device_mesh("cpu", (1,)), min_params=800)
names = [name or "root" for name, m in model.named_modules() if is_sharded(m)]
print(",".join(names))
"""


def test_units_are_large_modules_and_tied_weights_stay_in_one(tmp_path):
    script = tmp_path / "units.py"
    script.write_text(UNITS)
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "store")],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    # the two layers of the sequence shard apart; the body is left with none of its own; the
    # weight tied between the embedding, the head and the list's layer stays in the root, with
    # the small layer and the big one, which no container calls
    assert done.stdout.strip().splitlines()[-1] == "root,body.0,body.1"


@pytest.mark.parametrize(
    ("extra", "message"),
    [([], "applies its own updates"), (["method_args.fused=false"], "sparse gradients")],
)
def test_what_fsdp_cannot_shard_is_refused_with_the_way_out(tmp_path, extra, message):
    args = ["pretrain", "--method", "word2vec", "--data", "lee", "--strategy", "fsdp",
            "--budget", "2steps", "--out", str(tmp_path / "run"),
            "seq_len=50", "method_args.dim=8", "progress=false", "accelerator=cpu", *extra]  # fmt: skip
    done = subprocess.run([sys.executable, "-m", "selfsup", *args], capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    assert message in done.stderr and "strategy=ddp" in done.stderr
