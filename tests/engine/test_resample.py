"""``resample=true``: endless streams cut into nominal epochs, resumable, refused where it has no
meaning."""

import json

import pytest

from selfsup.config import ConfigError, load_config
from selfsup.data import build_source
from selfsup.engine import loader as loader_module
from selfsup.engine.loader import EpochLoader
from selfsup.pipeline import pretrain
from selfsup.testing import image_folder
from selfsup.testing import tar_shards as write_shards


def values(batches):
    return [b["image"][:, 0, 0, 0].tolist() for b in batches]


def test_resampled_epochs_are_nominal_and_resume_exactly(tmp_path):
    source = build_source(f"shards:{write_shards(tmp_path / 's')}", image_size=8)
    source.train.resample = True
    loader = EpochLoader(source.train, 4, seed=0, num_workers=2, num_samples=12)
    assert loader.endless and loader.steps_per_epoch == 3
    epoch = values(loader.epoch(0))
    assert len(epoch) == 3  # cut at the nominal length: the stream itself never ends
    assert values(loader.epoch(0, start_batch=2)) == epoch[2:]  # resume mid-epoch
    assert values(loader.epoch(1)) != epoch


def test_resampled_stream_of_unknown_length(tmp_path, monkeypatch):
    monkeypatch.setattr(loader_module, "NOMINAL_EPOCH_STEPS", 7)
    source = build_source(f"shards:{write_shards(tmp_path / 's')}", image_size=8)
    source.train.resample = True
    loader = EpochLoader(source.train, 4, seed=0)
    assert loader.steps_per_epoch is None
    assert len(values(loader.epoch(0))) == 7  # a nominal epoch, 1,000 batches by default
    assert loader.count_steps() == 3  # one plain pass, not an endless one
    assert loader.endless


def test_pretrain_resamples_shards(tmp_path):
    data = write_shards(tmp_path / "s", shards=1, per_shard=8)  # fewer shards than workers
    config = load_config(values={
        "method": "simclr", "data": f"shards:{data}", "budget": "3steps", "batch_size": 4,
        "image_size": 8, "backbone": "resnet18", "resample": True, "num_workers": 2,
        "progress": False, "out": str(tmp_path / "run"), "precision": "32-true",
        "method_args": {"proj_hidden_dim": 16, "proj_dim": 8},
    })  # fmt: skip
    run = pretrain(config)
    assert (run / "config.yaml").read_text().count("resample: true") == 1
    meta = json.loads(sorted((run / "checkpoints").iterdir())[-1].joinpath("meta.json").read_text())
    assert meta["state"]["step"] == 3


def test_resample_is_refused_where_it_means_nothing(tmp_path):
    folder = image_folder(tmp_path / "f", per_class=4)
    base = {"method": "simclr", "budget": "1steps", "batch_size": 4, "image_size": 8,
            "resample": True, "out": str(tmp_path / "run")}  # fmt: skip
    with pytest.raises(ConfigError, match="resample=true applies to streamed sources"):
        pretrain(load_config(values={**base, "data": f"folder:{folder}"}))
    with pytest.raises(ConfigError, match="choose one"):
        load_config(values={**base, "data": "digits", "decode_cache": "on"})
    assert not (tmp_path / "run").exists()
