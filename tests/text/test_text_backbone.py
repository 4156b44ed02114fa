import pytest
import torch
from transformers import (
    AutoModel,
    BertConfig,
    BertForMaskedLM,
    DebertaV2Config,
    DebertaV2ForMaskedLM,
)

from selfsup.backbones.text import TextEncoder, create_text_encoder, mean_pool
from selfsup.backbones.text_configs import (
    TEXT_BACKBONES,
    backbone_family,
    build_mlm_model,
    build_t5_config,
    build_text_config,
    deberta_config_fields,
    mlm_model_class,
)
from selfsup.config import ConfigError
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


DEBERTA = {f"deberta-{name.split('-')[1]}": sizes for name, sizes in TURC.items()}


@pytest.mark.parametrize("name", sorted(DEBERTA))
def test_deberta_sizes_and_disentangled_attention(name):
    config, model_class = build_mlm_model(name, vocab_size=500, max_position_embeddings=64)
    assert isinstance(config, DebertaV2Config) and model_class is DebertaV2ForMaskedLM
    assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads) == DEBERTA[
        name
    ]
    assert config.intermediate_size == 4 * config.hidden_size
    assert config.relative_attention and config.pos_att_type == ["p2c", "c2p"]
    assert (config.position_buckets, config.position_biased_input) == (256, False)
    assert backbone_family(name) == "deberta" and "DeBERTa" in TEXT_BACKBONES.describe()[name]


def tiny_deberta():
    torch.manual_seed(0)
    config, model_class = build_mlm_model(
        "deberta-tiny", 120, 32, hidden_size=32, num_attention_heads=2, pad_token_id=0
    )
    return model_class(config)


def test_deberta_mlm_trains_and_its_encoder_loads_with_automodel(tmp_path):
    model = tiny_deberta()
    # the relative-position table (2 x 256 buckets) and no absolute position embedding
    assert model.deberta.encoder.rel_embeddings.weight.shape == (512, 32)
    assert model.deberta.embeddings.position_embeddings is None
    ids = torch.randint(5, 120, (2, 12))
    labels = torch.full_like(ids, -100)
    labels[:, 3] = ids[:, 3]
    out = model(input_ids=ids, labels=labels)
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert model.deberta.encoder.rel_embeddings.weight.grad.abs().sum() > 0
    # what the mlm method calls: the encoder at .base_model and the head at .cls on (N, D)
    hidden = model.base_model(input_ids=ids).last_hidden_state
    assert model.cls(hidden[:, 3]).shape == (2, 120)

    model.eval()
    model.base_model.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    assert type(loaded).__name__ == "DebertaV2Model"
    with torch.no_grad():
        torch.testing.assert_close(
            loaded(input_ids=ids).last_hidden_state, model.base_model(input_ids=ids)[0]
        )


def test_mlm_model_of_bert_names_and_family_errors():
    config, model_class = build_mlm_model("bert-tiny", 500, hidden_size=64, num_attention_heads=2)
    assert isinstance(config, BertConfig) and model_class is BertForMaskedLM
    assert mlm_model_class(config) is BertForMaskedLM
    with pytest.raises(TypeError, match="position_bucket"):
        build_mlm_model("deberta-mini", 500, position_bucket=128)
    assert build_mlm_model("deberta-mini", 500, position_buckets=128)[0].position_buckets == 128
    with pytest.raises(ConfigError, match="deberta-mini"):
        build_text_config("deberta-mini", 500)  # BERT-only callers get a clear error
    with pytest.raises(ConfigError, match="t5-small"):
        build_mlm_model("t5-small", 500)
    with pytest.raises(UnknownNameError, match="deberta-mini"):
        build_mlm_model("deberta-minni", 500)
    assert {"position_buckets", "pos_att_type", "hidden_size"} <= deberta_config_fields()


def test_t5_configs():
    small = build_t5_config("t5-small", 300, pad_token_id=0)
    assert (small.d_model, small.d_ff, small.num_layers, small.num_heads, small.d_kv) == (
        512,
        2048,
        6,
        8,
        64,
    )
    assert (small.num_decoder_layers, small.feed_forward_proj, small.dropout_rate) == (
        6,
        "relu",
        0.1,
    )
    assert small.relative_attention_num_buckets == 32
    mini = build_t5_config("bert-mini", 300)
    assert (mini.d_model, mini.d_ff, mini.num_layers, mini.num_heads, mini.d_kv) == (
        256,
        1024,
        4,
        4,
        64,
    )
    narrow = build_t5_config("bert-mini", 300, d_model=64)
    assert (narrow.d_ff, narrow.d_kv) == (256, 16)
    with pytest.raises(ConfigError, match="deberta-tiny"):
        build_t5_config("deberta-tiny", 300)
    with pytest.raises(TypeError, match="d_modle"):
        build_t5_config("t5-small", 300, d_modle=64)
    with pytest.raises(ConfigError, match="t5-small"):
        build_text_config("t5-small", 300)
