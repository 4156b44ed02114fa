"""The loop with a toy method: accumulation, clipping, NaN handling, after_step and budgets."""

import time

import pytest
import torch
from lightning_fabric import Fabric
from torch import nn

from selfsup.config import parse_budget
from selfsup.engine.guard import Interrupted, NonFiniteLossError
from selfsup.engine.loader import EpochLoader
from selfsup.engine.logging import MetricLogger
from selfsup.engine.loop import Loop, LoopSettings, TrainState


class Toy(nn.Module):
    """Least squares on a linear map: no batch statistics, so batches can be split exactly."""

    def __init__(self, poison_at=None):
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(3, 1)
        self.calls = []
        self.poison_at = poison_at
        self.forwards = 0

    def forward(self, batch):
        self.forwards += 1
        loss = ((self.linear(batch["x"]).squeeze(1) - batch["y"]) ** 2).mean()
        if self.poison_at == self.forwards:
            loss = loss * float("nan")
        return {"loss": loss}

    def after_step(self, step, total):
        self.calls.append((step, total))


def data(n=32):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 3, generator=g)
    return [{"x": x[i], "y": x[i].sum()} for i in range(n)]


def train(tmp_path, batch, accumulate=1, steps=4, clip=None, method=None, budget=None, probe=None,
          logger=None, knn=None, optimizer=torch.optim.SGD, state=None, save=None, loader=None,
          **settings):  # fmt: skip
    fabric = Fabric(accelerator="cpu", devices=1)
    method = method or Toy()
    opt = optimizer(method.parameters(), lr=0.1)
    for group in opt.param_groups:
        group["base_lr"] = 0.1
    model, opt = fabric.setup(method, opt)
    loader = loader or EpochLoader(data(), batch, shuffle=False)
    settings = LoopSettings(
        budget=parse_budget(budget or f"{steps}steps"),
        accumulate=accumulate,
        warmup=0.0,
        clip_grad=clip,
        progress=False,
        **{"log_every": 1, **settings},
    )
    loop = Loop(
        fabric,
        model,
        method,
        opt,
        loader,
        settings,
        logger or MetricLogger(tmp_path, enabled=False),
        save or (lambda s: None),
        batch * accumulate,
        probe,
        knn,
    )
    return method, loop.run(state or TrainState())


class ShortStream(torch.utils.data.IterableDataset):
    def __iter__(self):
        yield from data(3)


def test_a_stream_short_of_one_batch_is_counted_and_stops_with_a_data_error(tmp_path):
    from selfsup.data.source import DataError

    loader = EpochLoader(ShortStream(), 4)
    state = torch.get_rng_state()
    assert loader.first_examples() == 3 and torch.equal(torch.get_rng_state(), state)
    with pytest.raises(DataError, match="no complete batch in a whole epoch.*lower batch_size"):
        train(tmp_path, batch=4, loader=loader)


