"""The decoded-image cache holds exactly the source's samples, and is used only where it helps."""

import pytest
import torch

from selfsup.config import ConfigError, load_config
from selfsup.data import build_source
from selfsup.data.cache import decoded_cache
from selfsup.methods import METHODS
from selfsup.run_data import use_decode_cache
from selfsup.testing import image_folder


def test_folder_cache_equals_the_decoded_files_in_order(tmp_path):
    source = build_source(f"folder:{image_folder(tmp_path / 'f')}", image_size=16)
    cache = decoded_cache(source.train, source.num_samples, 16, workers=2)
    assert len(cache) == len(source.train) == 12
    for i in range(len(cache)):
        expected, got = source.train[i], cache[i]
        assert torch.equal(got["image"], expected["image"]) and got["label"] == expected["label"]
        assert got["index"] == i
    batch = cache.__getitems__([3, 0, 7])
    assert [s["index"] for s in batch] == [3, 0, 7]
    assert torch.equal(batch[0]["image"], cache[3]["image"])


def test_shard_cache_holds_every_streamed_sample_once(shard_dir):
    source = build_source(f"shards:{shard_dir}", image_size=8, shuffle_buffer=10)
    cache = decoded_cache(source.train, None, 8, workers=2)  # unknown length: grows
    streamed = sorted(int(s["label"]) for s in source.train)
    assert sorted(cache.labels.tolist()) == streamed == list(range(24))
    for i in range(len(cache)):  # each image still matches its label (red channel = label)
        assert int(cache[i]["image"][0, 0, 0]) == int(cache[i]["label"])


def test_pairs_keep_their_captions(tmp_path, save_image):
    for i in range(4):
        save_image(tmp_path / f"{i}.png", (i * 40, 0, 0))
    (tmp_path / "c.csv").write_text(
        "image,caption\n" + "".join(f"{i}.png,cap {i}\n" for i in range(4))
    )
    source = build_source(f"captions:{tmp_path / 'c.csv'}", image_size=8)
    cache = decoded_cache(source.train, source.num_samples, 8, workers=0)
    assert [cache[i]["text"] for i in range(4)] == ["cap 0", "cap 1", "cap 2", "cap 3"]


@pytest.mark.parametrize(
    ("method", "data", "setting", "expected"),
    [
        ("simclr", "folder", "auto", True),
        ("simclr", "folder", "off", False),
        ("simclr", "digits", "on", False),  # already in memory
        ("mlm", "captions", "auto", False),  # a text method never looks at the images
        ("clip", "captions", "auto", True),
    ],
)
def test_when_the_cache_is_used(tmp_path, save_image, method, data, setting, expected):
    image_folder(tmp_path / "f")
    save_image(tmp_path / "0.png")
    (tmp_path / "c.csv").write_text("image,caption\n0.png,a picture\n")
    spec = {"folder": f"folder:{tmp_path / 'f'}", "digits": "digits",
            "captions": f"captions:{tmp_path / 'c.csv'}"}[data]  # fmt: skip
    config = load_config(values={"method": method, "data": spec, "decode_cache": setting})
    source = build_source(spec, image_size=32)
    assert use_decode_cache(config, METHODS.get(method), source) is expected


def test_unknown_setting_is_named():
    with pytest.raises(ConfigError, match="decode_cache must be 'auto', 'on' or 'off'"):
        load_config(values={"decode_cache": "always"}).validate()


@pytest.mark.parametrize("workers", [1, 2])
def test_shard_cache_order_is_the_stream_index_whatever_the_workers(shard_dir, workers):
    # a run resumed with another num_workers must read the same samples at the same positions
    source = build_source(f"shards:{shard_dir}", image_size=8, shuffle_buffer=0)
    cache = decoded_cache(source.train, source.num_samples, 8, workers=workers)
    assert cache.labels.tolist() == list(range(24))  # shard order: sample i has label i
    assert [int(cache[i]["image"][0, 0, 0]) for i in range(24)] == list(range(24))
