"""precision=auto picks bf16 autocast where the device computes bf16, and bf16 autocast gives
losses and gradients close to fp32's for every kind of image method (a contrastive loss, batch
statistics, pixel reconstruction)."""

import copy

import pytest
import torch

import selfsup.engine.precision as precision
from selfsup.methods import METHODS, BuildContext


def test_explicit_precision_is_kept():
    assert precision.resolve_precision("32-true") == "32-true"
    assert precision.resolve_precision("bf16-mixed", "cpu") == "bf16-mixed"


@pytest.mark.parametrize(("bf16_cpu", "accelerator", "expected"), [
    (True, "auto", "bf16-mixed"), (True, "cpu", "bf16-mixed"), (False, "auto", "32-true"),
    (True, "mps", "32-true"),
])  # fmt: skip
def test_auto_follows_the_cpu(monkeypatch, bf16_cpu, accelerator, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(precision, "cpu_computes_bf16", lambda: bf16_cpu)
    assert precision.resolve_precision("auto", accelerator) == expected


@pytest.mark.parametrize(("capability", "expected"), [((7, 0), "32-true"), ((8, 0), "bf16-mixed")])
def test_auto_picks_bf16_only_on_gpus_that_compute_it(monkeypatch, capability, expected):
    # a V100 (7.0) or T4 (7.5) emulates bf16, slower than fp32; from Ampere (8.0) on it is native
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert precision.resolve_precision("auto") == expected


def test_a_run_records_what_auto_resolved_to(tmp_path):
    from selfsup.config import load_config
    from selfsup.pipeline import pretrain

    run = pretrain(load_config(values={
        "method": "simclr", "data": "digits", "image_size": 16, "batch_size": 8, "budget": "1steps",
        "method_args": {"proj_hidden_dim": 16, "proj_dim": 8}, "out": str(tmp_path / "run"),
        "num_workers": 0, "progress": False, "diagnostics_every": 0,
    }))  # fmt: skip
    saved = load_config(run / "config.yaml")
    assert saved.precision == precision.resolve_precision("auto")


def loss_and_grads(method, images, bf16):
    torch.manual_seed(0)  # the same views and masks in both precisions
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss = method({"image": images})["loss"]
    loss.backward()
    grads = torch.cat([p.grad.flatten() for p in method.parameters() if p.grad is not None])
    return float(loss.detach()), grads


@pytest.mark.parametrize(("name", "args"), [
    ("simclr", {"proj_hidden_dim": 64, "proj_dim": 32}),
    ("barlowtwins", {"proj_dim": 64}),
    ("mae", {}),
])  # fmt: skip
def test_bf16_autocast_matches_fp32(name, args):
    torch.manual_seed(0)
    backbone = "vit_tiny_patch4" if name == "mae" else "resnet18"
    method = METHODS.get(name).build(BuildContext(image_size=16, backbone=backbone, batch_size=16),
                                     **args)  # fmt: skip
    images = torch.randint(0, 256, (16, 3, 16, 16), dtype=torch.uint8)
    loss32, grad32 = loss_and_grads(copy.deepcopy(method), images, bf16=False)
    loss16, grad16 = loss_and_grads(copy.deepcopy(method), images, bf16=True)
    assert abs(loss16 - loss32) <= 0.03 * abs(loss32) + 1e-3
    cosine = torch.nn.functional.cosine_similarity(grad16, grad32, dim=0)
    assert cosine > 0.98, f"{name}: gradient direction differs under bf16 (cosine {cosine:.3f})"
