import pytest

from selfsup.data import streaming
from selfsup.data.streaming import PartitionedStream, seeded_rng, shuffle_buffer


class Numbers(PartitionedStream[int]):
    """Part "a:b" holds the integers a..b-1."""

    def read_part(self, part):
        start, stop = map(int, part.split(":"))
        yield from range(start, stop)

    def decode(self, raw):
        return {"x": raw}


def run_as(monkeypatch, dataset, rank, world, worker, workers):
    monkeypatch.setattr(streaming, "consumer_index", lambda: (rank, world, worker, workers))
    return [s["x"] for s in dataset]


def test_shuffle_buffer_is_a_permutation_that_moves_items():
    out = list(shuffle_buffer(range(100), 10, seeded_rng(0)))
    assert sorted(out) == list(range(100)) and out != list(range(100))
    assert list(shuffle_buffer(range(5), 1, seeded_rng(0))) == list(range(5))


def test_seeded_rng_depends_on_every_key():
    draws = {tuple(seeded_rng(*k).random() for _ in range(2)) for k in [(0, 0), (0, 1), (1, 0)]}
    assert len(draws) == 3
    assert seeded_rng(3, 4).random() == seeded_rng(3, 4).random()


@pytest.mark.parametrize("parts", [["0:10", "10:20", "20:30", "30:40", "40:50"], ["0:50"]])
@pytest.mark.parametrize("shuffle", [False, True])
def test_ranks_and_workers_partition_exactly(monkeypatch, parts, shuffle):
    # 2 ranks x 2 workers: with 5 parts each consumer reads whole parts, with 1 part every
    # consumer reads it and keeps every 4th sample. Either way each sample appears once.
    dataset = Numbers(parts, shuffle=shuffle, buffer_size=7, seed=1)
    dataset.set_epoch(3)
    seen = []
    for rank in range(2):
        for worker in range(2):
            mine = run_as(monkeypatch, dataset, rank, 2, worker, 2)
            assert mine, "no consumer may sit idle"
            seen += mine
    assert sorted(seen) == list(range(50))


def test_order_is_deterministic_per_epoch(monkeypatch):
    dataset = Numbers(
        [f"{i}:{i + 10}" for i in range(0, 100, 10)], shuffle=True, buffer_size=8, seed=0
    )
    dataset.set_epoch(0)
    first = run_as(monkeypatch, dataset, 0, 1, 0, 1)
    again = run_as(monkeypatch, dataset, 0, 1, 0, 1)
    dataset.set_epoch(1)
    other = run_as(monkeypatch, dataset, 0, 1, 0, 1)
    assert first == again
    assert other != first and sorted(other) == sorted(first) == list(range(100))


def test_no_shuffle_keeps_file_order(monkeypatch):
    dataset = Numbers(["0:3", "3:6"], shuffle=False, buffer_size=100, seed=0)
    assert run_as(monkeypatch, dataset, 0, 1, 0, 1) == list(range(6))
