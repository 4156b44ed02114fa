"""SwAV: a training step through the registry, prototype normalisation and freezing, codes from the
global crops only, and the queue."""

import math

import torch

import selfsup.methods.swav as swav_module
from selfsup.methods import METHODS, BuildContext

TINY = {"num_prototypes": 16, "proj_hidden_dim": 32, "proj_dim": 8, "num_local": 2}


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
    return METHODS.get("swav").build(ctx, **{**TINY, **kwargs})


def test_step_reaches_every_parameter_and_prototypes_thaw_after_the_freeze():
    method = _build(freeze_prototypes_steps=1)
    out = method(_batch())
    assert math.isfinite(float(out["loss"].detach()))
    out["loss"].backward()
    missing = [n for n, p in method.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing
    grad = method.prototypes.weight.grad  # frozen: in the graph, but zero
    assert torch.count_nonzero(grad) == 0 and method.projector[0].weight.grad.abs().sum() > 0
    method.zero_grad()
    method.after_step(1, 10)
    method(_batch(seed=1))["loss"].backward()
    assert method.prototypes.weight.grad.abs().sum() > 0
    method.eval()
    feats = method.embed(_batch())
    assert feats.shape == (4, 512) and torch.isfinite(feats).all()


def test_bf16_autocast_gives_a_finite_loss():
    method = _build()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = method(_batch())["loss"]
    assert loss.dtype == torch.float32 and math.isfinite(float(loss.detach()))


def test_vit_takes_the_small_local_crops():
    method = _build("vit_tiny_patch4")
    assert method.multicrop.local_view.config.size == 4  # 96/224 of 16 px, a multiple of 4
    with torch.no_grad():
        loss = method(_batch())["loss"]
    assert math.isfinite(float(loss))


def test_prototypes_are_unit_norm_at_start_and_after_each_step():
    method = _build()
    norms = method.prototypes.weight.norm(dim=1)
    assert torch.allclose(norms, torch.ones(16), atol=1e-6)
    with torch.no_grad():
        method.prototypes.weight.mul_(torch.rand(16, 1) * 3 + 0.5)
    method.after_step(1, 10)
    assert torch.allclose(method.prototypes.weight.norm(dim=1), torch.ones(16), atol=1e-6)


def test_freeze_defaults_to_one_epoch():
    cls = METHODS.get("swav")
    epoch = cls.build(BuildContext("resnet18", 16, batch_size=4, num_samples=100), **TINY)
    assert epoch.freeze_prototypes_steps == 25
    assert (
        cls.build(BuildContext("resnet18", 16, batch_size=4), **TINY).freeze_prototypes_steps == 313
    )


def test_codes_come_from_the_global_crops_then_the_queue(monkeypatch):
    calls = []
    original = swav_module.sinkhorn_knopp

    def recording(scores, epsilon, iterations):
        calls.append((tuple(scores.shape), epsilon, iterations))
        return original(scores, epsilon, iterations)

    monkeypatch.setattr(swav_module, "sinkhorn_knopp", recording)
    method = _build(queue_length=8, queue_start_step=1, num_local=0)  # 2 crops: cheaper
    # training forwards (with autograd) fill the queue
    method(_batch())  # step 0: before queue_start_step, nothing queued
    assert int(method.queue_filled) == 0
    # one Sinkhorn per global crop, over the batch only, with the paper's settings
    assert calls == [((4, 16), 0.05, 3)] * 2
    method.after_step(1, 10)
    method(_batch(seed=1))
    assert int(method.queue_filled) == 4
    queued = method.queue[:, :4].clone()  # (G, 4, D): unit-norm embeddings of the global crops
    assert torch.allclose(queued.norm(dim=-1), torch.ones(2, 4), atol=1e-5)
    method(_batch(seed=2))  # fills the queue; the batch of seed 1 moves back
    assert int(method.queue_filled) == 8 and torch.equal(method.queue[:, 4:], queued)
    calls.clear()
    method(_batch(seed=3))  # full queue: Sinkhorn over 8 queued + 4 batch rows
    assert calls == [((12, 16), 0.05, 3)] * 2
    queue = method.queue.clone()
    with torch.no_grad():  # a forward outside training leaves the queue alone
        method(_batch(seed=4))
    method.eval()
    method(_batch(seed=5))
    assert torch.equal(method.queue, queue)


def test_frozen_prototypes_are_listed_for_the_optimizer_to_skip():
    method = _build(freeze_prototypes_steps=2)
    assert method.frozen_parameters() == [method.prototypes.weight]
    method.after_step(1, 10)
    assert method.frozen_parameters() == [method.prototypes.weight]
    method.after_step(2, 10)
    assert method.frozen_parameters() == []
