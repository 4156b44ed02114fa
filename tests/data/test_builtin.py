import collections
import importlib.util

import numpy as np
import pytest
import torch

from selfsup.data import build_source
from selfsup.data.builtin import load_digits_split

needs_gensim = pytest.mark.skipif(
    importlib.util.find_spec("gensim") is None,
    reason="gensim (which ships the Lee corpus) is not installed",
)


def test_digits_split_sizes_and_stratification():
    source = build_source("digits", image_size=16)
    assert source.kind == "image" and source.classes == [str(d) for d in range(10)]
    assert len(source.train) == source.num_samples == 1347 and len(source.test) == 450
    counts = collections.Counter(source.test.labels)
    assert set(counts) == set(range(10)) and min(counts.values()) >= 43  # ~45 per class
    sample = source.train[0]
    assert sample["image"].shape == (3, 16, 16) and sample["image"].dtype == torch.uint8
    assert torch.equal(sample["image"][0], sample["image"][1])  # grey in RGB


def test_digits_split_is_fixed_regardless_of_seed():
    a, b = build_source("digits", seed=0), build_source("digits", seed=7)
    assert a.train.labels == b.train.labels


def test_digits_values_scale_from_16_to_255():
    # At S = 8 the resize is the identity, so pixels are exactly round(v * 255 / 16).
    train_x, _, _, _ = load_digits_split()
    image = build_source("digits", image_size=8).train[5]["image"][0]
    expected = torch.from_numpy(np.round(train_x[5] * 255 / 16).astype(np.uint8))
    assert torch.equal(image, expected)
    assert build_source("digits", image_size=32).train[5]["image"].max() > 200


@needs_gensim
def test_lee_train_and_test_are_disjoint_news_articles():
    source = build_source("lee", shuffle_buffer=0)
    train = [s["text"] for s in source.train]
    test = [s["text"] for s in source.test]
    assert source.kind == "text" and source.num_samples == len(train) == 300 and len(test) == 50
    assert not set(train) & set(test)
    assert train[0].startswith("Hundreds of people have been forced to vacate their homes")
    assert any("\u00a33,000" in t for t in test)  # the cp1252 pound sign decodes correctly
    assert np.mean([len(t.split()) for t in train]) > 100
