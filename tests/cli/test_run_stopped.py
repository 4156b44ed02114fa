"""A run stopped by a non-finite loss or a collapse ends with one line and exit code 3."""

import json

import pytest

import selfsup.pipeline
from selfsup.cli import main
from selfsup.engine.guard import CollapseError, NonFiniteLossError


@pytest.mark.parametrize("error", [NonFiniteLossError, CollapseError])
def test_stopped_run_prints_one_line_and_exits_3(monkeypatch, capsys, tmp_path, error):
    def stop(*args, **kwargs):
        raise error("step 7: the reason")

    monkeypatch.setattr(selfsup.pipeline, "pretrain", stop)
    assert main(["pretrain", "--method", "simclr", "--data", "digits", "--out", str(tmp_path)]) == 3
    err = capsys.readouterr().err
    assert err.strip() == "selfsup: run stopped: step 7: the reason"


def test_ctrl_c_before_training_prints_one_line_and_exits_130(monkeypatch, capsys, tmp_path):
    def setting_up(*args, **kwargs):  # e.g. decoding the data into memory
        raise KeyboardInterrupt

    monkeypatch.setattr(selfsup.pipeline, "pretrain", setting_up)
    args = ["pretrain", "--method", "simclr", "--data", "digits", "--out", str(tmp_path)]
    assert main(args) == 130
    assert capsys.readouterr().err.strip() == "selfsup: pretrain interrupted"


class FullDisk:
    """Writes fail from the ``after``-th one on, as on a full disk."""

    def __init__(self, file, after):
        self.file, self.writes, self.after = file, 0, after

    def write(self, text):
        self.writes += 1
        if self.writes >= self.after:
            raise OSError(28, "No space left on device")
        return self.file.write(text)

    def close(self):
        self.file.close()


TINY = ["--method", "simclr", "--data", "digits", "--budget", "6steps", "--batch-size", "8",
        "--image-size", "16", "--num-workers", "0", "checkpoint_every=2", "log_every=1",
        "progress=false", "method_args.proj_hidden_dim=32", "method_args.proj_dim=8"]  # fmt: skip


@pytest.mark.parametrize("where", ["metrics", "checkpoint", "export"])
def test_a_full_disk_stops_the_run_with_one_line_and_it_resumes(monkeypatch, capsys, tmp_path,
                                                                  where):  # fmt: skip
    from selfsup.engine.logging import MetricLogger

    run = tmp_path / "run"
    with monkeypatch.context() as patch:
        if where == "metrics":  # step 3's metrics; step 4's verdict stops every process
            opened = MetricLogger.__init__

            def full_later(self, *args, **kwargs):
                opened(self, *args, **kwargs)
                self._file = FullDisk(self._file, after=3)

            patch.setattr(MetricLogger, "__init__", full_later)
        elif where == "export":  # after the last checkpoint, which resuming exports again

            def full_disk(*args, **kwargs):
                raise OSError(28, "No space left on device")

            patch.setattr(selfsup.pipeline, "_finish", full_disk)
        else:  # the checkpoint of step 4
            saving = selfsup.pipeline.save_checkpoint

            def full_at_step_4(root, step, *args, **kwargs):
                if step == 4:
                    raise OSError(28, "No space left on device")
                return saving(root, step, *args, **kwargs)

            patch.setattr(selfsup.pipeline, "save_checkpoint", full_at_step_4)
        assert main(["pretrain", *TINY, "--out", str(run)]) == 1
    cause = {
        "metrics": f"could not log step 3 to {run / 'metrics.jsonl'} (OSError: ",
        "checkpoint": f"could not write the checkpoint of step 4 in {run / 'checkpoints'} (",
        "export": f"could not write the export in {run / 'export'} or summary.json (",
    }[where]
    intact = "step-00000006" if where == "export" else "step-00000002"
    assert capsys.readouterr().err.strip() == (
        f"selfsup: run stopped: {cause}[Errno 28] No space left on device); stopping. "
        f"Checkpoint {intact} is intact: fix the cause, then continue with: "
        f"selfsup pretrain --resume {run}"
    )
    assert main(["pretrain", "--resume", str(run)]) == 0  # nothing was lost
    assert (run / "export").is_dir() and (run / "summary.json").is_file()
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]
