"""The finetune protocol: option parsing, and a tiny encoder learning a separable text task."""

import random

import pytest
import torch

from selfsup.backbones.text import PooledEncoder, TextEncoder
from selfsup.backbones.text_configs import build_text_config
from selfsup.config import ConfigError
from selfsup.evaluate.protocols import EVAL_PROTOCOLS
from selfsup.evaluate.protocols.finetune import (
    FinetuneSettings,
    finetune_classifier,
)

GOOD = ["quick", "brown", "fox", "jumps", "lazy", "dog"]
BAD = ["red", "circle", "blue", "square", "small", "above"]


def task(n, seed):
    """Label 1: words from GOOD, label 0: words from BAD (every word is in the tiny vocab)."""
    rng = random.Random(seed)
    samples = []
    for i in range(n):
        words = GOOD if i % 2 else BAD
        samples.append({"text": " ".join(rng.choices(words, k=5)), "label": i % 2})
    return samples


def test_options_parse_and_bad_ones_name_the_valid_keys():
    assert EVAL_PROTOCOLS.get("finetune") is not None
    s = FinetuneSettings.from_options({"epochs": "2", "lr": "3e-5", "batch_size": "8"})
    assert (s.epochs, s.lr, s.batch_size, s.weight_decay) == (2, 3e-5, 8, 0.01)
    assert FinetuneSettings.from_options({}) == FinetuneSettings()
    with pytest.raises(
        ConfigError, match="Valid: adapter_dim, batch_size, clip_grad, dropout, epochs"
    ):
        FinetuneSettings.from_options({"epoch": "2"})
    with pytest.raises(ConfigError, match="epochs='two' is not int"):
        FinetuneSettings.from_options({"epochs": "two"})
    with pytest.raises(ConfigError, match="lr > 0"):
        FinetuneSettings.from_options({"lr": "0"})


def test_a_tiny_encoder_learns_a_separable_task_deterministically(tiny_tokenizer):
    torch.manual_seed(0)
    config = build_text_config(
        "bert-tiny", len(tiny_tokenizer), 64, hidden_size=32, num_attention_heads=2,
        intermediate_size=64,
    )  # fmt: skip
    encoder = TextEncoder(config, "mean").eval()
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    train, test = task(32, 0), task(16, 1)
    settings = FinetuneSettings(epochs=2, lr=2e-3, batch_size=8)
    result = finetune_classifier(encoder, tiny_tokenizer, train, test, 2, settings, 12)
    assert result["chance"] == 50.0 and result["top1"] >= 75.0  # 100 here
    assert result["steps"] == 8 and result["train_size"] == 32 and result["test_size"] == 16
    head = 32 * 2 + 2
    assert result["trainable_params"] == sum(p.numel() for p in encoder.parameters()) + head
    # the run's encoder is copied, not trained in place, and the same seed repeats the figures
    assert all(torch.equal(v, encoder.state_dict()[k]) for k, v in before.items())
    again = finetune_classifier(encoder, tiny_tokenizer, train, test, 2, settings, 12)
    assert again == result


def test_pooled_encoder_adapts_a_transformers_base_model(tiny_tokenizer):
    config = build_text_config(
        "bert-tiny", len(tiny_tokenizer), 64, hidden_size=32, num_attention_heads=2
    )
    text = TextEncoder(config, "mean").eval()
    enc = tiny_tokenizer(["the quick fox", "a small red circle above"], padding=True,
                         return_tensors="pt", return_token_type_ids=False)  # fmt: skip
    with torch.no_grad():
        for pooling in ("mean", "cls"):
            pooled = PooledEncoder(text.bert, pooling)
            text.pooling = pooling
            assert pooled.dim == 32
            torch.testing.assert_close(pooled(**enc), text(**enc))
