import tarfile
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from selfsup.data import DataError, build_source
from selfsup.data.faults import FaultCounter
from selfsup.data.shards import CIFAR10_CLASSES, ShardDataset, count_shard_samples, find_shards

CIFAR = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "cifar10"


def labels_of(dataset):
    return [int(s["label"]) for s in dataset]


def test_directory_with_train_and_test_shards(shard_dir):
    source = build_source(f"shards:{shard_dir}", image_size=8, shuffle_buffer=0)
    assert source.kind == "image" and source.classes is None
    assert source.num_samples == 24
    assert labels_of(source.train) == list(range(24))  # unshuffled: shard then member order
    assert labels_of(source.test) == list(range(100, 105))
    sample = next(iter(source.train))
    assert set(sample) == {"image", "label", "index"}
    assert [int(s["index"]) for s in source.train] == list(range(24))  # stable sample identity
    assert sample["image"].shape == (3, 8, 8) and sample["image"].dtype == torch.uint8
    assert hasattr(source.train, "set_epoch")


def test_single_file_and_glob(shard_dir):
    single = build_source(f"shards:{shard_dir / 'train-0001.tar'}", shuffle_buffer=0)
    assert labels_of(single.train) == list(range(6, 12)) and single.test is None
    matched = build_source(f"shards:{shard_dir}/train-000[23].tar", shuffle_buffer=0)
    assert labels_of(matched.train) == list(range(12, 24))
    assert find_shards(str(shard_dir))[1] == [str(shard_dir / "test-0000.tar")]


def test_pair_shards_and_classes_file(tmp_path, write_shard):
    write_shard(tmp_path / "a.tar", range(3), with_txt=True)
    (tmp_path / "classes.txt").write_text("zero\none\ntwo\n")
    source = build_source(f"shards:{tmp_path}", shuffle_buffer=0, image_size=4)
    assert source.kind == "pair" and source.classes == ["zero", "one", "two"]
    samples = list(source.train)
    assert [s["text"] for s in samples] == ["caption 0", "caption 1", "caption 2"]
    assert samples[2]["image"].shape == (3, 4, 4)
    # The decoded red channel is the sample index written into the PNG.
    assert int(samples[2]["image"][0, 0, 0]) == 2


def test_unlabelled_samples_get_minus_one(tmp_path, write_shard):
    write_shard(tmp_path / "u.tar", range(2), with_cls=False)
    assert labels_of(build_source(f"shards:{tmp_path / 'u.tar'}").train) == [-1, -1]


def test_two_dataloader_workers_cover_every_sample_once(shard_dir):
    source = build_source(f"shards:{shard_dir}", image_size=8, shuffle_buffer=4)
    loader = DataLoader(source.train, batch_size=5, num_workers=2)
    labels = torch.cat([batch["label"] for batch in loader]).tolist()
    assert sorted(labels) == list(range(24))


def test_two_workers_share_a_single_shard(tmp_path, write_shard):
    write_shard(tmp_path / "one.tar", range(9))
    source = build_source(f"shards:{tmp_path / 'one.tar'}", shuffle_buffer=0)
    loader = DataLoader(source.train, batch_size=None, num_workers=2)
    assert sorted(int(s["label"]) for s in loader) == list(range(9))


def test_shuffle_is_deterministic_per_seed_and_epoch(shard_dir):
    def order(seed, epoch):
        source = build_source(f"shards:{shard_dir}", seed=seed, shuffle_buffer=5)
        source.train.set_epoch(epoch)
        return labels_of(source.train)

    first = order(0, 0)
    assert first == order(0, 0)
    assert sorted(first) == list(range(24)) and first != list(range(24))
    assert order(0, 1) != first
    assert order(1, 0) != first


def test_test_split_is_not_shuffled(shard_dir):
    source = build_source(f"shards:{shard_dir}", shuffle_buffer=100)
    source.test.set_epoch(5)
    assert labels_of(source.test) == list(range(100, 105))


def test_count_ignores_non_image_members(shard_dir):
    assert count_shard_samples([str(p) for p in sorted(shard_dir.glob("train-*.tar"))]) == 24


def test_missing_path_named(tmp_path):
    with pytest.raises(DataError, match="nowhere.*does not exist"):
        build_source(f"shards:{tmp_path / 'nowhere'}")


