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


def _token_losses(rank, world, logits, targets, replaced, real, split):
    """This process's rows of the token losses (split at ``split``), backpropagated and scaled
    as DDP averages gradients."""
    from selfsup.losses.classification import masked_lm_loss, replaced_token_detection_loss

    rows = slice(0, split) if rank == 0 else slice(split, None)
    mine = logits[rows].clone().requires_grad_(True)
    mlm, mlm_acc = masked_lm_loss(mine, targets[rows])
    scores = mine[:, 0].view(1, -1)  # (1, N) one "sequence" of discriminator scores
    rtd, rtd_acc = replaced_token_detection_loss(
        scores, replaced[rows].view(1, -1), real[rows].view(1, -1)
    )
    (mlm + rtd).backward()
    return torch.stack([mlm, mlm_acc, rtd, rtd_acc]).detach(), mine.grad / world


def test_token_means_over_processes_equal_one_process_on_the_whole_batch():
    # The processes hold 3 and 9 tokens (the MLM draw differs by process), and 2 of the first
    # process's tokens are padding: per-process means would weight them differently.
    torch.manual_seed(0)
    logits, targets = torch.randn(12, 5), torch.randint(0, 5, (12,))
    replaced, real = torch.rand(12) < 0.3, torch.ones(12)
    real[1:3] = 0
    from selfsup.losses.classification import masked_lm_loss, replaced_token_detection_loss
    from selfsup.testing import spawn_gloo

    out = spawn_gloo(_token_losses, logits, targets, replaced, real, 3, world_size=2, timeout=60)
    whole = logits.clone().requires_grad_(True)
    mlm, mlm_acc = masked_lm_loss(whole, targets)
    rtd, rtd_acc = replaced_token_detection_loss(
        whole[:, 0].view(1, -1), replaced.view(1, -1), real.view(1, -1)
    )
    (mlm + rtd).backward()
    expected = torch.stack([mlm, mlm_acc, rtd, rtd_acc]).detach()
    figures = (out[0][0] + out[1][0]) / 2  # the loop logs the mean over the processes
    assert torch.allclose(figures, expected, atol=1e-6)
    grads = torch.cat([out[0][1], out[1][1]])  # each process's rows, DDP-averaged
    assert torch.allclose(grads, whole.grad, atol=1e-7)
