"""The text backbones by name: ``transformers`` configs for randomly initialised encoders.

One registry of names (``selfsup list``) covers three families:

* **BERT** (``bert-tiny`` ... ``bert-base``): the compact BERTs of Turc et al. 2019 ("Well-Read
  Students Learn Better") and BERT-Base (Devlin et al. 2019) as ``transformers.BertConfig``, with
  the feed-forward width 4x the hidden size; ``electra-small`` is ELECTRA-Small's discriminator
  (Clark et al. 2020, table 6: 12 layers, 256 hidden, 4 heads). Every text method takes these;
  ELECTRA and T5 translate the sizes into their own configs.
* **DeBERTa** (``deberta-tiny`` ... ``deberta-base``): the same sizes with the disentangled
  attention of He et al. 2021 ("DeBERTa: Decoding-enhanced BERT with Disentangled Attention",
  https://arxiv.org/abs/2006.03654) as ``transformers.DebertaV2Config``, for the masked-LM family
  (``build_mlm_model``). Attention scores add content-to-position and position-to-content terms
  to content-to-content (``pos_att_type = ["p2c", "c2p"]``; the paper drops position-to-position)
  over relative positions, with no absolute position at the input (``position_biased_input``
  False). The rest follows the authors' released DeBERTa-v2/v3 configurations: relative
  distances in 256 log buckets, position and content projections shared (``share_att_key``),
  layer-normed relative embeddings, LayerNorm eps 1e-7, no token types. Deviation:
  ``transformers`` has no Enhanced Mask Decoder (the paper's absolute positions added just
  before the MLM softmax, section 3.2), so the masked-LM head sees relative positions only, as
  in the released v3 models; ``position_biased_input=True`` adds BERT's input positions instead.
* **T5** (``t5-small``): T5-Small of Raffel et al. 2020 (6 encoder and 6 decoder blocks, d_model
  512, d_ff 2048, 8 heads of 64, ReLU, 32 relative-position buckets) as ``transformers.T5Config``
  for span corruption (``build_t5_config``, which also translates the BERT sizes).

Nothing is downloaded: a name gives a config, and the weights are trained here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from transformers import (
    BertConfig,
    BertForMaskedLM,
    DebertaV2Config,
    DebertaV2ForMaskedLM,
    PretrainedConfig,
    PreTrainedModel,
    T5Config,
)

from selfsup.config import ConfigError
from selfsup.registry import Registry

TEXT_BACKBONES: Registry[Callable[..., PretrainedConfig]] = Registry("text backbone")
_FAMILY: dict[str, str] = {}  # registered name -> "bert", "deberta" or "t5"

# DeBERTa's attention settings (see the module docstring); sizes come from the registered name.
DEBERTA_ATTENTION: dict[str, Any] = {
    "relative_attention": True,
    "pos_att_type": ["p2c", "c2p"],
    "position_biased_input": False,
    "max_relative_positions": -1,  # = max_position_embeddings
    "position_buckets": 256,
    "share_att_key": True,
    "norm_rel_ebd": "layer_norm",
    "layer_norm_eps": 1e-7,
    "type_vocab_size": 0,
    "hidden_act": "gelu",
}


def _sizes(layers: int, hidden: int, heads: int, overrides: dict[str, Any]) -> dict[str, Any]:
    """BERT-style size fields; overriding ``hidden_size`` alone keeps the 4x feed-forward."""
    return {
        "num_hidden_layers": layers,
        "hidden_size": hidden,
        "num_attention_heads": heads,
        "intermediate_size": 4 * overrides.get("hidden_size", hidden),
    }


def _register(name: str, family: str, description: str, build: Callable[..., Any]) -> None:
    TEXT_BACKBONES.register(name, description)(build)
    _FAMILY[name] = family


def _bert(name: str, layers: int, hidden: int, heads: int, note: str) -> None:
    def build(vocab_size: int, max_position_embeddings: int = 512, **overrides: Any) -> BertConfig:
        return BertConfig(
            vocab_size=vocab_size,
            max_position_embeddings=max_position_embeddings,
            **{**_sizes(layers, hidden, heads, overrides), **overrides},
        )

    _register(name, "bert", f"{note}: {layers} layers, {hidden} hidden, {heads} heads", build)


def _deberta(name: str, layers: int, hidden: int, heads: int, note: str) -> None:
    def build(
        vocab_size: int, max_position_embeddings: int = 512, **overrides: Any
    ) -> DebertaV2Config:
        fields = {**DEBERTA_ATTENTION, **_sizes(layers, hidden, heads, overrides), **overrides}
        return DebertaV2Config(
            vocab_size=vocab_size, max_position_embeddings=max_position_embeddings, **fields
        )

    sizes = f"{layers} layers, {hidden} hidden, {heads} heads"
    description = f"DeBERTa attention (He et al. 2021) at {note} sizes: {sizes}"
    _register(name, "deberta", description, build)


_TURC = {  # name suffix -> (layers, hidden, heads, source)
    "tiny": (2, 128, 2, "BERT-Tiny (Turc et al. 2019)"),
    "mini": (4, 256, 4, "BERT-Mini (Turc et al. 2019)"),
    "small": (4, 512, 8, "BERT-Small (Turc et al. 2019)"),
    "medium": (8, 512, 8, "BERT-Medium (Turc et al. 2019)"),
    "base": (12, 768, 12, "BERT-Base (Devlin et al. 2019)"),
}
for _suffix, (_layers, _hidden, _heads, _note) in _TURC.items():
    _bert(f"bert-{_suffix}", _layers, _hidden, _heads, _note)
    _deberta(f"deberta-{_suffix}", _layers, _hidden, _heads, _note.split(" (")[0])
_bert("electra-small", 12, 256, 4, "ELECTRA-Small discriminator (Clark et al. 2020)")


def _t5_fields(d_model: int, layers: int, heads: int, overrides: dict[str, Any]) -> dict[str, Any]:
    """T5 settings of a size; overriding ``d_model`` alone keeps ``d_ff = 4 d_model`` and
    ``d_kv = d_model / num_heads``, as in T5-Small and T5-Base."""
    width = overrides.get("d_model", d_model)
    fields = {
        "d_model": d_model,
        "d_ff": 4 * width,
        "num_layers": layers,  # each of the encoder and the decoder
        "num_heads": heads,
        "d_kv": width // overrides.get("num_heads", heads),
        "feed_forward_proj": "relu",
        "dropout_rate": 0.1,
        "relative_attention_num_buckets": 32,
        "relative_attention_max_distance": 128,
    }
    return {**fields, **overrides}


def _t5_small(vocab_size: int, max_position_embeddings: int = 512, **overrides: Any) -> T5Config:
    # T5 has relative position buckets only: max_position_embeddings does not apply
    return T5Config(vocab_size=vocab_size, **_t5_fields(512, 6, 8, overrides))


_register(
    "t5-small",
    "t5",
    "T5-Small (Raffel et al. 2020): 6+6 layers, 512 hidden, 8 heads (t5 method only)",
    _t5_small,
)


def backbone_family(name: str) -> str:
    """``"bert"``, ``"deberta"`` or ``"t5"``: the family of the registered backbone ``name``.

    Raises:
        UnknownNameError: ``name`` is not registered (the message lists the valid names).
    """
    TEXT_BACKBONES.get(name)
    return _FAMILY[name]


def _names(*families: str) -> str:
    return ", ".join(n for n in TEXT_BACKBONES.names() if _FAMILY[n] in families)


def _check_fields(overrides: dict[str, Any], known: set[str], kind: str) -> None:
    """A config class accepts unknown keyword arguments silently: refuse them here instead."""
    unknown = sorted(k for k in overrides if k not in known | {"attn_implementation"})
    if unknown:
        raise TypeError(f"not {kind} fields: {', '.join(unknown)}")


def _config_fields(config: PretrainedConfig) -> set[str]:
    return set(config.to_dict()) - set(PretrainedConfig().to_dict()) - {"vocab_size"}


def bert_config_fields() -> set[str]:
    """Names of the ``BertConfig`` fields a BERT backbone's size or settings may override."""
    return _config_fields(BertConfig())


