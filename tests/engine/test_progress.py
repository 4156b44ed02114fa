"""Off a terminal (a log file, a pipe, a SLURM job) the progress is plain lines, not a bar."""

from selfsup.engine.logging import Progress


def test_off_a_terminal_progress_prints_plain_lines(capsys):
    quiet = Progress(10, "steps", every=3600.0)
    for step in range(1, 11):
        quiet.update(step, f"step {step}  loss 1.0")
    quiet.close()
    assert capsys.readouterr().out.splitlines() == [
        "pretrain 100.0%  0:00:00  ETA 0:00:00  step 10  loss 1.0"
    ]  # only the last line, at the end

    every = Progress(4, "steps", every=0.0)
    for step in (1, 2):
        every.update(step, f"step {step}")
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[1] for line in lines] == ["25.0%", "50.0%"]
    assert lines[0].split("ETA ")[1].startswith("- ")  # no rate from a single update yet
    assert "\r" not in "".join(lines) and "\x1b" not in "".join(lines)  # no redraws, no colour


def test_disabled_progress_prints_nothing(capsys):
    bar = Progress(5, "steps", enabled=False)
    bar.update(1, "step 1")
    bar.close()
    assert capsys.readouterr().out == ""