def test_accumulation_equals_the_large_batch(tmp_path):
    small, _ = train(tmp_path, batch=4, accumulate=2)
    large, _ = train(tmp_path, batch=8, accumulate=1)
    for a, b in zip(small.parameters(), large.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def test_after_step_once_per_optimizer_step_and_data_position(tmp_path):
    method, state = train(tmp_path, batch=4, accumulate=2, steps=3)
    assert method.calls == [(1, 3), (2, 3), (3, 3)]
    assert (state.epoch, state.batch_in_epoch) == (0, 6) and state.samples == 24
    method, state = train(tmp_path, batch=8, steps=5)  # 4 batches per epoch
    assert (state.epoch, state.batch_in_epoch) == (1, 1)


def test_epoch_budget(tmp_path):
    method, state = train(tmp_path, batch=8, budget="2epochs")
    assert state.step == 8 and method.calls[-1] == (8, 8)


def test_gradient_clipping_bounds_the_update(tmp_path):
    before = [p.detach().clone() for p in Toy().parameters()]
    method, _ = train(tmp_path, batch=8, steps=1, clip=1e-3)
    change = torch.cat(
        [(p.detach() - b).flatten() for p, b in zip(method.parameters(), before, strict=True)]
    )
    assert change.norm() <= 0.1 * 1e-3 + 1e-7  # lr * max_norm


def test_nan_loss_stops_with_a_clear_message(tmp_path):
    with pytest.raises(NonFiniteLossError, match="step 2"):
        train(tmp_path, batch=8, steps=4, method=Toy(poison_at=2))


class PoisonedGradient(Toy):
    """A finite loss whose gradient is infinite at the given forward; writes a buffer as MoCo's
    queue or batch norm's statistics do."""

    def __init__(self, poison_at=None):
        super().__init__(poison_at=None)
        self.grad_poison_at = poison_at
        self.register_buffer("seen", torch.zeros(()))

    def forward(self, batch):
        self.forwards += 1
        self.seen += 1
        prediction = self.linear(batch["x"]).squeeze(1)
        if self.grad_poison_at == self.forwards:
            prediction.register_hook(lambda g: g * float("inf"))
        return {"loss": ((prediction - batch["y"]) ** 2).mean()}


def test_infinite_gradient_with_finite_loss_stops(tmp_path):
    with pytest.raises(NonFiniteLossError, match="gradient norm is (inf|nan) at step 3"):
        train(tmp_path, batch=8, steps=4, method=PoisonedGradient(poison_at=3))


def test_skip_mode_drops_the_step_and_its_buffer_writes(tmp_path):
    # The run with a poisoned second batch equals a run that never saw that batch: same number
    # of updates, batches 1, 3, 4, 5; the buffer counts only the kept forwards.
    lines = Recorder(tmp_path)
    skipped, state = train(tmp_path, batch=4, steps=4, method=Toy(poison_at=2),
                           nonfinite="skip", logger=lines)  # fmt: skip
    assert state.step == 4 and state.skipped_steps == 1 and state.batch_in_epoch == 5
    assert all(torch.isfinite(p).all() for p in skipped.parameters())
    assert lines.lines[-1][1]["skipped_steps"] == 1
    assert all(torch.isfinite(torch.tensor(m["loss"])) for _, m in lines.lines)
    grad, state = train(tmp_path, batch=4, steps=4, method=PoisonedGradient(poison_at=2),
                        nonfinite="skip")  # fmt: skip
    assert state.skipped_steps == 1 and float(grad.seen) == 4  # 5 forwards, one undone
    assert all(torch.isfinite(p).all() for p in grad.parameters())


class FrozenBias(PoisonedGradient):
    """Its bias is frozen for the first ``frozen`` steps (as DINO's last layer); keeps the
    forwards of a step for after_step (as DINO's centre) and forgets them on a skipped step."""

    def __init__(self, frozen, poison_at=None):
        super().__init__(poison_at=poison_at)
        self.frozen, self.pending, self.kept, self.steps = frozen, [], [], 0

    def forward(self, batch):
        self.pending.append(len(batch["x"]))
        return super().forward(batch)

    def frozen_parameters(self):
        return [self.linear.bias] if self.steps < self.frozen else []

    def discard_step(self):
        self.pending = []

    def after_step(self, step, total):
        self.kept.append(sum(self.pending))
        self.pending, self.steps = [], step


def test_frozen_parameters_are_left_to_the_optimizer_untouched(tmp_path):
    # AdamW with weight decay: a zero gradient would still decay the bias and count Adam steps
    bias = Toy().linear.bias.detach().clone()
    made = []

    def adamw(params, lr):
        made.append(torch.optim.AdamW(params, lr=lr, weight_decay=0.5))
        return made[-1]

    method, _ = train(tmp_path, batch=8, steps=3, method=FrozenBias(frozen=3), optimizer=adamw)
    assert torch.equal(method.linear.bias.detach(), bias)
    assert method.linear.bias not in made[-1].state  # no moments, no step count
    # 4 steps (the schedule's last one has lr 0): the bias moves at step 3
    method, _ = train(tmp_path, batch=8, steps=4, method=FrozenBias(frozen=2), optimizer=adamw)
    assert not torch.equal(method.linear.bias.detach(), bias)
    assert int(made[-1].state[method.linear.bias]["step"]) == 2  # its moments start at the thaw
    assert int(made[-1].state[method.linear.weight]["step"]) == 4


def test_a_skipped_step_discards_what_its_forwards_kept(tmp_path):
    method, state = train(tmp_path, batch=4, accumulate=2, steps=3,
                          method=FrozenBias(frozen=0, poison_at=3), nonfinite="skip")  # fmt: skip
    assert state.skipped_steps == 1
    assert method.kept == [8, 8, 8]  # the skipped step's two forwards never reach after_step


class AlwaysNaN(Toy):
    def forward(self, batch):
        return {"loss": super().forward(batch)["loss"] * float("nan")}


def test_skip_mode_still_stops_after_many_in_a_row(tmp_path):
    with pytest.raises(NonFiniteLossError, match="21th non-finite step in a row"):
        train(tmp_path, batch=1, steps=4, method=AlwaysNaN(), nonfinite="skip")


def test_gradient_norm_is_logged(tmp_path):
    lines = Recorder(tmp_path)
    train(tmp_path, batch=8, steps=2, logger=lines)
    assert all(m["grad_norm"] > 0 for _, m in lines.lines)


class Collapsing(Toy):
    """Spread-out embeddings before training, one point for every sample once it has trained."""

    def embed(self, batch):
        if self.forwards == 0:
            return batch["x"] + 0.0 * self.linear(batch["x"])
        return torch.ones(len(batch["x"]), 4) + 0.0 * self.linear(batch["x"])


class BornCollapsed(Toy):
    """One point for every sample from the start (as a ViT's class token at initialisation)."""

    def embed(self, batch):
        return torch.ones(len(batch["x"]), 4) + 0.0 * self.linear(batch["x"])


class Recorder(MetricLogger):
    def __init__(self, tmp_path):
        super().__init__(tmp_path, enabled=False)
        self.lines = []

    def log(self, step, metrics):
        self.lines.append((step, dict(metrics)))


def test_diagnostics_log_figures_and_announce_a_collapse(tmp_path, caplog):
    from selfsup.evaluate.diagnostics import Probe

    probe = Probe([{"x": torch.randn(8, 3)}])
    logger = Recorder(tmp_path)
    with caplog.at_level("WARNING", logger="selfsup"):
        method, state = train(tmp_path, 4, steps=4, method=Collapsing(), probe=probe,
                              logger=logger, diagnostics_every=2)  # fmt: skip
    assert state.step == 4 and method.training  # the mode is restored after the probe
    diagnosed = [step for step, m in logger.lines if "effective_rank" in m]
    assert diagnosed == [2, 4] and all("loss" in m for _, m in logger.lines)
    assert "step 2: complete collapse" in caplog.text

    from selfsup.engine.guard import CollapseError

    with pytest.raises(CollapseError, match="step 2: complete collapse.*stop_on_collapse.*"
                       "No checkpoint was written.*--overwrite"):  # fmt: skip
        train(tmp_path, 4, steps=4, method=Collapsing(), probe=probe, diagnostics_every=2,
              stop_on_collapse=True)  # fmt: skip
    with pytest.raises(CollapseError, match="The last checkpoint is intact"):
        train(tmp_path, 4, steps=4, method=Collapsing(), probe=probe, diagnostics_every=2,
              stop_on_collapse=True, checkpoint_every=1)  # fmt: skip

    class Unalarmed(Collapsing):  # e.g. word2vec, whose block means look collapsed early on
        collapse_alarm = False

    logger = Recorder(tmp_path)
    caplog.clear()
    with caplog.at_level("WARNING", logger="selfsup"):
        train(tmp_path, 4, steps=4, method=Unalarmed(), probe=probe, logger=logger,
              diagnostics_every=2, stop_on_collapse=True)  # fmt: skip
    figures = [m for _, m in logger.lines if "effective_rank" in m]
    assert len(figures) == 2 and all("collapse" not in m for m in figures)
    assert "collapse" not in caplog.text


class Labelled(Toy):
    """Embeds a sample as its x: the label (sign of x[0]) is linearly readable."""

    def embed(self, batch):
        return batch["x"] + 0.0 * self.linear(batch["x"])


def test_online_knn_is_logged_every_knn_every_steps(tmp_path):
    from selfsup.evaluate.diagnostics import OnlineKnn, Probe

    x = torch.randn(64, 3, generator=torch.Generator().manual_seed(3))
    label = (x[:, 0] > 0).long()
    bank = Probe([{"x": x[:48], "label": label[:48]}])
    queries = Probe([{"x": x[48:], "label": label[48:]}])
    knn = OnlineKnn(bank, queries, num_classes=2, k=5)
    logger = Recorder(tmp_path)
    train(tmp_path, 4, steps=4, method=Labelled(), logger=logger, knn=knn, knn_every=2)
    scored = [(step, m["knn_top1"]) for step, m in logger.lines if "knn_top1" in m]
    assert [step for step, _ in scored] == [2, 4]
    assert all(acc >= 75 for _, acc in scored)  # well above chance (50 %)


def test_embeddings_collapsed_from_initialisation_are_noted_not_alarmed(tmp_path, caplog):
    from selfsup.evaluate.diagnostics import Probe

    probe = Probe([{"x": torch.randn(8, 3)}])
    logger = Recorder(tmp_path)
    with caplog.at_level("INFO", logger="selfsup"):
        train(tmp_path, 4, steps=4, method=BornCollapsed(), probe=probe, logger=logger,
              diagnostics_every=2, stop_on_collapse=True)  # fmt: skip
    assert "starts collapsed at initialisation" in caplog.text and "WARNING" not in caplog.text
    assert [m["collapse"] for _, m in logger.lines if "collapse" in m] == [0.0, 0.0]


def test_progress_line_shows_knn_once_per_update(tmp_path, monkeypatch):
    import selfsup.engine.loop as loop_module
    from selfsup.evaluate.diagnostics import OnlineKnn, Probe

    lines = []

    class Recording:
        def __init__(self, *args, **kwargs):
            pass

        def update(self, done, info):
            lines.append(info)

        def close(self):
            pass

    monkeypatch.setattr(loop_module, "Progress", Recording)
    x = torch.randn(16, 3, generator=torch.Generator().manual_seed(0))
    label = (x[:, 0] > 0).long()
    knn = OnlineKnn(Probe([{"x": x, "label": label}]), Probe([{"x": x, "label": label}]), 2, k=3)
    train(tmp_path, 4, steps=6, method=Labelled(), knn=knn, knn_every=1, log_every=3)
    assert len(lines) == 6 and all(line.count("kNN") == 1 for line in lines)


class ConstantLoss(Toy):
    def forward(self, batch):
        return {"loss": (self.linear.weight * 0).sum() + 5.0}


def test_a_resumed_runs_first_window_is_averaged_over_its_own_steps(tmp_path):
    lines = Recorder(tmp_path)
    train(tmp_path, batch=8, steps=4, method=ConstantLoss(), logger=lines, log_every=4,
          state=TrainState(step=3, samples=24, batch_in_epoch=3))  # fmt: skip
    assert [(step, m["loss"]) for step, m in lines.lines] == [(4, 5.0)]  # one step, not 5 / 4


@pytest.mark.parametrize("signum", ["SIGINT", "SIGTERM", "SIGUSR1"])
def test_ctrl_c_or_a_schedulers_signal_finishes_the_step_saves_it_and_stops(tmp_path, signum):
    import os
    import signal

    signum = getattr(signal, signum)
    saved = []

    class CtrlC(Toy):
        def forward(self, batch):
            if self.forwards == 2:  # during step 2 (the user presses Ctrl-C, SLURM preempts)
                os.kill(os.getpid(), signum)
            return super().forward(batch)

    class Twice(Toy):  # the signal relayed at once (torchrun's agent): still one request
        def forward(self, batch):
            if self.forwards == 2:
                os.kill(os.getpid(), signum)
                os.kill(os.getpid(), signum)
            return super().forward(batch)

    before = signal.getsignal(signum)
    for method in (CtrlC(), Twice()):
        saved.clear()
        with pytest.raises(Interrupted, match="interrupted at step 3"):
            train(tmp_path, batch=8, steps=10, method=method,
                  save=lambda s: saved.append(s.step), checkpoint_every=5)  # fmt: skip
        assert saved == [3]  # step 3's verdict carried the request: saved, then stopped
        assert signal.getsignal(signum) is before


def test_a_second_ctrl_c_stops_at_once(tmp_path, monkeypatch):
    import os
    import signal

    import selfsup.engine.guard as guard

    monkeypatch.setattr(guard, "RELAYED_WITHIN_S", 0.0)

    class Impatient(Toy):
        def forward(self, batch):
            if self.forwards == 2:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.01)
                os.kill(os.getpid(), signal.SIGINT)
            return super().forward(batch)

    saved = []
    with pytest.raises(KeyboardInterrupt) as stopped:
        train(tmp_path, batch=8, steps=10, method=Impatient(), save=lambda s: saved.append(s.step))
    assert not isinstance(stopped.value, Interrupted) and saved == []


