"""Evaluation reads past the samples that cannot be read, as pretraining does."""

import pytest
from torch.utils.data import Dataset, IterableDataset

from selfsup.data.source import DataError
from selfsup.evaluate.features import fixed_subset


class Files(Dataset):
    def __init__(self, bad):
        self.bad = bad
        self.faults = None

    def __len__(self):
        return 6

    def __getitem__(self, i):
        if i in self.bad:
            raise DataError(f"cannot decode image {i}.jpg")
        return {"i": i}


class Stream(IterableDataset):
    """Drops what it cannot read once it has a fault sink, as the shard streams do."""

    def __init__(self):
        self.faults = None

    def __iter__(self):
        for i in range(4):
            if i == 2:
                if self.faults is None:
                    raise DataError("cannot decode image 2.jpg in shard-0.tar")
                self.faults.record("cannot decode image 2.jpg in shard-0.tar")
                continue
            yield {"i": i}


def test_unreadable_samples_are_skipped_and_logged(caplog):
    with caplog.at_level("WARNING", logger="selfsup"):
        assert [s["i"] for s in fixed_subset(Files({1, 4}), None)] == [0, 2, 3, 5]
    assert "skipped an unreadable sample: cannot decode image 1.jpg (the first of 2)" in caplog.text
    stream = Stream()
    assert [s["i"] for s in fixed_subset(stream, None)] == [0, 1, 3]
    assert stream.faults is None  # the stream is left as it was
    with pytest.raises(
        DataError, match=r"none of the 3 samples could be read; the first: .* \d.jpg"
    ):
        list(fixed_subset(Files(set(range(6))), 3))


def test_progress_of_a_stream_shows_its_limit_as_a_bound(capsys):
    import torch

    from selfsup.engine.logging import SHOW_PROGRESS
    from selfsup.evaluate.features import extract

    class Stream(IterableDataset):
        def __iter__(self):
            yield from ({"x": torch.ones(2), "label": 0} for _ in range(5))

    token = SHOW_PROGRESS.set(True)
    try:
        feats, _, _ = extract(lambda b: b["x"], Stream(), batch_size=2, limit=100)
    finally:
        SHOW_PROGRESS.reset(token)
    assert len(feats) == 5  # the stream ended before the limit
    assert capsys.readouterr().err.splitlines()[-1].endswith("5 of at most 100 samples")
