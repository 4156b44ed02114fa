"""Runs on a CUDA GPU, end to end through the CLI: skipped on machines without one (CI), run by
``benchmarks/gpu_checks.sh`` where a GPU is lent. Each also checks that the run used the GPU."""

import json

import pytest
import torch

from selfsup.cli import main
from selfsup.testing import jpeg_folder

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

COMMON = ["--budget", "3steps", "num_workers=1", "progress=false", "accelerator=cuda"]


@pytest.mark.parametrize("decode_cache", ["off", "on"])
def test_simclr_decodes_jpegs_on_the_gpu(tmp_path, decode_cache):
    data = jpeg_folder(tmp_path / "imgs", bad=3)
    run = tmp_path / "run"
    args = ["pretrain", "--method", "simclr", "--data", f"folder:{data}", "--batch-size", "4",
            "--image-size", "16", "--out", str(run), *COMMON, "method_args.proj_hidden_dim=16",
            f"decode_cache={decode_cache}"]  # fmt: skip
    assert main(args) == 0
    assert "3.jpg" in (run / "faults.jsonl").read_text()  # the truncated file, named
    assert "precision: bf16-mixed" in (run / "config.yaml").read_text()


@pytest.mark.parametrize(
    ("method", "extra"),
    [
        ("mlm", ["--backbone", "bert-tiny", "seq_len=32"]),
        ("word2vec", ["seq_len=200", "method_args.min_count=1"]),
        ("byol", ["--image-size", "16", "--data", "digits"]),
    ],
)
def test_methods_train_on_the_gpu(tmp_path, capsys, method, extra):
    data = [] if "--data" in extra else ["--data", "lee"]
    run = tmp_path / "run"
    args = ["pretrain", "--method", method, *data, "--batch-size", "8", "--out", str(run),
            *COMMON, *extra]  # fmt: skip
    assert main(args) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 3


def test_clip_decodes_caption_jpegs_on_the_gpu(tmp_path):
    from selfsup.testing import jpeg_captions

    pairs = jpeg_captions(tmp_path, bad=4)
    run = tmp_path / "run"
    args = ["pretrain", "--method", "clip", "--data", f"captions:{pairs}",
            "--batch-size", "6", "--image-size", "16", "--out", str(run), *COMMON,
            "decode_cache=off", "seq_len=12", "method_args.text_backbone=bert-tiny",
            "method_args.embed_dim=16"]  # fmt: skip
    assert main(args) == 0
    assert "4.jpg" in (run / "faults.jsonl").read_text()


@pytest.mark.parametrize(
    "extra",
    [
        ["--method", "byol", "--data", "digits", "knn_every=2"],
        # a scalar parameter (the temperature) that FSDP leaves whole, on the GPU
        ["--method", "clip", "--data", "shapes:64", "seq_len=12",
         "method_args.text_backbone=bert-tiny", "method_args.embed_dim=16"],
    ],
)  # fmt: skip
def test_fsdp_trains_on_the_gpu(tmp_path, extra):
    """strategy=fsdp with NCCL on one GPU (a lent machine has one), in its own process: the
    process group it starts would outlive the run in this one."""
    import subprocess
    import sys

    run = tmp_path / "run"
    args = ["pretrain", *extra, "--image-size", "16", "--batch-size", "8", "--out", str(run),
            *COMMON, "strategy=fsdp", "checkpoint_every=2", "optim.clip_grad=1.0"]  # fmt: skip
    done = subprocess.run([sys.executable, "-m", "selfsup", *args], capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((run / "summary.json").read_text())["steps"] == 3
    assert list((run / "export").rglob("model.safetensors"))  # CLIP's: image/ and text/
