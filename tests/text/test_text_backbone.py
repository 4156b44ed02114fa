import pytest
import torch
from transformers import BertConfig

from selfsup.backbones.text import (
    TEXT_BACKBONES,
    TextEncoder,
    build_text_config,
    create_text_encoder,
    mean_pool,
)
from selfsup.registry import UnknownNameError

TURC = {
    "bert-tiny": (2, 128, 2),
    "bert-mini": (4, 256, 4),
    "bert-small": (4, 512, 8),
    "bert-medium": (8, 512, 8),
    "bert-base": (12, 768, 12),
}


@pytest.mark.parametrize("name", sorted(TURC))
def test_registered_sizes(name):
    config = build_text_config(name, vocab_size=500, max_position_embeddings=64)
    layers, hidden, heads = TURC[name]
    assert isinstance(config, BertConfig)
    assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads) == TURC[name]
    assert config.intermediate_size == 4 * hidden
    assert (config.vocab_size, config.max_position_embeddings) == (500, 64)
    assert (
        name in TEXT_BACKBONES.describe() and f"{layers} layers" in TEXT_BACKBONES.describe()[name]
    )


def test_overrides_and_errors():
    config = build_text_config(
        "bert-mini", 500, hidden_size=64, num_attention_heads=2, pad_token_id=1
    )
    assert (config.hidden_size, config.intermediate_size, config.pad_token_id) == (64, 256, 1)
    assert config.num_hidden_layers == 4
    assert (
        build_text_config("bert-tiny", 500, attn_implementation="eager")._attn_implementation
        == "eager"
    )
    with pytest.raises(TypeError, match="hiden_size"):
        build_text_config("bert-mini", 500, hiden_size=64)
    with pytest.raises(UnknownNameError, match="bert-mini"):
        build_text_config("bert-minni", 500)
    assert set(TURC) <= set(TEXT_BACKBONES.names())


def tiny_encoder(pooling="mean"):
    torch.manual_seed(0)
    encoder = create_text_encoder(
        "bert-tiny", 100, 32, pooling, hidden_size=32, num_hidden_layers=1, num_attention_heads=2
    )
    return encoder.eval()


def test_pooling_matches_hidden_states_and_ignores_padding():
    encoder = tiny_encoder()
    assert encoder.dim == 32 and encoder.bert.pooler is None
    ids = torch.randint(5, 100, (2, 10))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    ids[1, 6:] = 0
    feats = encoder(ids, mask)
    assert feats.shape == (2, 32)
    hidden = encoder.bert(input_ids=ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(feats[1], hidden[1, :6].mean(0))
    alone = encoder(ids[1:, :6], mask[1:, :6])  # the same sequence without padding
    torch.testing.assert_close(feats[1:], alone, atol=1e-5, rtol=1e-5)
    cls = TextEncoder(encoder.bert, pooling="cls").eval()
    torch.testing.assert_close(cls(ids, mask), hidden[:, 0])
    assert cls.bert is encoder.bert  # wrapping shares the weights


def test_mean_pool_formula():
    hidden = torch.arange(12, dtype=torch.float32).reshape(2, 3, 2)
    mask = torch.tensor([[1, 1, 0], [0, 0, 0]])
    torch.testing.assert_close(mean_pool(hidden, mask), torch.tensor([[1.0, 2.0], [0.0, 0.0]]))


def test_unknown_pooling():
    with pytest.raises(ValueError, match="cls"):
        create_text_encoder("bert-tiny", 100, pooling="max")
