import pytest
import torch
from torch.utils.data import DataLoader

from selfsup.data import DataError, DataSource, build_source, list_datasets
from selfsup.data.registry import register_dataset

EXPECTED = {
    "folder:PATH",
    "shards:PATH",
    "cifar10-shards:PATH",
    "text:PATH",
    "captions:FILE",
    "digits",
    "lee",
    "shapes[:N]",
}


def test_list_datasets_names_every_source_with_a_description():
    listed = list_datasets()
    assert EXPECTED <= set(listed)
    assert all(isinstance(d, str) and d for d in listed.values())


def test_unknown_name_lists_valid_ones():
    with pytest.raises(DataError, match="unknown dataset 'imagenet'") as info:
        build_source("imagenet:/data")
    for name in ("folder", "shards", "digits", "shapes"):
        assert name in str(info.value)


def test_path_sources_need_a_path():
    with pytest.raises(DataError, match="folder:PATH"):
        build_source("folder")
    with pytest.raises(DataError, match="captions:FILE"):
        build_source("captions:")


def test_builtins_reject_an_argument():
    with pytest.raises(DataError, match="takes no argument"):
        build_source("digits:/x")


def test_bad_image_size():
    with pytest.raises(DataError, match="image_size"):
        build_source("shapes:4", image_size=0)


def test_duplicate_registration_raises():
    with pytest.raises(ValueError, match="already registered"):
        register_dataset("folder", description="again")(lambda *a, **k: None)


def test_bad_kind_rejected():
    with pytest.raises(DataError, match="kind"):
        DataSource(name="x", kind="video", train=[], test=None, classes=None, num_samples=0)


@pytest.mark.parametrize("spec", ["shapes:8", "digits", "lee"])
def test_default_collate_batches_builtin_samples(spec):
    source = build_source(spec, image_size=16, shuffle_buffer=0)
    batch = next(iter(DataLoader(source.train, batch_size=4)))
    if source.kind in ("image", "pair"):
        assert batch["image"].shape == (4, 3, 16, 16) and batch["image"].dtype == torch.uint8
        assert batch["label"].shape == (4,) and batch["label"].dtype == torch.int64
    if source.kind in ("text", "pair"):
        assert isinstance(batch["text"], list) and len(batch["text"]) == 4
        assert all(isinstance(t, str) and t for t in batch["text"])
