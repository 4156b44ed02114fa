"""Shared tiny fixtures for the text tests: a synthetic corpus and tokenizers trained on it."""

from __future__ import annotations

import random

import pytest

from selfsup.data.tokenizer import train_tokenizer

SYLLABLES = ["ka", "lo", "mi", "ne", "su", "ta", "ri", "po", "ve", "du", "an", "el", "or", "is"]


def make_corpus(n_docs: int = 200, seed: int = 0) -> list[str]:
    """Documents of 0-60 pseudo-words from a Zipf-like vocabulary of about 300 words."""
    rng = random.Random(seed)
    words = sorted(
        {"".join(rng.choice(SYLLABLES) for _ in range(rng.randint(1, 3))) for _ in range(400)}
    )
    weights = [1.0 / (rank + 1) for rank in range(len(words))]
    docs = []
    for i in range(n_docs):
        length = 0 if i % 37 == 5 else rng.randint(1, 60)  # a few empty documents
        text = " ".join(rng.choices(words, weights, k=length))
        docs.append(text.capitalize() + ("." if length else ""))
    return docs


@pytest.fixture(scope="session")
def text_corpus() -> list[str]:
    return make_corpus()


@pytest.fixture(scope="session")
def wordpiece_tok(text_corpus):
    return train_tokenizer(text_corpus, kind="wordpiece", vocab_size=500)


@pytest.fixture(scope="session")
def bpe_tok(text_corpus):
    return train_tokenizer(text_corpus, kind="bpe", vocab_size=500)
