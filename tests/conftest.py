import pytest

CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "a small red circle above a blue square",
    "self supervised learning learns representations without labels",
    "masked language models predict hidden words from their context",
    "contrastive methods pull two views of one image together",
] * 4


@pytest.fixture(scope="session")
def tiny_corpus():
    return list(CORPUS)


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from selfsup.data.tokenizer import train_tokenizer

    return train_tokenizer(CORPUS, kind="wordpiece", vocab_size=200)