def test_a_schedulers_notice_before_training_stops_after_the_first_step(tmp_path):
    import os
    import signal

    from selfsup.engine.guard import catch_early_stop_signals

    before = signal.getsignal(signal.SIGUSR1)
    try:
        catch_early_stop_signals()  # as at launch
        os.kill(os.getpid(), signal.SIGUSR1)  # while the run is being set up: not fatal
        saved = []
        with pytest.raises(Interrupted, match="interrupted at step 1"):
            train(tmp_path, batch=8, steps=10, save=lambda s: saved.append(s.step))
        assert saved == [1]
    finally:
        signal.signal(signal.SIGUSR1, before)


def test_a_collapse_found_by_another_process_stops_this_one(tmp_path, monkeypatch):
    # with stop_on_collapse every process stops alike, or the ones that go on hang in their next
    # collective; here the other process (a stream's probe differs) finds a collapse
    from selfsup.engine.guard import CollapseError
    from selfsup.evaluate.diagnostics import Probe

    def all_reduce(self, tensor, group=None, reduce_op="mean"):
        if reduce_op == "max":  # the other process's verdict: collapsed
            return torch.ones_like(tensor)
        return tensor

    import selfsup.engine.diagnosis as diagnosis_module

    def gather_objects(mine, world_size):  # the other process's verdict
        return [mine, "step 2: complete collapse (effective rank 1.0)"]

    monkeypatch.setattr(Fabric, "world_size", property(lambda self: 2))
    monkeypatch.setattr(Fabric, "all_reduce", all_reduce)
    monkeypatch.setattr(diagnosis_module, "gather_objects", gather_objects)
    probe = Probe([{"x": torch.randn(8, 3)}])
    with pytest.raises(CollapseError, match=r"step 2: complete collapse .* \(on process 1\)"):
        train(tmp_path, 4, steps=4, method=Labelled(), probe=probe, diagnostics_every=2,
              stop_on_collapse=True)  # fmt: skip


