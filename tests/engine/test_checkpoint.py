import os

import torch

from selfsup.engine.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint


def test_save_load_and_keep_last(tmp_path):
    for step in (1, 2, 3):
        save_checkpoint(
            tmp_path, step, {"w": torch.full((2,), float(step))}, {"step": step}, keep=2
        )
    kept = sorted(p.name for p in tmp_path.glob("step-*"))
    assert kept == ["step-00000002", "step-00000003"]
    state, meta = load_checkpoint(latest_checkpoint(tmp_path))
    assert meta["step"] == 3 and torch.equal(state["w"], torch.full((2,), 3.0))


def test_interrupted_write_leaves_previous_checkpoint(tmp_path, monkeypatch):
    save_checkpoint(tmp_path, 1, {"w": torch.zeros(2)}, {"step": 1})

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", crash)
    try:
        save_checkpoint(tmp_path, 2, {"w": torch.ones(2)}, {"step": 2})
    except KeyboardInterrupt:
        pass
    monkeypatch.undo()
    assert not list(tmp_path.glob(".tmp-*")), "the temporary directory is cleaned up"
    state, meta = load_checkpoint(latest_checkpoint(tmp_path))
    assert meta["step"] == 1


def test_stale_pointer_falls_back_to_newest_complete(tmp_path):
    save_checkpoint(tmp_path, 1, {"w": torch.zeros(1)}, {"step": 1})
    save_checkpoint(tmp_path, 2, {"w": torch.zeros(1)}, {"step": 2})
    (tmp_path / "latest").write_text("step-00000009")  # points at nothing
    assert latest_checkpoint(tmp_path).name == "step-00000002"
    (tmp_path / "step-00000002" / "state.pt").unlink()  # incomplete checkpoint
    assert latest_checkpoint(tmp_path).name == "step-00000001"


def test_a_resumed_optimizer_owns_its_state(tmp_path, monkeypatch):
    # the checkpoint is mapped from its file; optimizer state that stays on the CPU is copied,
    # or the mapping would live all run (and keep a rotated-out checkpoint's disk space)
    from dataclasses import asdict

    import selfsup.run_dir as run_dir
    from selfsup.data.faults import FaultMonitor
    from selfsup.engine.checkpoint import rng_state
    from selfsup.engine.loop import TrainState

    model = torch.nn.Linear(4, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    ranks = [{"rng": rng_state(), "epoch": 0, "batch_in_epoch": 1}]
    ckpt = save_checkpoint(tmp_path, 1, {"method": model.state_dict(), "optimizer":
                           opt.state_dict(), "ranks": ranks}, {"state": asdict(TrainState(step=1))})  # fmt: skip
    loaded = []
    monkeypatch.setattr(run_dir, "load_checkpoint", lambda path: loaded.append(load_checkpoint(path)) or loaded[0])  # fmt: skip
    fresh = torch.nn.Linear(4, 3)
    fresh_opt = torch.optim.SGD(fresh.parameters(), lr=0.1, momentum=0.9)
    state = run_dir.restore(ckpt, fresh, fresh_opt, 0, 1, FaultMonitor(tmp_path / "f", 0.01))
    assert state.step == 1
    mapped = {t.data_ptr() for s in loaded[0][0]["optimizer"]["state"].values() for t in s.values()
              if torch.is_tensor(t)}  # fmt: skip
    for old, new in zip(model.parameters(), fresh.parameters(), strict=True):
        resumed = fresh_opt.state[new]["momentum_buffer"]
        assert torch.equal(resumed, opt.state[old]["momentum_buffer"])
        assert resumed.data_ptr() not in mapped
