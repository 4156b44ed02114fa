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
    monkeypatch.setattr(
        streaming, "consumer_index", lambda placement=None: (rank, world, worker, workers)
    )
    return [s["x"] for s in dataset]


def test_shuffle_buffer_is_a_permutation_that_moves_items():
    out = list(shuffle_buffer(range(100), 10, seeded_rng(0)))
    assert sorted(out) == list(range(100)) and out != list(range(100))
    assert list(shuffle_buffer(range(5), 1, seeded_rng(0))) == list(range(5))


def test_seeded_rng_depends_on_every_key():
    draws = {tuple(seeded_rng(*k).random() for _ in range(2)) for k in [(0, 0), (0, 1), (1, 0)]}
    assert len(draws) == 3
    assert seeded_rng(3, 4).random() == seeded_rng(3, 4).random()


@pytest.mark.parametrize(
    "parts",
    [
        ["0:10", "10:20", "20:30", "30:40", "40:50"],
        ["0:20", "20:35", "35:40", "40:50"],
        ["0:20", "20:35", "35:50"],
        ["0:50"],
    ],
)
@pytest.mark.parametrize("shuffle", [False, True])
def test_ranks_and_workers_partition_exactly(monkeypatch, parts, shuffle):
    # 2 ranks x 2 workers: with 5 parts each consumer reads whole parts; with 4 (which divide
    # evenly between the processes), each part is read by one process, whose 2 workers keep
    # every 2nd sample of it; with 3 or 1 every consumer reads every part and keeps every 4th
    # sample. Each sample appears once.
    dataset = Numbers(parts, shuffle=shuffle, buffer_size=7, seed=1)
    dataset.set_epoch(3)
    seen, parts_of_rank = [], [set(), set()]
    for rank in range(2):
        for worker in range(2):
            mine = run_as(monkeypatch, dataset, rank, 2, worker, 2)
            assert mine, "no consumer may sit idle"
            seen += mine
            parts_of_rank[rank] |= {
                next(p for p in parts if x < int(p.split(":")[1])) for x in mine
            }
    assert sorted(seen) == list(range(50))
    if len(parts) in (4, 5):  # no part is read by both processes
        assert not parts_of_rank[0] & parts_of_rank[1]


def test_a_spawned_worker_reads_its_process_share(monkeypatch):
    # A DataLoader worker started by spawn or forkserver gets the dataset pickled and has no
    # process group: the place of its process travels with the dataset.
    import pickle

    dataset = Numbers(["0:10", "10:20"], shuffle=False, buffer_size=0, seed=0)
    monkeypatch.setattr(streaming, "process_placement", lambda: (1, 2))
    shipped = pickle.dumps(dataset)  # in process 1 of 2
    monkeypatch.setattr(streaming, "process_placement", lambda: None)
    assert [s["x"] for s in pickle.loads(shipped)] == list(range(10, 20))
    assert [s["x"] for s in dataset] == list(range(20))  # a plain process reads everything


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


def take(iterator, n):
    return [next(iterator)["x"] for _ in range(n)]


def resampled_as(monkeypatch, dataset, rank, world, worker, workers, n, epoch=0):
    monkeypatch.setattr(
        streaming, "consumer_index", lambda placement=None: (rank, world, worker, workers)
    )
    dataset.set_epoch(epoch)
    return take(iter(dataset), n)


def test_resampling_is_endless_with_replacement_and_seeded_per_consumer(monkeypatch):
    # one part and 4 consumers: each consumer reads whole parts, forever, none sits idle
    dataset = Numbers(["0:10", "10:20"], shuffle=True, buffer_size=4, seed=1)
    dataset.resample = True
    consumers = [(r, w) for r in range(2) for w in range(2)]
    draws = {c: resampled_as(monkeypatch, dataset, c[0], 2, c[1], 2, 200) for c in consumers}
    for seen in draws.values():
        assert set(seen) == set(range(20))  # 10x the data: every sample, several times each
        assert max(seen.count(x) for x in range(20)) > 1
    assert len({tuple(s) for s in draws.values()}) == 4  # each consumer its own stream
    # deterministic per (seed, epoch, rank, worker); another epoch draws anew
    assert resampled_as(monkeypatch, dataset, 1, 2, 0, 2, 200) == draws[(1, 0)]
    assert resampled_as(monkeypatch, dataset, 1, 2, 0, 2, 200, epoch=1) != draws[(1, 0)]


def test_resampling_draws_parts_about_uniformly(monkeypatch):
    parts = [f"{10 * i}:{10 * i + 10}" for i in range(5)]
    dataset = Numbers(parts, shuffle=False, buffer_size=0, seed=0)
    dataset.shuffle, dataset.resample = True, True
    seen = resampled_as(monkeypatch, dataset, 0, 1, 0, 1, 5000)
    counts = [sum(1 for x in seen if x // 10 == i) for i in range(5)]
    assert all(800 <= c <= 1200 for c in counts), counts  # 1000 each expected


def test_resampling_leaves_the_test_split_alone(monkeypatch):
    dataset = Numbers(["0:10", "10:20"], shuffle=False, buffer_size=4, seed=1)
    dataset.resample = True  # a split that does not shuffle is read in order, once
    assert run_as(monkeypatch, dataset, 0, 1, 0, 1) == list(range(20))
