"""MoCo v2: InfoNCE against a loop, key encoder and queue invariants, EMA maths, split BN against
per-group batch norm by hand, shuffling BN on one and on two (gloo) processes, and the enqueue of
the keys gathered from two processes."""

import math

import pytest
import torch
import torch.nn.functional as F

from selfsup.losses import softmax_contrastive
from selfsup.methods import METHODS, BuildContext
from selfsup.methods.splitbn import SplitBatchNorm2d, shuffled
from selfsup.testing import spawn_gloo
from selfsup.views import EvalTransform

TINY = {"queue_size": 16, "proj_hidden_dim": 32, "proj_dim": 8, "bn_splits": 2}


def make_batch(b=4, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "image": torch.randint(0, 256, (b, 3, size, size), dtype=torch.uint8, generator=g),
        "label": torch.full((b,), -1),
        "index": torch.arange(b),
    }


def build(backbone="resnet18", **kwargs):
    torch.manual_seed(0)
    ctx = BuildContext(backbone, image_size=16, batch_size=4)
    return METHODS.get("moco").build(ctx, **{**TINY, **kwargs})


def test_infonce_matches_a_loop():
    torch.manual_seed(0)
    q, k, queue = torch.randn(3, 5), torch.randn(3, 5), F.normalize(torch.randn(7, 5), dim=1)
    tau = 0.2
    total = 0.0
    for i in range(3):
        qi = q[i] / q[i].norm()
        ki = k[i] / k[i].norm()
        pos = math.exp(float(qi @ ki) / tau)
        neg = sum(math.exp(float(qi @ queue[j]) / tau) for j in range(7))
        total += -math.log(pos / (pos + neg))
    # the loss MoCo's forward uses: the positive key at logit 0, the queue as negatives
    assert softmax_contrastive(q, k, queue, tau).item() == pytest.approx(total / 3, rel=1e-5)


def test_key_encoder_starts_as_an_exact_copy_and_does_not_train():
    m = build()
    for online, key in ((m.backbone, m.key_backbone), (m.projector, m.key_projector)):
        a, b = online.state_dict(), key.state_dict()
        assert a.keys() == b.keys()
        assert all(torch.equal(a[n], b[n]) for n in a)
        assert not any(p.requires_grad for p in key.parameters())
    norms = [mod for mod in m.key_backbone.modules() if isinstance(mod, torch.nn.BatchNorm2d)]
    assert norms and all(isinstance(mod, SplitBatchNorm2d) for mod in norms)


def test_queue_holds_the_last_keys_at_their_slots_and_the_pointer_advances():
    # A ViT (no batch norm) and a fixed transform make each key a function of its image alone.
    m = build("vit_tiny_patch4", queue_size=12)
    m.augment = EvalTransform(16)
    batches = [make_batch(seed=s)["image"] for s in range(4)]
    for t, images in enumerate(batches):
        m({"image": images})["loss"].backward()  # backward after the in-place enqueue works
        assert int(m.queue_ptr) == (t + 1) * 4 % 12
    with torch.no_grad():
        for t in (1, 2, 3):  # batch 0's slots 0-3 were overwritten by batch 3
            keys = F.normalize(m.key_projector(m.key_backbone(m.augment(batches[t]))), dim=1)
            slots = [(4 * t + i) % 12 for i in range(4)]
            torch.testing.assert_close(m.queue[slots], keys, atol=1e-5, rtol=1e-4)
    assert torch.allclose(m.queue.norm(dim=1), torch.ones(12))


def test_queue_size_must_be_a_multiple_of_the_global_batch():
    ctx = BuildContext("resnet18", image_size=16, batch_size=4, world_size=3)
    with pytest.raises(ValueError, match=r"queue_size 16 .* global batch 12"):
        METHODS.get("moco").build(ctx, **TINY)


def test_after_step_is_an_ema_with_momentum_0999():
    m = build()
    with torch.no_grad():
        for p in m.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p))
    online = [*m.backbone.parameters(), *m.projector.parameters()]
    key = [*m.key_backbone.parameters(), *m.key_projector.parameters()]
    before = [p.clone() for p in key]
    m.after_step(1, 10)
    for old, q, k in zip(before, online, key, strict=True):
        torch.testing.assert_close(k, 0.999 * old + 0.001 * q)


