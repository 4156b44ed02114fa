"""MoCo v3: ctr against a loop, the rank offset of the positives under data parallelism, the
frozen ViT patch projection, the momentum schedule and the heads' output batch norm."""

import math

import pytest
import torch

import selfsup.methods.mocov3 as mocov3
from selfsup.methods import METHODS, BuildContext
from selfsup.methods.mocov3 import mocov3_contrastive

TINY = {"proj_hidden_dim": 32, "proj_dim": 8, "pred_hidden_dim": 32}


def make_batch(b=4, size=16):
    g = torch.Generator().manual_seed(0)
    return {
        "image": torch.randint(0, 256, (b, 3, size, size), dtype=torch.uint8, generator=g),
        "label": torch.full((b,), -1),
        "index": torch.arange(b),
    }


def build(backbone="resnet18", **kwargs):
    torch.manual_seed(0)
    ctx = BuildContext(backbone, image_size=16, batch_size=4)
    return METHODS.get("mocov3").build(ctx, **{**TINY, **kwargs})


def ctr_by_loop(q, k, tau):
    total = 0.0
    for i in range(q.shape[0]):
        qi = q[i] / q[i].norm()
        sims = [float(qi @ (k[j] / k[j].norm())) / tau for j in range(k.shape[0])]
        total += -(sims[i] - math.log(sum(math.exp(s) for s in sims)))
    return 2 * tau * total / q.shape[0]


def test_ctr_matches_a_loop():
    torch.manual_seed(0)
    q, k = torch.randn(5, 6), torch.randn(5, 6)
    for tau in (0.2, 1.0):
        assert mocov3_contrastive(q, k, tau).item() == pytest.approx(ctr_by_loop(q, k, tau), 1e-5)


def test_each_process_finds_its_positives_at_its_rank_offset(monkeypatch):
    # Two processes simulated: the collective itself is tested with gloo in
    # tests/losses/test_distributed.py; here, which gathered key is each query's positive.
    torch.manual_seed(0)
    q, k = torch.randn(8, 6), torch.randn(8, 6)
    monkeypatch.setattr(mocov3, "gather_no_grad", lambda local: k)  # every process's keys
    losses = []
    for rank in (0, 1):
        monkeypatch.setattr(mocov3, "world_info", lambda rank=rank: (rank, 2))
        losses.append(
            mocov3_contrastive(q[4 * rank : 4 * rank + 4], k[4 * rank : 4 * rank + 4], 0.2)
        )
    # the mean over processes (what DDP optimises) is the loss of the whole batch
    assert (losses[0] + losses[1]).item() / 2 == pytest.approx(ctr_by_loop(q, k, 0.2), rel=1e-5)


def test_vit_patch_projection_is_frozen_and_temperature_follows_the_backbone():
    vit = build("vit_tiny_patch4")
    proj = vit.backbone.model.patch_embed.proj
    assert not proj.weight.requires_grad and not proj.bias.requires_grad
    grouped = {id(p) for g in vit.param_groups() for p in g["params"]}
    assert id(proj.weight) not in grouped
    assert vit.temperature == 0.2
    assert build("vit_tiny_patch4", temperature=0.5).temperature == 0.5
    # a step changes the rest of the ViT but not the patch projection
    before = proj.weight.clone()
    blocks_before = vit.backbone.model.blocks[0].mlp.fc1.weight.clone()
    vit(make_batch())["loss"].backward()
    torch.optim.SGD([p for g in vit.param_groups() for p in g["params"]], lr=0.1).step()
    assert torch.equal(proj.weight, before)
    assert not torch.equal(vit.backbone.model.blocks[0].mlp.fc1.weight, blocks_before)


def test_momentum_encoder_copies_backbone_and_projector_and_follows_the_cosine_schedule():
    m = build()
    online = [*m.backbone.parameters(), *m.projector.parameters()]
    target = [*m.momentum_backbone.parameters(), *m.momentum_projector.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(online, target, strict=True))
    assert not any(p.requires_grad for p in target)
    with torch.no_grad():
        for p in online:
            p.add_(torch.randn_like(p))
    for step, total in ((2, 8), (8, 8)):
        mom = 1 - (1 - 0.99) * (math.cos(math.pi * step / total) + 1) / 2
        before = [p.clone() for p in target]
        m.after_step(step, total)
        for old, q, k in zip(before, online, target, strict=True):
            torch.testing.assert_close(k, mom * old + (1 - mom) * q)
    assert mom == 1.0  # the last step leaves the momentum encoder where it was


def linears(head):
    return sum(isinstance(x, torch.nn.Linear) for x in head)


def ends_in_plain_bn(head):
    return isinstance(head[-1], torch.nn.BatchNorm1d) and not head[-1].affine


def test_heads_follow_the_resnet_and_the_vit_recipes():
    m = build()
    assert m.temperature == 1.0  # the ResNet recipe: 2-layer projector, predictor without out-BN
    assert (linears(m.projector), linears(m.predictor)) == (2, 2)
    assert ends_in_plain_bn(m.projector) and not ends_in_plain_bn(m.predictor)
    v = build("vit_tiny_patch4")
    assert v.temperature == 0.2  # the ViT recipe: 3-layer projector, BN on both outputs
    assert (linears(v.projector), linears(v.predictor)) == (3, 2)
    assert ends_in_plain_bn(v.projector) and ends_in_plain_bn(v.predictor)
