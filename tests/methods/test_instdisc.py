"""Instance discrimination: memory-bank update, the fixed normalising constant, the NCE loss
against an independent formula, and a training step."""

import math

import pytest
import torch
import torch.nn.functional as F

from selfsup.methods import METHODS, BuildContext

TINY = {"feature_dim": 8, "num_negatives": 16}
N = 20


def build(**kwargs):
    ctx = BuildContext("resnet18", image_size=16, batch_size=4, num_samples=N)
    return METHODS.get("instdisc").build(ctx, **{**TINY, **kwargs})


def make_batch(index=(3, 7, 11, 19)):
    g = torch.Generator().manual_seed(0)
    return {
        "image": torch.randint(0, 256, (len(index), 3, 16, 16), dtype=torch.uint8, generator=g),
        "label": torch.full((len(index),), -1),
        "index": torch.tensor(index),
    }


def test_training_step_reaches_every_parameter_and_embeds():
    torch.manual_seed(0)
    method = build()
    batch = make_batch()
    out = method(batch)
    assert math.isfinite(float(out["loss"].detach()))
    out["loss"].backward()
    missing = [n for n, p in method.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing
    assert not any(b.requires_grad for b in method.buffers())
    method.after_step(1, 10)
    method.eval()
    feats = method.embed(batch)
    assert feats.shape == (4, method.backbone.dim) and torch.isfinite(feats).all()


def test_bank_update_follows_the_momentum_formula_at_the_batch_indices_only():
    torch.manual_seed(0)
    method = build(bank_momentum=0.5)
    batch = make_batch()
    before = method.bank.clone()
    method(batch)
    (index, f) = method._pending[0]
    f = f.clone()
    method.after_step(1, 10)
    rows = batch["index"]
    expected = 0.5 * before[rows] + 0.5 * f
    expected = expected / expected.norm(dim=1, keepdim=True)
    assert torch.allclose(method.bank[rows], expected, atol=1e-6)
    others = torch.ones(N, dtype=torch.bool)
    others[rows] = False
    assert torch.equal(method.bank[others], before[others])
    assert torch.allclose(method.bank.norm(dim=1), torch.ones(N), atol=1e-6)
    assert not method.bank.requires_grad and method.bank.grad_fn is None


def test_bank_written_once_per_optimizer_step_under_accumulation():
    torch.manual_seed(0)
    method = build()
    first, second = make_batch((0, 1, 2, 3)), make_batch((4, 5, 6, 7))
    before = method.bank.clone()
    method(first)
    method(second)  # two micro-batches, one optimizer step
    assert torch.equal(method.bank, before)  # nothing written during forward
    feats = torch.cat([f for _, f in method._pending])
    method.after_step(1, 10)
    method.after_step(2, 10)  # no micro-batch since: nothing more to write
    rows = torch.arange(8)
    expected = F.normalize(0.5 * before[rows] + 0.5 * feats, dim=1)
    assert torch.allclose(method.bank[rows], expected, atol=1e-6)


def test_no_bank_update_outside_training():
    method = build()
    method.eval()
    with torch.no_grad():
        method(make_batch())
    assert method._pending == []


def spy_noise(method, monkeypatch):
    """Record the bank rows each forward draws as noise."""
    draws = []
    real = method._draw_noise

    def spy(device):
        draws.append(real(device))
        return draws[-1]

    monkeypatch.setattr(method, "_draw_noise", spy)
    return draws


def test_z_estimated_from_the_first_batch_then_fixed_with_momentum_one(monkeypatch):
    torch.manual_seed(0)
    method = build(z_momentum=1.0)  # the paper's fixed Z
    draws = spy_noise(method, monkeypatch)
    assert float(method.z) == 0.0
    method(make_batch())
    z = float(method.z)
    # Z = N * mean over the batch and the K noise rows of exp(v . f / t)
    _, f = method._pending[0]
    noise_rows = method.bank[draws[0]].double()  # the bank is not yet updated
    expected = N * torch.exp(f.double() @ noise_rows.T / 0.07).mean()
    assert z == pytest.approx(float(expected), rel=1e-4)
    method.after_step(1, 10)
    method(make_batch((0, 1, 2, 3)))
    method.after_step(2, 10)
    assert float(method.z) == z


def test_loss_equals_the_nce_formula_of_the_paper(monkeypatch):
    """Wu et al. section 3.2 with probabilities: P(i|f) = exp(v_i . f / t) / Z,
    h = P / (P + K / N), loss = -log h(positive) - sum_k log(1 - h(noise_k))."""
    torch.manual_seed(0)
    method = build(temperature=0.1, z_momentum=1.0)
    draws = spy_noise(method, monkeypatch)
    method.z.fill_(3.0)  # a known constant instead of the first-batch estimate
    batch = make_batch()
    loss = float(method(batch)["loss"].detach())
    _, f = method._pending[0]
    bank, k = method.bank.double(), TINY["num_negatives"]
    total = 0.0
    for b, i in enumerate(batch["index"].tolist()):
        p_pos = math.exp(float(bank[i] @ f[b].double()) / 0.1) / 3.0
        term = -math.log(p_pos / (p_pos + k / N))
        for j in draws[0].tolist():
            p = math.exp(float(bank[j] @ f[b].double()) / 0.1) / 3.0
            term -= math.log(1 - p / (p + k / N))
        total += term
    assert loss == pytest.approx(total / 4, rel=1e-5)


@pytest.mark.parametrize("z_momentum", [0.0, 0.9])
def test_z_follows_each_training_batch_by_default(monkeypatch, z_momentum):
    torch.manual_seed(0)
    method = build(z_momentum=z_momentum)
    draws = spy_noise(method, monkeypatch)
    zs = []
    for step, index in enumerate([(3, 7, 11, 19), (0, 1, 2, 3)]):
        bank = method.bank.double().clone()  # before this step's update
        method(make_batch(index))
        _, f = method._pending[0]
        estimate = N * torch.exp(f.double() @ bank[draws[step]].T / 0.07).mean()
        method.after_step(step + 1, 10)
        zs.append(float(estimate))
    expected = z_momentum * zs[0] + (1 - z_momentum) * zs[1]
    assert float(method.z) == pytest.approx(expected, rel=1e-4)
    method.eval()  # evaluation reads Z, never updates it
    with torch.no_grad():
        method(make_batch())
    assert float(method.z) == pytest.approx(expected, rel=1e-4)


def test_proximal_term_adds_lambda_times_the_squared_distance_to_the_bank_row(monkeypatch):
    torch.manual_seed(0)
    method = build(z_momentum=1.0)
    spy_noise(method, monkeypatch)
    batch = make_batch()
    torch.manual_seed(1)
    plain = float(method(batch)["loss"].detach())
    _, f = method._pending[0]
    method.proximal = 50.0
    torch.manual_seed(1)
    with_term = float(method(batch)["loss"].detach())
    distance = (f - method.bank[batch["index"]]).pow(2).sum(1).mean()
    assert with_term - plain == pytest.approx(50.0 * float(distance), rel=1e-4)


def test_softmax_loss_is_cross_entropy_over_the_positive_and_the_noise_rows(monkeypatch):
    torch.manual_seed(0)
    method = build(loss="softmax", temperature=0.1)
    draws = spy_noise(method, monkeypatch)
    batch = make_batch()
    loss = float(method(batch)["loss"].detach())
    _, f = method._pending[0]
    bank = method.bank.double()
    total = 0.0
    for b, i in enumerate(batch["index"].tolist()):
        pos = math.exp(float(bank[i] @ f[b].double()) / 0.1)
        negs = sum(math.exp(float(bank[j] @ f[b].double()) / 0.1) for j in draws[0].tolist())
        total -= math.log(pos / (pos + negs))
    assert loss == pytest.approx(total / 4, rel=1e-5)
    assert float(method.z) == 0.0  # no normalising constant in the softmax form


def test_head_centres_each_embedding_dimension_over_the_batch():
    """The default head ends in batch norm without affine parameters, so the embeddings of a
    training batch share no common component (the collapse it prevents: module docstring)."""
    torch.manual_seed(0)
    method = build()
    assert isinstance(method.head[-1], torch.nn.BatchNorm1d) and not method.head[-1].affine
    image = method.augment(make_batch()["image"])
    out = method.head(method.backbone(image))
    assert torch.allclose(out.mean(0), torch.zeros(out.shape[1]), atol=1e-5)
    plain = build(head_bn=False)
    assert isinstance(plain.head, torch.nn.Linear) and plain.head.bias is not None
    with pytest.raises(ValueError, match="loss"):
        build(loss="hinge")


def test_missing_num_samples_or_index_raise_clear_errors():
    with pytest.raises(ValueError, match="number of training samples"):
        METHODS.get("instdisc").build(BuildContext("resnet18", image_size=16), **TINY)
    method = build()
    with pytest.raises(ValueError, match="index"):
        method(make_batch((-1, -1, -1, -1)))
    with pytest.raises(ValueError, match="index"):
        method(make_batch((0, 1, 2, N)))
    batch = make_batch()
    del batch["index"]
    with pytest.raises(ValueError, match="index"):
        method(batch)


def test_bf16_autocast_gives_a_finite_loss():
    torch.manual_seed(0)
    method = build()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = method(make_batch())
    assert out["loss"].dtype == torch.float32 and torch.isfinite(out["loss"])
    method.after_step(1, 10)
    assert method.bank.dtype == torch.float32
    assert torch.allclose(method.bank.norm(dim=1), torch.ones(N), atol=1e-5)


def test_checkpoint_carries_bank_and_z():
    method = build()
    method(make_batch())
    method.after_step(1, 10)
    state = method.state_dict()
    assert {"bank", "z"} <= set(state)
    fresh = build()
    fresh.load_state_dict(state)
    assert torch.equal(fresh.bank, method.bank) and float(fresh.z) == float(method.z)


class TwoProcessWorld:
    """Stands in for ``torch.distributed`` as rank 0 of two processes: collectives combine the
    local tensor with the tensors the other process would contribute, in call order (a real
    spawn of two gloo processes costs more than this file's time budget on a shared CPU)."""

    def __init__(self, peer):
        self.peer = list(peer)

    def is_available(self):
        return True

    def is_initialized(self):
        return True

    def get_world_size(self):
        return 2

    def get_rank(self):
        return 0

    def all_gather(self, out, x):
        out[0].copy_(x)
        out[1].copy_(self.peer.pop(0))

    def all_reduce(self, x):
        x.add_(self.peer.pop(0))


def test_bank_update_and_z_gather_every_process(monkeypatch):
    import selfsup.losses.distributed as distributed
    import selfsup.methods.instdisc as instdisc

    torch.manual_seed(0)
    method = build()
    before = method.bank.clone()
    feats = F.normalize(torch.randn(2, 4, TINY["feature_dim"]), dim=2)  # (process, B, D)
    method._pending = [(torch.arange(4), feats[0])]
    peer_z = torch.tensor(N * math.exp(1.0))
    world = TwoProcessWorld([torch.arange(4, 8), feats[1], peer_z])
    monkeypatch.setattr(instdisc, "dist", world)
    monkeypatch.setattr(distributed, "dist", world)
    method.after_step(1, 10)
    # the other process's rows are written too, so every process keeps the same bank
    expected = before.clone()
    expected[:8] = F.normalize(0.5 * before[:8] + 0.5 * feats.reshape(8, -1), dim=1)
    assert torch.allclose(method.bank, expected, atol=1e-6)
    # Z: the mean of the processes' estimates (here N * e^0 locally and N * e^1 on the peer)
    method._estimate_z(torch.zeros(4, 16))
    assert float(method.z) == pytest.approx(N * (1.0 + math.exp(1.0)) / 2)


def test_a_skipped_step_writes_nothing_to_the_bank():
    method = build()
    before = method.bank.clone()
    method(make_batch())
    method.discard_step()
    method.after_step(1, 10)
    assert torch.equal(method.bank, before)
