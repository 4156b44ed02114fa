"""DINO: a training step through the registry, the teacher (no gradient, global crops only, EMA),
the centre, the teacher-temperature schedule and the frozen last layer."""

import math

import torch
from torch import nn

from selfsup.losses.dino import teacher_temperature
from selfsup.methods import METHODS, BuildContext
from selfsup.methods.momentum import cosine_momentum

TINY = {"out_dim": 32, "hidden_dim": 32, "bottleneck_dim": 8, "num_local": 2}


def _batch(b=4, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "image": torch.randint(0, 256, (b, 3, size, size), dtype=torch.uint8, generator=g),
        "label": torch.full((b,), -1, dtype=torch.long),
        "index": torch.arange(b),
    }


def _build(backbone="resnet18", **kwargs):
    torch.manual_seed(0)
    ctx = BuildContext(backbone, image_size=16, batch_size=4)
    return METHODS.get("dino").build(ctx, **{**TINY, **kwargs})


def test_step_trains_the_student_only_and_the_teacher_sees_global_crops_only():
    method = _build(freeze_last_layer_steps=1)
    assert any(isinstance(m, nn.BatchNorm1d) for m in method.head.modules())  # ResNet: BN
    seen = {"student": [], "teacher": []}
    method.backbone.register_forward_hook(lambda m, i, o: seen["student"].append(i[0].shape))
    method.teacher_backbone.register_forward_hook(
        lambda m, i, o: seen["teacher"].append(i[0].shape)
    )
    out = method(_batch())
    assert math.isfinite(float(out["loss"].detach()))
    out["loss"].backward()
    assert seen["teacher"] == [(8, 3, 16, 16)]  # 2 global crops x B
    assert seen["student"] == [(8, 3, 16, 16), (8, 3, 7, 7)]  # and 2 local crops x B
    missing = [n for n, p in method.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing
    teacher = [*method.teacher_backbone.parameters(), *method.teacher_head.parameters()]
    assert all(not p.requires_grad and p.grad is None for p in teacher)
    # the last layer is frozen during the first step: in the graph, zero gradient
    assert torch.count_nonzero(method.head.last_weight.grad) == 0
    method.zero_grad()
    method.after_step(1, 10)
    method(_batch(seed=1))["loss"].backward()
    assert method.head.last_weight.grad.abs().sum() > 0
    method.eval()
    feats = method.embed(_batch())
    assert feats.shape == (4, 512) and torch.isfinite(feats).all()
    # the paper evaluates the teacher; the student is an option
    x = method.preprocess(_batch()["image"])
    assert torch.equal(feats, method.teacher_backbone(x))
    method.evaluate_teacher = False
    assert torch.equal(method.embed(_batch()), method.backbone(x))


def test_bf16_autocast_gives_a_finite_loss():
    method = _build()
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        loss = method(_batch())["loss"]
    assert loss.dtype == torch.float32 and math.isfinite(float(loss))


def test_vit_backbone_without_head_batch_norm():
    method = _build("vit_tiny_patch4")
    assert not any(isinstance(m, nn.BatchNorm1d) for m in method.head.modules())
    with torch.no_grad():
        out = method(_batch())
    assert math.isfinite(float(out["loss"]))


def test_center_moves_once_per_optimizer_step_by_the_mean_over_its_micro_batches():
    method = _build()
    outputs = []
    method.teacher_head.register_forward_hook(lambda m, i, o: outputs.append(o.detach()))
    with torch.no_grad():
        method.center.copy_(torch.randn(1, 32))
    before = method.center.clone()
    method(_batch(seed=0))
    method(_batch(seed=1))  # two micro-batches of one optimizer step
    assert torch.equal(method.center, before)  # both saw the same centre
    method.after_step(1, 10)
    teacher = torch.cat(outputs)  # (2 * 2B, K)
    assert torch.allclose(method.center, 0.9 * before + 0.1 * teacher.mean(0, keepdim=True))
    with torch.no_grad():
        method(_batch())  # evaluation-style forwards leave the centre alone
    method.after_step(2, 10)
    assert torch.allclose(method.center, 0.9 * before + 0.1 * teacher.mean(0, keepdim=True))


def test_after_step_moves_the_teacher_by_ema_and_sets_the_teacher_temperature():
    method = _build()
    with torch.no_grad():
        for p in [*method.backbone.parameters(), *method.head.parameters()]:
            p.add_(torch.randn_like(p))
    student = method.head.last_weight.detach().clone()
    teacher = method.teacher_head.last_weight.detach().clone()
    method.after_step(5, 100)
    m = cosine_momentum(5, 100, 0.996)
    assert 0.996 < m < 1.0
    assert torch.allclose(method.teacher_head.last_weight, m * teacher + (1 - m) * student)
    expected = teacher_temperature(0.05, 0.1, 0.04, 0.07)
    assert math.isclose(expected, 0.055, rel_tol=1e-9)
    assert math.isclose(float(method.teacher_temp), expected, rel_tol=1e-6)
    with torch.no_grad():
        assert math.isclose(float(method(_batch())["teacher_temp"]), 0.055, rel_tol=1e-6)
    method.after_step(50, 100)
    assert math.isclose(float(method.teacher_temp), 0.07, rel_tol=1e-6)


def test_head_outputs_are_cosines_with_unit_norm_last_layer_rows():
    method = _build()
    with torch.no_grad():
        method.head.last_weight.mul_(7.0)  # the weight norm g = 1 ignores the scale of v
        logits = method.head(torch.randn(4, 512))
    assert logits.shape == (4, 32) and logits.dtype == torch.float32
    assert logits.abs().max() <= 1.0 + 1e-5


def test_defaults_follow_the_paper():
    cls = METHODS.get("dino")
    assert (cls.defaults.optimizer, cls.defaults.lr, cls.defaults.weight_decay) == (
        "adamw",
        5e-4,
        0.04,
    )
    method = cls.build(BuildContext("resnet18", 16, batch_size=4, num_samples=40), **TINY)
    assert method.freeze_last_layer_steps == 10  # one epoch
    assert (method.student_temp, method.center_momentum, method.momentum) == (0.1, 0.9, 0.996)
    assert math.isclose(float(method.teacher_temp), 0.04, rel_tol=1e-6)


def test_frozen_last_layer_is_listed_for_the_optimizer_and_a_skipped_step_forgets_its_teacher():
    method = _build(freeze_last_layer_steps=1)
    assert method.frozen_parameters() == [method.head.last_weight]
    center = method.center.clone()
    method(_batch())
    assert method._pending_teacher  # kept for the centre's update in after_step
    method.discard_step()  # the engine skipped the step: its teacher outputs never move the centre
    method.after_step(1, 10)
    assert torch.equal(method.center, center) and method.frozen_parameters() == []
