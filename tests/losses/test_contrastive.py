import math

import torch
import torch.nn.functional as F

from selfsup.losses import ClipLoss, clip_loss, nt_xent


def nt_xent_reference(z1, z2, tau):
    """Eq. 1 of SimCLR written out with loops over the 2N anchors."""
    z = F.normalize(torch.cat([z1, z2]), dim=1).double()
    n = z1.shape[0]
    total = 0.0
    for i in range(2 * n):
        j = (i + n) % (2 * n)
        sims = [math.exp(float(z[i] @ z[k]) / tau) for k in range(2 * n) if k != i]
        total += -math.log(math.exp(float(z[i] @ z[j]) / tau) / sum(sims))
    return total / (2 * n)


def test_nt_xent_matches_paper_formula():
    torch.manual_seed(0)
    z1, z2 = torch.randn(6, 5), torch.randn(6, 5)
    for tau in (0.1, 0.5, 1.0):
        assert math.isclose(
            float(nt_xent(z1, z2, tau)), nt_xent_reference(z1, z2, tau), rel_tol=1e-5
        )


def test_nt_xent_low_for_matching_views_and_symmetric():
    torch.manual_seed(0)
    z = torch.randn(8, 16)
    aligned = nt_xent(z, z + 0.01 * torch.randn_like(z), 0.1)
    random = nt_xent(z, torch.randn(8, 16), 0.1)
    assert aligned < random
    z2 = torch.randn(8, 16)
    assert torch.allclose(nt_xent(z, z2, 0.2), nt_xent(z2, z, 0.2))


def test_nt_xent_gradient_flows_to_both_views():
    z1 = torch.randn(4, 8, requires_grad=True)
    z2 = torch.randn(4, 8, requires_grad=True)
    nt_xent(z1, z2, 0.5).backward()
    assert z1.grad.abs().sum() > 0 and z2.grad.abs().sum() > 0


def clip_reference(img, txt, scale):
    img = F.normalize(img, dim=1).double()
    txt = F.normalize(txt, dim=1).double()
    n = img.shape[0]
    logits = scale * img @ txt.T
    i2t = -sum(logits[i, i] - torch.logsumexp(logits[i], 0) for i in range(n)) / n
    t2i = -sum(logits[i, i] - torch.logsumexp(logits[:, i], 0) for i in range(n)) / n
    return float((i2t + t2i) / 2)


def test_clip_loss_matches_reference():
    torch.manual_seed(1)
    img, txt = torch.randn(7, 4), torch.randn(7, 4)
    assert math.isclose(
        float(clip_loss(img, txt, torch.tensor(14.3))), clip_reference(img, txt, 14.3), rel_tol=1e-5
    )


def test_clip_temperature_init_and_clamp():
    loss = ClipLoss()
    assert math.isclose(float(loss.log_scale.detach().exp()), 1 / 0.07, rel_tol=1e-6)
    with torch.no_grad():
        loss.log_scale.fill_(10.0)
    loss.clamp_()
    assert math.isclose(float(loss.log_scale.detach().exp()), 100.0, rel_tol=1e-5)