def test_split_bn_matches_batch_norm_per_group_by_hand():
    torch.manual_seed(0)
    bn = SplitBatchNorm2d(3, num_splits=2, momentum=0.1)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.0, 2.0, 0.5]))
        bn.bias.copy_(torch.tensor([0.0, -1.0, 3.0]))
    x = torch.randn(8, 3, 4, 4) * 3 + 1
    y = bn(x.contiguous(memory_format=torch.channels_last))
    means, variances = [], []
    for g in range(2):  # contiguous groups of B/G samples
        group = x[4 * g : 4 * g + 4].double()
        flat = group.permute(1, 0, 2, 3).reshape(3, -1)  # (C, B/G*H*W)
        mu, var = flat.mean(1), flat.var(1, unbiased=False)
        expected = (group - mu.view(1, 3, 1, 1)) / (var.view(1, 3, 1, 1) + 1e-5).sqrt()
        expected = expected * bn.weight.view(1, 3, 1, 1) + bn.bias.view(1, 3, 1, 1)
        out = y[4 * g : 4 * g + 4].double()
        torch.testing.assert_close(out, expected.detach(), atol=1e-5, rtol=1e-5)
        n = flat.shape[1]
        means.append(mu)
        variances.append(var * n / (n - 1))  # running statistics keep the unbiased variance
    # momentum 0.1 from the initial running mean 0 and variance 1, averaged over the groups
    torch.testing.assert_close(bn.running_mean.double(), 0.1 * (means[0] + means[1]) / 2)
    torch.testing.assert_close(
        bn.running_var.double(), 0.9 + 0.1 * (variances[0] + variances[1]) / 2
    )
    bn.eval()  # evaluation normalises with the running statistics
    mean, var = bn.running_mean.view(1, 3, 1, 1), bn.running_var.view(1, 3, 1, 1)
    expected = (x - mean) / (var + 1e-5).sqrt() * bn.weight.view(1, 3, 1, 1)
    torch.testing.assert_close(bn(x), (expected + bn.bias.view(1, 3, 1, 1)).detach())


def test_shuffled_encodes_a_permuted_batch_and_restores_the_order():
    torch.manual_seed(0)
    x = torch.arange(8.0).view(8, 1)
    seen = []

    def encode(v):
        seen.append(v.clone())
        return torch.cat([v, v * 10], dim=1)

    out = shuffled(encode, x)
    torch.testing.assert_close(out, torch.cat([x, x * 10], dim=1))
    assert not torch.equal(seen[0], x) and sorted(seen[0].view(-1).tolist()) == x.view(-1).tolist()


def _shuffle_worker(rank, world):
    torch.manual_seed(rank)  # different RNGs: the permutation must still be rank 0's
    x = torch.arange(4.0).view(4, 1) + 100 * rank  # (B, 1), distinct over both processes
    seen = []

    def encode(v):
        seen.append(v.view(-1).tolist())
        return v * 2

    out = shuffled(encode, x)
    return out.view(-1).tolist(), seen[0]


def test_shuffling_bn_across_two_processes():
    out = spawn_gloo(_shuffle_worker, world_size=2)
    for rank in (0, 1):  # each process gets its own samples' encodings back, in order
        assert out[rank][0] == [2 * (i + 100 * rank) for i in range(4)]
    every = sorted(out[0][1] + out[1][1])  # the two shares partition the global batch
    assert every == sorted([float(i + 100 * r) for r in (0, 1) for i in range(4)])
    assert out[0][1] != [0.0, 1.0, 2.0, 3.0]  # shuffled


def _enqueue_worker(rank, world):
    # The same model on both processes (one seed); each process its own batch.
    m = build("vit_tiny_patch4", queue_size=16)  # ViT: a key depends on its image alone
    m.augment = EvalTransform(16)
    images = make_batch(seed=10 + rank)["image"]
    m({"image": images})["loss"].backward()
    with torch.no_grad():
        keys = F.normalize(m.key_projector(m.key_backbone(m.augment(images))), dim=1)
    return m.queue.clone(), int(m.queue_ptr), keys


def test_every_process_enqueues_the_keys_of_the_global_batch_in_rank_order():
    out = spawn_gloo(_enqueue_worker, world_size=2)
    (queue0, ptr0, keys0), (queue1, ptr1, keys1) = out
    assert ptr0 == ptr1 == 8  # 2 processes x 4 keys
    torch.testing.assert_close(queue0, queue1)  # one queue, replicated
    torch.testing.assert_close(queue0[:4], keys0, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(queue0[4:8], keys1, atol=1e-5, rtol=1e-4)
