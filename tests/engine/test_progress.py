"""Off a terminal (a log file, a pipe, a SLURM job) the progress is plain lines, not a bar."""

from selfsup.engine.logging import Progress


def test_off_a_terminal_progress_prints_plain_lines(capsys):
    quiet = Progress(10, "steps", every=3600.0)
    for step in range(1, 11):
        quiet.update(step, f"step {step}  loss 1.0")
    quiet.close()
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert captured.out == ""  # stdout is left to results
    assert lines[0].startswith("pretrain  10.0%  0:00:00  ETA -  step 1")  # no rate yet
    assert lines[1:] == ["pretrain 100.0%  0:00:00  ETA 0:00:00  step 10  loss 1.0"]  # the end

    every = Progress(4, "batches", every=0.0, label="embed")
    for step in (1, 2):
        every.update(step, f"{step * 256} samples")
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert captured.out == ""
    assert [line.split()[:2] for line in lines] == [["embed", "25.0%"], ["embed", "50.0%"]]
    assert "\r" not in captured.err and "\x1b" not in captured.err  # no redraws, no colour


def test_disabled_progress_prints_nothing(capsys):
    bar = Progress(5, "steps", enabled=False)
    bar.update(1, "step 1")
    bar.close()
    assert capsys.readouterr() == ("", "")


def test_progress_of_a_stream_of_unknown_length_counts_without_a_percentage(capsys):
    stream = Progress(None, "batches", every=0.0, label="embed")
    for step in (1, 2):
        stream.update(step, f"{step * 256:,} samples")
    stream.close()
    assert capsys.readouterr().err.splitlines() == [
        "embed  0:00:00  256 samples",
        "embed  0:00:00  512 samples",  # the end, printed once
    ]
