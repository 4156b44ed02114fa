"""Built-in real datasets that ship inside installed packages (nothing is downloaded).

- ``digits``: scikit-learn's 8x8 handwritten digits (UCI optical recognition of handwritten
  digits; 1797 images, 10 classes), upsampled bilinearly to S x S, grey copied to RGB.
  Fixed stratified split, 1/4 test (``random_state=0``): 1347 train, 450 test.
- ``lee``: the Lee, Pincombe & Welsh (2005) news corpus that gensim ships for its tests:
  ``lee_background.cor`` (300 Australian news articles, one per line) is the train split and
  ``lee.cor`` (the 50 different articles of the human-similarity study) the test split.
- ``wiki``: the shortened English Wikipedia dump gensim ships, as plain text
  (:mod:`selfsup.data.wiki`).
- ``polarity``: the 200 movie-review sentences of Pang & Lee (2005) that gensim ships
  (``pang_lee_polarity.cor``, 100 ``__label__neg`` and 100 ``__label__pos``): labelled text,
  classes ``["neg", "pos"]``, fixed stratified split of 150 train / 50 test (``random_state=0``).

gensim's ``head500.noblanks.cor`` is not offered: it is stemmed, stop-word-free Wikipedia
("anarch greek rule stem archon ..."), not usable running text.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from selfsup.data.registry import register_dataset, reject_arg
from selfsup.data.source import DataError, DataSource
from selfsup.data.text import TextDataset

__all__ = [
    "DigitsDataset",
    "LabelledTexts",
    "gensim_data_file",
    "load_digits_split",
    "load_polarity",
    "stratified_text_source",
]

DIGITS_TEST_FRACTION = 0.25


class DigitsDataset(Dataset):
    """8x8 digit images upsampled to uint8 (3, S, S) on access.

    Args:
        images: (N, 8, 8) values in 0..16.
        labels: (N,) digit classes.
        image_size: Side S.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, image_size: int) -> None:
        self.images = torch.as_tensor(images, dtype=torch.float32)  # (N, 8, 8)
        self.labels = [int(y) for y in labels]
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, Any]:
        small = self.images[index][None, None] * (255.0 / 16.0)  # (1, 1, 8, 8)
        size = (self.image_size, self.image_size)
        big = F.interpolate(small, size=size, mode="bilinear", align_corners=False, antialias=True)
        grey = big[0].round().clamp(0, 255).to(torch.uint8)  # (1, S, S)
        image = grey.expand(3, -1, -1).contiguous()
        return {"image": image, "label": self.labels[index], "index": index}


@functools.lru_cache(maxsize=1)
def load_digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The fixed stratified split of scikit-learn's digits.

    Returns:
        ``(train_images, train_labels, test_images, test_labels)``; images (N, 8, 8) in 0..16.
        Cached: treat the arrays as read-only.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    index = np.arange(len(digits.target))
    train_idx, test_idx = train_test_split(
        index, test_size=DIGITS_TEST_FRACTION, stratify=digits.target, random_state=0
    )
    return (
        digits.images[train_idx],
        digits.target[train_idx],
        digits.images[test_idx],
        digits.target[test_idx],
    )


@register_dataset(
    "digits",
    description="scikit-learn 8x8 handwritten digits upsampled to SxS (1347 train / 450 test, 10 classes)",
)
def build_digits(arg: str | None, *, image_size: int, seed: int, shuffle_buffer: int) -> DataSource:
    """Build ``digits`` (see the module docstring)."""
    reject_arg("digits", arg)
    train_x, train_y, test_x, test_y = load_digits_split()
    return DataSource(
        name="digits",
        kind="image",
        train=DigitsDataset(train_x, train_y, image_size),
        test=DigitsDataset(test_x, test_y, image_size),
        classes=[str(d) for d in range(10)],
        num_samples=len(train_y),
        description="scikit-learn handwritten digits (8x8 upsampled), stratified 3:1 split",
    )


def gensim_data_file(name: str) -> str:
    """Path of a file in gensim's ``test/test_data`` folder.

    Located without importing gensim (which takes about a second), as
    ``gensim.test.utils.datapath`` would return it.

    Raises:
        DataError: gensim is not installed or lacks the file.
    """
    spec = importlib.util.find_spec("gensim")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "the built-in text datasets (lee, wiki, polarity) need the gensim package, which "
            "ships their files: pip install gensim"
        )
    path = os.path.join(list(spec.submodule_search_locations)[0], "test", "test_data", name)
    if not os.path.isfile(path):
        raise DataError(f"gensim's bundled corpus file {path} is missing")
    return path


