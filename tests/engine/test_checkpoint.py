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
