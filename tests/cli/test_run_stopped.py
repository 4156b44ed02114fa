"""A run stopped by a non-finite loss or a collapse ends with one line and exit code 3."""

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
