"""Two-view losses by name: each against a loop over the 2N views, equal across two gloo
processes to the single-process global loss, and each training SimCLR for one step."""

import math

import numpy as np
import pytest
import torch

from selfsup.losses.contrastive import NTXentLoss
from selfsup.losses.nce import softmax_contrastive
from selfsup.losses.registry import CONTRASTIVE_LOSSES, create_contrastive_loss
from selfsup.testing import gloo_loss_and_grads

# selfsup.methods is imported inside the tests: the spawned gloo workers import this module and
# should not pay for every method and backbone.

ARGS = {
    "nt_xent": {"temperature": 0.3},
    "triplet": {"margin": 0.5, "mining": "batch_hard"},
    "nce": {"temperature": 0.3},
    "softmax": {"temperature": 0.3},
}


def unit(z):
    z = z.double().numpy()
    return z / np.linalg.norm(z, axis=1, keepdims=True)


def triplet_ref(z1, z2, margin, mining):
    """Views 0..N-1 = first views, N..2N-1 = second views; view v's positive is (v + N) % 2N."""
    z = np.concatenate([unit(z1), unit(z2)])
    n2 = len(z)
    d = np.sqrt(((z[:, None] - z[None]) ** 2).sum(-1))
    terms = []
    for a in range(n2):
        p = (a + n2 // 2) % n2
        negs = [d[a, k] for k in range(n2) if k not in (a, p)]
        if mining == "batch_hard":
            terms.append(max(d[a, p] - min(negs) + margin, 0.0))
        elif mining == "semi_hard":
            semi = [x for x in negs if d[a, p] < x < d[a, p] + margin]
            terms.append(max(d[a, p] - (min(semi) if semi else min(negs)) + margin, 0.0))
        else:
            terms.extend(max(d[a, p] - x + margin, 0.0) for x in negs)
    return np.mean(terms)


def nce_ref(z1, z2, tau):
    """Each view against the 2N - 1 others: P = exp(s / t) / Z with Z = M * mean exp over the
    noise, h = P / (P + K / M), loss = -log h(partner) - sum log(1 - h(noise))."""
    z = np.concatenate([unit(z1), unit(z2)])
    n2 = len(z)
    m, k = n2 - 1, n2 - 2
    total = 0.0
    for a in range(n2):
        p = (a + n2 // 2) % n2
        noise = [math.exp(z[a] @ z[j] / tau) for j in range(n2) if j not in (a, p)]
        big_z = m * sum(noise) / k
        h = (math.exp(z[a] @ z[p] / tau) / big_z) / (math.exp(z[a] @ z[p] / tau) / big_z + k / m)
        total -= math.log(h)
        total -= sum(math.log(1 - (e / big_z) / (e / big_z + k / m)) for e in noise)
    return total / n2


def softmax_ref(z1, z2, tau):
    q, k = unit(z1), unit(z2)
    return np.mean(
        [
            -math.log(math.exp(q[i] @ k[i] / tau) / sum(math.exp(q[i] @ kj / tau) for kj in k))
            for i in range(len(q))
        ]
    )


@pytest.mark.parametrize("mining", ["batch_hard", "semi_hard", "all"])
def test_triplet_matches_loop(mining):
    torch.manual_seed(0)
    z1, z2 = torch.randn(5, 4), torch.randn(5, 4)
    loss = create_contrastive_loss("triplet", {"margin": 0.5, "mining": mining})
    assert float(loss(z1, z2)) == pytest.approx(triplet_ref(z1, z2, 0.5, mining), rel=1e-5)


def test_nce_matches_loop():
    torch.manual_seed(1)
    z1, z2 = torch.randn(5, 4), torch.randn(5, 4)
    got = create_contrastive_loss("nce", {"temperature": 0.2})(z1, z2)
    assert float(got) == pytest.approx(nce_ref(z1, z2, 0.2), rel=1e-5)


def test_softmax_matches_loop_and_the_building_block():
    torch.manual_seed(2)
    z1, z2 = torch.randn(5, 4), torch.randn(5, 4)
    got = create_contrastive_loss("softmax", {"temperature": 0.2})(z1, z2)
    assert float(got) == pytest.approx(softmax_ref(z1, z2, 0.2), rel=1e-5)
    others = torch.stack([torch.cat([z2[:i], z2[i + 1 :]]) for i in range(5)])  # (B, B-1, D)
    assert torch.allclose(got, softmax_contrastive(z1, z2, others, 0.2), atol=1e-6)


def test_registry_names_and_did_you_mean():
    assert set(CONTRASTIVE_LOSSES.names()) == set(ARGS)
    with pytest.raises(KeyError, match="Did you mean 'nt_xent'"):
        create_contrastive_loss("ntxent")
    with pytest.raises(ValueError, match="margn"):
        create_contrastive_loss("triplet", {"margn": 0.1})
    with pytest.raises(ValueError, match="semi_hard"):
        create_contrastive_loss("triplet", {"mining": "hardest"})


@pytest.mark.parametrize("name", sorted(ARGS))
def test_bf16_autocast_gives_finite_fp32_loss(name):
    torch.manual_seed(3)
    z1, z2 = torch.randn(6, 8).bfloat16(), torch.randn(6, 8).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = create_contrastive_loss(name, ARGS[name])(z1, z2)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


@pytest.mark.parametrize("name", ["triplet", "nce", "softmax"])
def test_two_process_losses_match_single_process(name):
    torch.manual_seed(4)
    z1, z2 = torch.randn(8, 6), torch.randn(8, 6)
    criterion = create_contrastive_loss(name, ARGS[name])
    loss, grad1, grad2 = gloo_loss_and_grads(criterion, z1, z2, world_size=2)
    a, c = z1.clone().requires_grad_(True), z2.clone().requires_grad_(True)
    expected = criterion(a, c)
    expected.backward()
    assert float(loss) == pytest.approx(float(expected.detach()), abs=1e-5), name
    # DDP averages the processes' gradients; gathered keys send theirs back to the owner
    assert torch.allclose(grad1, a.grad, atol=1e-6) and torch.allclose(grad2, c.grad, atol=1e-6)


def simclr(**kwargs):
    from selfsup.methods import METHODS, BuildContext

    ctx = BuildContext("resnet18", image_size=16, batch_size=4)
    return METHODS.get("simclr").build(ctx, proj_hidden_dim=32, proj_dim=16, **kwargs)


def test_loss_choice_and_temperature_reach_the_criterion():
    method = simclr(temperature=0.5)
    assert type(method.criterion) is NTXentLoss and method.criterion.temperature == 0.5
    # loss_args win over the method's temperature
    method = simclr(loss="nce", temperature=0.2, loss_args={"temperature": 0.07})
    assert method.criterion.temperature == 0.07
    with pytest.raises(KeyError, match="Did you mean 'softmax'"):
        simclr(loss="softmx")


def test_default_simclr_loss_is_nt_xent_of_the_projections():
    """Bit-identical default: the criterion is nt_xent(z1, z2, 0.1) of the two projected views."""
    from selfsup.losses import nt_xent

    torch.manual_seed(5)
    method = simclr()
    assert type(method.criterion) is NTXentLoss and method.criterion.temperature == 0.1
    images = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
    torch.manual_seed(6)
    loss = method({"image": images})["loss"]
    torch.manual_seed(6)
    views = torch.cat([method.augment(images), method.augment(images)])
    z1, z2 = method.projector(method.backbone(views)).chunk(2)
    assert torch.equal(loss, nt_xent(z1, z2, 0.1))


@pytest.mark.parametrize("name", sorted(ARGS))
def test_each_loss_trains_simclr_one_step(name):
    torch.manual_seed(7)
    method = simclr(loss=name, loss_args=ARGS[name])
    batch = {
        "image": torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8),
        "label": torch.full((4,), -1),
        "index": torch.arange(4),
    }
    opt = torch.optim.SGD(method.parameters(), lr=0.1)
    loss = method(batch)["loss"]
    assert torch.isfinite(loss)
    loss.backward()
    missing = [n for n, p in method.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"no gradient reached {missing[:5]}"
    before = method.projector[0].weight.detach().clone()
    opt.step()
    assert not torch.equal(before, method.projector[0].weight)
    method.after_step(1, 10)
    method.eval()
    feats = method.embed(batch)
    assert feats.shape == (4, method.backbone.dim) and torch.isfinite(feats).all()
