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
