"""Gathered contrastive losses under two gloo processes equal the single-process global loss,
and the gradients reach every process's samples."""

from functools import partial

import pytest
import torch

from selfsup.losses import clip_loss, nt_xent
from selfsup.testing import gloo_loss_and_grads

LOSSES = {
    "nt_xent": partial(nt_xent, temperature=0.2),
    "clip": partial(clip_loss, logit_scale=torch.tensor(10.0)),
}


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_two_process_losses_match_single_process(name):
    torch.manual_seed(0)
    z1, z2 = torch.randn(8, 6), torch.randn(8, 6)
    loss, grad1, grad2 = gloo_loss_and_grads(LOSSES[name], z1, z2, world_size=2)
    a, c = z1.clone().requires_grad_(True), z2.clone().requires_grad_(True)
    expected = LOSSES[name](a, c)
    expected.backward()
    assert float(loss) == pytest.approx(float(expected.detach()), abs=1e-5)
    # Local grads only hold the local query terms; the key terms arrive through the gather's
    # backward, which sums them into the owner's grad.
    assert torch.allclose(grad1, a.grad, atol=1e-6) and torch.allclose(grad2, c.grad, atol=1e-6)


def test_a_failing_process_is_reported():
    from selfsup.testing import spawn_gloo

    with pytest.raises(RuntimeError, match="gloo process"):
        spawn_gloo(_fail, world_size=2, timeout=60)


def _fail(rank, world):
    raise ValueError("boom")


def _gathered_grad(rank, world, fallback):
    from selfsup.losses import distributed

    if fallback:  # a backend without single-tensor collectives

        def unsupported(*args, **kwargs):
            raise RuntimeError("not supported by this backend")

        distributed._all_gather_single = distributed._reduce_scatter_single = unsupported
    x = torch.arange(6.0).view(3, 2).add(10 * rank).requires_grad_(True)  # (B, D)
    gathered = distributed.gather_with_grad(x)  # (W * B, D)
    weights = torch.arange(gathered.numel(), dtype=torch.float).view_as(gathered) * (rank + 1)
    (gathered * weights).sum().backward()
    return gathered.detach(), x.grad


@pytest.mark.parametrize("fallback", [False, True], ids=["reduce-scatter", "all-reduce"])
def test_gather_with_grad_returns_each_process_its_summed_slice(fallback):
    from selfsup.testing import spawn_gloo

    out = spawn_gloo(_gathered_grad, fallback, world_size=2, timeout=60)
    rows = torch.cat([torch.arange(6.0).view(3, 2), torch.arange(6.0).view(3, 2) + 10])
    weights = torch.arange(12.0).view(6, 2)
    for rank, (gathered, grad) in enumerate(out):
        assert torch.equal(gathered, rows)
        # d/dx of sum_r (r + 1) * <gathered, w>: the summed weights (1 + 2) at this rank's rows
        assert torch.equal(grad, 3 * weights[3 * rank : 3 * rank + 3])