def deberta_config_fields() -> set[str]:
    """Names of the ``DebertaV2Config`` fields a DeBERTa backbone may override (including the
    attention settings transformers reads from the config without declaring them)."""
    return _config_fields(DebertaV2Config(**DEBERTA_ATTENTION))


def build_text_config(
    name: str, vocab_size: int, max_position_embeddings: int = 512, **overrides: Any
) -> BertConfig:
    """The ``BertConfig`` of the BERT-family text backbone ``name``.

    Args:
        name: a registered BERT-family name (``selfsup list`` shows them); unknown names list the
            valid ones.
        vocab_size: rows of the token embedding, usually ``len(tokenizer)``.
        max_position_embeddings: longest sequence the encoder accepts.
        **overrides: ``BertConfig`` fields to change (``hidden_size``, ``num_hidden_layers``,
            ``pad_token_id``, ``hidden_dropout_prob``, ...). Overriding ``hidden_size`` alone
            keeps the feed-forward width at 4x the new size.

    Raises:
        ConfigError: ``name`` is a DeBERTa or T5 backbone, which this method cannot use.
        TypeError: an override is not a ``BertConfig`` field (BertConfig itself would accept it
            silently, hiding a typo).
    """
    family = backbone_family(name)
    if family != "bert":
        raise ConfigError(
            f"backbone {name!r} is a {family} model, which this method cannot use; "
            f"BERT backbones: {_names('bert')}"
        )
    _check_fields(overrides, set(BertConfig().to_dict()), "BertConfig")
    return TEXT_BACKBONES.get(name)(
        vocab_size=vocab_size, max_position_embeddings=max_position_embeddings, **overrides
    )