@register_dataset(
    "lee",
    description="Lee news corpus bundled with gensim: 300 train / 50 test English articles",
)
def build_lee(arg: str | None, *, image_size: int, seed: int, shuffle_buffer: int) -> DataSource:
    """Build ``lee`` (see the module docstring)."""
    reject_arg("lee", arg)
    # lee.cor has one cp1252 byte (a pound sign); lee_background.cor is ASCII.
    train = TextDataset(
        [gensim_data_file("lee_background.cor")],
        split="all",
        shuffle=shuffle_buffer > 0,
        buffer_size=shuffle_buffer,
        seed=seed,
        encoding="cp1252",
    )
    test = TextDataset([gensim_data_file("lee.cor")], split="all", encoding="cp1252")
    return DataSource(
        name="lee",
        kind="text",
        train=train,
        test=test,
        classes=None,
        num_samples=train.count(),
        description="Lee et al. (2005) news corpus from gensim: 300 train, 50 test articles",
    )


# ---- polarity ------------------------------------------------------------------------------

POLARITY_FILE = "pang_lee_polarity.cor"
POLARITY_CLASSES = ["neg", "pos"]
POLARITY_TEST_SIZE = 50


class LabelledTexts(Dataset):
    """Map-style labelled text: ``{"text": str, "label": int}``.

    Args:
        texts: The texts.
        labels: Their class indices, one per text.
    """

    def __init__(self, texts: Sequence[str], labels: Sequence[int]) -> None:
        if len(texts) != len(labels):
            raise ValueError(f"{len(texts)} texts but {len(labels)} labels")
        self.texts = list(texts)
        self.labels = [int(y) for y in labels]

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"text": self.texts[index], "label": self.labels[index]}


def load_polarity() -> tuple[list[str], list[int]]:
    """Every sentence of gensim's ``pang_lee_polarity.cor`` with its label (0 neg, 1 pos).

    Raises:
        DataError: gensim or the file is missing, or a line lacks a known label.
    """
    path = gensim_data_file(POLARITY_FILE)
    tags = {f"__label__{name}": i for i, name in enumerate(POLARITY_CLASSES)}
    texts, labels = [], []
    with open(path, encoding="cp1252") as f:  # a few reviews hold cp1252 dashes and accents
        for number, line in enumerate(f, 1):
            tag, _, text = line.strip().partition(" ")
            if not tag:
                continue
            if tag not in tags:
                raise DataError(
                    f"{path}, line {number}: expected one of {sorted(tags)}, got {tag!r}"
                )
            texts.append(" ".join(text.split()))
            labels.append(tags[tag])
    return texts, labels


@register_dataset(
    "polarity",
    description="Pang & Lee movie-review sentences bundled with gensim, labelled neg/pos "
    "(150 train / 50 test)",
)
def build_polarity(
    arg: str | None, *, image_size: int, seed: int, shuffle_buffer: int
) -> DataSource:
    """Build ``polarity`` (see the module docstring)."""
    reject_arg("polarity", arg)
    texts, labels = load_polarity()
    return stratified_text_source(
        "polarity", texts, labels, list(POLARITY_CLASSES), POLARITY_TEST_SIZE,
        "Pang & Lee (2005) sentence polarity from gensim, stratified 150/50 split",
    )  # fmt: skip


def stratified_text_source(
    name: str,
    texts: Sequence[str],
    labels: Sequence[int],
    classes: list[str],
    test_size: float | int,
    description: str,
) -> DataSource:
    """Labelled texts split into train and test once, stratified by label (``random_state=0``,
    whatever the run's seed), each split in the texts' order."""
    from sklearn.model_selection import train_test_split

    train_idx, test_idx = train_test_split(
        np.arange(len(texts)), test_size=test_size, stratify=labels, random_state=0
    )
    train_idx, test_idx = sorted(train_idx.tolist()), sorted(test_idx.tolist())
    return DataSource(
        name=name,
        kind="text",
        train=LabelledTexts([texts[i] for i in train_idx], [labels[i] for i in train_idx]),
        test=LabelledTexts([texts[i] for i in test_idx], [labels[i] for i in test_idx]),
        classes=classes,
        num_samples=len(train_idx),
        description=description,
    )