def test_directory_without_shards_named(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(DataError, match=f"{tmp_path}.*no \\*.tar"):
        build_source(f"shards:{tmp_path}")


def test_glob_matching_nothing_named(tmp_path):
    with pytest.raises(DataError, match="no tar shards match .*zzz"):
        build_source(f"shards:{tmp_path}/zzz-*.tar")


def test_corrupt_image_in_shard_names_shard_and_key(tmp_path, make_tar, png_bytes):
    path = make_tar(tmp_path / "bad.tar", [("good.png", png_bytes()), ("broken.jpg", b"nope")])
    samples = iter(ShardDataset([str(path)], image_size=8))
    next(samples)
    with pytest.raises(DataError, match="bad.tar:broken.jpg"):
        next(samples)


def test_bad_label_and_missing_image_named(tmp_path, make_tar, png_bytes):
    members = [("k1.png", png_bytes()), ("k1.cls", b"cat"), ("k2.json", b"{}")]
    path = make_tar(tmp_path / "s.tar", members)
    dataset = ShardDataset([str(path)], image_size=8)
    first, second = dataset.read_part(str(path))
    with pytest.raises(DataError, match="s.tar: sample 'k1'.*integer.*'cat'"):
        dataset.decode(first)
    with pytest.raises(DataError, match="s.tar: sample 'k2' has no image"):
        dataset.decode(second)


def test_truncated_tar_names_shard(tmp_path, write_shard):
    good = write_shard(tmp_path / "good.tar", range(20))
    cut = tmp_path / "cut.tar"
    cut.write_bytes(good.read_bytes()[:600])  # inside the first member's data
    with pytest.raises(DataError, match="cut.tar"):
        list(ShardDataset([str(cut)], image_size=8))


@pytest.mark.skipif(not CIFAR.is_dir(), reason=f"shared CIFAR-10 shards not found at {CIFAR}")
def test_cifar10_shards():
    source = build_source(f"cifar10-shards:{CIFAR}", image_size=32, shuffle_buffer=0)
    assert source.kind == "image" and source.classes == CIFAR10_CLASSES
    assert source.num_samples == 50_000
    assert count_shard_samples(source.test.parts) == 10_000
    # Keys look like train_cat_0042: the class in the key must match the .cls label.
    dataset = source.train
    records = dataset.read_part(dataset.parts[0])
    for _, record in zip(range(50), records, strict=False):
        sample = dataset.decode(record)
        assert sample["image"].shape == (3, 32, 32) and sample["image"].dtype == torch.uint8
        assert CIFAR10_CLASSES[sample["label"]] == record.key.split("_")[1]
    records.close()
    test_sample = next(iter(source.test))
    assert 0 <= test_sample["label"] < 10


def _rank_labels(rank, world, shard_dir):
    source = build_source(f"shards:{shard_dir}", shuffle_buffer=3, seed=5)
    source.train.set_epoch(2)
    return labels_of(source.train)


@pytest.mark.slow
def test_two_gloo_ranks_read_disjoint_shards(shard_dir):
    from selfsup.testing import spawn_gloo

    per_rank = spawn_gloo(_rank_labels, str(shard_dir), world_size=2)
    assert all(len(labels) == 12 for labels in per_rank)  # 2 of the 4 shards each
    assert sorted(per_rank[0] + per_rank[1]) == list(range(24))


def test_shard_cut_at_a_member_boundary_is_an_error_not_a_shorter_shard(tmp_path, write_shard):
    path = write_shard(tmp_path / "s.tar", range(15))
    with tarfile.open(path) as archive:
        cut = next(m.offset for m in archive.getmembers() if m.name == "sample_00010.png")
    path.write_bytes(path.read_bytes()[:cut])  # block-aligned: tarfile reads it as an end
    dataset = ShardDataset([str(path)], image_size=8)
    with pytest.raises(DataError, match="without the tar end-of-archive blocks"):
        list(dataset)


def test_macos_hidden_members_are_not_samples_and_indices_stay_dense(tmp_path, make_tar, png_bytes):
    members = [("./._sample_0.png", b"AppleDouble"), (".DS_Store", b"x")]
    for i in range(4):
        members += [(f"./sample_{i}.png", png_bytes((i, 0, 0))), (f"./sample_{i}.cls", b"1")]
        if i == 1:
            members.append(("./orphan.json", b"{}"))  # a group without an image
    path = make_tar(tmp_path / "mac.tar", members)
    dataset = ShardDataset([str(path)], image_size=8)
    dataset.faults = FaultCounter()
    samples = list(dataset)
    assert (
        [s["index"] for s in samples] == [0, 1, 2, 3] == [int(s["image"][0, 0, 0]) for s in samples]
    )
    assert count_shard_samples([str(path)]) == 4