def mlm_model_class(config: PretrainedConfig) -> type[PreTrainedModel]:
    """The ``transformers`` masked-LM class of a BERT or DeBERTa-v2 config.

    Both keep the encoder at ``model.base_model`` (``.bert`` / ``.deberta``) and the MLM head,
    callable on ``(N, D)`` hidden states and tied to the input embedding, at ``model.cls``.
    """
    classes = {"bert": BertForMaskedLM, "deberta-v2": DebertaV2ForMaskedLM}
    if config.model_type not in classes:
        raise ValueError(f"no masked-LM model for a {config.model_type!r} config")
    return classes[config.model_type]


def build_mlm_model(
    name: str, vocab_size: int, max_position_embeddings: int = 512, **overrides: Any
) -> tuple[PretrainedConfig, type[PreTrainedModel]]:
    """Config and masked-LM class of a BERT or DeBERTa backbone, for the masked-LM methods.

    Args:
        name: a registered BERT or DeBERTa name (``bert-mini``, ``deberta-mini``, ...).
        vocab_size: rows of the token embedding, usually ``len(tokenizer)``.
        max_position_embeddings: longest sequence the encoder accepts.
        **overrides: fields of the family's config (``BertConfig`` / ``DebertaV2Config``).

    Returns:
        ``(config, model_class)``: ``BertForMaskedLM`` or ``DebertaV2ForMaskedLM``; build the
        model with ``model_class(config)``.

    Raises:
        ConfigError: ``name`` is a T5 backbone.
        TypeError: an override is not a field of the family's config.
    """
    family = backbone_family(name)
    if family == "bert":
        config = build_text_config(name, vocab_size, max_position_embeddings, **overrides)
    elif family == "deberta":
        known = set(DebertaV2Config(**DEBERTA_ATTENTION).to_dict())
        _check_fields(overrides, known, "DebertaV2Config")
        config = TEXT_BACKBONES.get(name)(vocab_size, max_position_embeddings, **overrides)
    else:
        raise ConfigError(
            f"backbone {name!r} is a {family} model; masked-LM backbones: "
            f"{_names('bert', 'deberta')}"
        )
    return config, mlm_model_class(config)


def build_t5_config(name: str, vocab_size: int, **overrides: Any) -> T5Config:
    """The ``T5Config`` of ``name``: a T5 backbone, or a BERT size translated to T5.

    A BERT size gives ``d_model`` = hidden size, ``d_ff = 4 d_model`` (BERT's feed-forward
    width), ``num_heads`` = attention heads (``d_kv = d_model / num_heads``) and that many blocks
    in the encoder and in the decoder, with T5's ReLU feed-forward, dropout 0.1 and 32
    relative-position buckets (maximum distance 128).

    Args:
        name: ``t5-small`` or a registered BERT-family name.
        vocab_size: rows of the (shared) token embedding, usually ``len(tokenizer)``.
        **overrides: ``T5Config`` fields (``d_model``, ``num_layers``, ``pad_token_id``, ...).

    Raises:
        ConfigError: ``name`` is a DeBERTa backbone.
        TypeError: an override is not a ``T5Config`` field.
    """
    family = backbone_family(name)
    # decoder_start_token_id is read by T5 but is no longer a declared field in transformers 5
    _check_fields(overrides, {*T5Config().to_dict(), "decoder_start_token_id"}, "T5Config")
    if family == "t5":
        return TEXT_BACKBONES.get(name)(vocab_size, **overrides)
    if family != "bert":
        raise ConfigError(
            f"backbone {name!r} is a {family} model; T5 backbones: {_names('t5', 'bert')}"
        )
    bert = TEXT_BACKBONES.get(name)(vocab_size)
    sizes = (bert.hidden_size, bert.num_hidden_layers, bert.num_attention_heads)
    return T5Config(vocab_size=vocab_size, **_t5_fields(*sizes, overrides))


# Architecture fields that BertConfig, RobertaConfig, AlbertConfig and ElectraConfig share, with one
# meaning: how RoBERTa, ALBERT and ELECTRA translate a registered BERT size into their configs.
ENCODER_FIELDS = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "hidden_act",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "max_position_embeddings",
    "type_vocab_size",
    "initializer_range",
    "layer_norm_eps",
    "pad_token_id",
)


def encoder_fields(config: BertConfig) -> dict[str, Any]:
    """The architecture fields of ``config`` that RoBERTa's and ALBERT's configs share with it."""
    return {name: getattr(config, name) for name in ENCODER_FIELDS}