class FullDisk:
    """A metrics file on a full disk: writes fail from the ``after``-th line on."""

    def __init__(self, after=1):
        self.lines, self.after = 0, after

    def write(self, text):
        self.lines += 1
        if self.lines >= self.after:
            raise OSError(28, "No space left on device")

    def close(self):
        if self.lines >= self.after:  # the unwritten buffer
            raise OSError(28, "No space left on device")


def test_metrics_that_cannot_be_written_stop_the_run_at_the_next_step(tmp_path):
    from selfsup.engine.guard import WriteFailed

    logger = MetricLogger(tmp_path)
    logger._file = FullDisk(after=2)
    logger._tb = None
    method = Toy()
    with pytest.raises(WriteFailed, match=r"could not log step 2 to .*metrics.jsonl "
                       r"\(OSError: \[Errno 28\] No space left on device\); stopping$"):  # fmt: skip
        train(tmp_path, batch=4, steps=10, method=method, logger=logger)
    assert method.forwards == 3  # step 3's verdict stopped it, before its optimizer step
    logger.close()  # the full disk fails again, and the first failure is the one kept
    assert logger.failure.startswith("could not log step 2")


def test_a_write_failure_on_another_process_stops_this_one(tmp_path, monkeypatch):
    # only process 0 logs: the others learn of its failure through the step's verdict
    import selfsup.engine.guard as guard_module
    from selfsup.engine.guard import WriteFailed

    def all_reduce(self, tensor, group=None, reduce_op="mean"):
        if reduce_op == "sum" and tensor.numel() == 4:  # the verdict: process 0's failure
            return tensor + torch.tensor([0.0, 0.0, 0.0, 1.0])
        return tensor

    told = "could not log step 3 to run/metrics.jsonl (OSError: [Errno 28] No space left)"
    monkeypatch.setattr(Fabric, "world_size", property(lambda self: 2))
    monkeypatch.setattr(Fabric, "all_reduce", all_reduce)
    monkeypatch.setattr(guard_module, "gather_objects", lambda mine, world_size: [told, mine])
    method = Toy()
    with pytest.raises(WriteFailed, match=r"could not log step 3 .*; stopping"):
        train(tmp_path, batch=4, steps=4, method=method)
    assert method.forwards == 1


def test_a_failure_of_the_last_steps_is_agreed_on_after_closing(tmp_path):
    from selfsup.engine.guard import StepGuard, WriteFailed

    guard = StepGuard(Fabric(accelerator="cpu", devices=1), "stop", False, None)
    guard.agree_on_failure(None)  # nothing failed: nothing raised
    with pytest.raises(WriteFailed, match="could not close .*; stopping"):
        guard.agree_on_failure("could not close run/tensorboard (OSError: disk)")


def test_the_last_steps_are_logged_when_the_budget_ends_between_records(tmp_path):
    logger = Recorder(tmp_path)
    train(tmp_path, batch=4, steps=5, logger=logger, log_every=2)
    assert [step for step, _ in logger.lines] == [2, 4, 5]
    assert all("loss" in m and "samples_per_s" in m for _, m in logger.lines)
