"""Registry-parametrised smoke tests: every method builds, gives a finite loss, and sends a
gradient to every trainable parameter. Image methods also: the papers' defaults, and a step on
every backbone family each supports (a clear refusal for the others)."""

import math

import pytest
import torch

from selfsup.methods import METHODS, BuildContext

# Tiny settings per method so the whole file runs in seconds on a CPU.
TINY = {
    "simclr": {"proj_hidden_dim": 64, "proj_dim": 16},
    "mlm": {},
    "clip": {"text_backbone": "bert-tiny", "embed_dim": 16},
    "instdisc": {"feature_dim": 16, "num_negatives": 64},
    "moco": {"queue_size": 16, "proj_hidden_dim": 32, "proj_dim": 8, "bn_splits": 2},
    "mocov3": {"proj_hidden_dim": 32, "proj_dim": 8, "pred_hidden_dim": 32},
    "byol": {"proj_hidden_dim": 32, "proj_dim": 8, "pred_hidden_dim": 32},
    "simsiam": {"proj_hidden_dim": 32, "proj_dim": 16, "pred_hidden_dim": 8},
    "mae": {"decoder_dim": 32, "decoder_depth": 1, "decoder_heads": 2},
    "inpainting": {"decoder_width": 32},
    "colorization": {"head_width": 32},
    "swav": {"num_prototypes": 16, "proj_hidden_dim": 32, "proj_dim": 8, "num_local": 2},
    "dino": {"out_dim": 32, "hidden_dim": 32, "bottleneck_dim": 8, "num_local": 2},
    "barlowtwins": {"proj_dim": 32},
    "vicreg": {"proj_dim": 32},
    "rotation": {},
    "jigsaw": {"num_permutations": 10, "head_hidden_dim": 16},
    "relative_patch": {"head_hidden_dim": 16},
    "gpt": {},
    "bert": {},
    "roberta": {},
    "albert": {"embedding_size": 32},
    "electra": {"hidden_size": 64, "num_attention_heads": 2},
    "t5": {"num_sentinels": 2, "d_model": 32, "num_heads": 2},
    "simcse": {},
    "word2vec": {"dim": 16, "min_count": 1},
}
BACKBONE = {"image": "resnet18", "text": "bert-tiny", "pair": "resnet18"}
BACKBONE_FOR = {"mae": "vit_tiny_patch4"}  # methods that need another backbone family


def make_batch(kind, tokenizer, b=4, size=16, seq_len=12):
    g = torch.Generator().manual_seed(0)
    batch = {}
    if kind in ("image", "pair"):
        batch["image"] = torch.randint(0, 256, (b, 3, size, size), dtype=torch.uint8, generator=g)
        batch["label"] = torch.full((b,), -1)
        batch["index"] = torch.arange(b)
    if kind in ("text", "pair"):
        texts = ["a small red circle above a blue square", "the quick brown fox"] * (b // 2)
        enc = tokenizer(
            texts,
            padding="max_length",
            max_length=seq_len,
            truncation=True,
            return_tensors="pt",
            return_special_tokens_mask=True,
        )
        batch.update(
            input_ids=enc["input_ids"],
            attention_mask=enc["attention_mask"],
            special_tokens_mask=enc["special_tokens_mask"].bool(),
        )
    return batch


def test_every_registered_method_has_a_tiny_config():
    assert set(METHODS.names()) == set(TINY)


_TOKENIZERS = {}


def tokenizer_for(cls, args, default, corpus):
    """The wordpiece fixture, or a tiny tokenizer of the method's own kind and special tokens."""
    specials = tuple(cls.tokenizer_specials(args))
    if cls.kind == "image" or (cls.tokenizer_kind == "wordpiece" and not specials):
        return default
    key = (cls.tokenizer_kind, specials)
    if key not in _TOKENIZERS:
        from selfsup.data.tokenizer import train_tokenizer

        _TOKENIZERS[key] = train_tokenizer(
            corpus, kind=cls.tokenizer_kind, vocab_size=300, extra_special_tokens=specials
        )
    return _TOKENIZERS[key]


def training_batch(method, tokenizer, corpus, b=4):
    """A batch from the method's own ``training_data`` over a tiny corpus, or None."""
    documents = [{"text": ". ".join(corpus[i : i + 3]) + "."} for i in range(0, len(corpus), 3)]
    custom = method.training_data(documents, tokenizer, 12)
    if custom is None:
        return None
    dataset, collate = custom
    loader = torch.utils.data.DataLoader(dataset, batch_size=b, collate_fn=collate)
    return next(iter(loader))


def assert_trains(method, batch):
    """One step: a finite loss, a gradient in every trainable parameter, then ``after_step``."""
    out = method(batch)
    assert math.isfinite(float(out["loss"].detach()))
    out["loss"].backward()
    missing = [n for n, p in method.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"no gradient reached {missing[:5]}"
    method.after_step(1, 10)


@pytest.mark.parametrize("name", METHODS.names())
def test_method_step(name, tiny_tokenizer, tiny_corpus):
    torch.manual_seed(0)
    cls = METHODS.get(name)
    tokenizer = tokenizer_for(cls, TINY[name], tiny_tokenizer, tiny_corpus)
    ctx = BuildContext(
        BACKBONE_FOR.get(name, BACKBONE[cls.kind]),
        image_size=16,
        tokenizer=tokenizer,
        seq_len=12,
        batch_size=4,
        num_samples=16,
    )
    method = cls.build(ctx, **TINY[name])
    batch = training_batch(method, tokenizer, tiny_corpus) or make_batch(cls.kind, tokenizer)
    assert_trains(method, batch)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # losses keep fp32 where they need it
        assert math.isfinite(float(method(batch)["loss"].detach()))
    method.eval()
    feats = method.embed(batch)
    assert feats.ndim == 2 and feats.shape[0] == 4 and torch.isfinite(feats).all()
    assert not feats.requires_grad  # evaluation builds no autograd graph
    if "finetune" in cls.protocols:  # the encoder the finetune protocol trains
        encoder = method.encoder_for_finetuning()
        if cls.kind == "image":
            pooled = encoder(batch["image"])
            torch.testing.assert_close(pooled, feats)  # the features embed gives
        else:
            ids = batch["input_ids"]
            pooled = encoder(ids, batch.get("attention_mask", torch.ones_like(ids)))
        assert pooled.shape == (4, encoder.dim) and torch.isfinite(pooled).all()


def test_unknown_method_lists_valid_names():
    with pytest.raises(KeyError, match="simclr"):
        METHODS.get("simclrr")


def test_method_args_are_checked_against_what_the_method_takes():
    from selfsup.checks import check_method_args
    from selfsup.config import ConfigError

    check_method_args(METHODS.get("simclr"), {"temperature": 0.5, "proj_dim": 64})
    check_method_args(METHODS.get("mlm"), {"hidden_size": 64, "mlm_probability": 0.2})
    for name, bad in (("simclr", "temprature"), ("mlm", "hidden_sise"), ("clip", "backbone")):
        with pytest.raises(ConfigError, match=bad):
            check_method_args(METHODS.get(name), {bad: 1})


def test_settings_that_would_silently_break_a_method_are_refused():
    from selfsup.checks import check_precision_and_norm
    from selfsup.config import ConfigError

    for name in ("moco", "mocov3", "byol", "dino", "swav", "instdisc", "colorization"):
        with pytest.raises(ConfigError, match="bf16-mixed"):
            check_precision_and_norm(name, METHODS.get(name), "bf16-true", False)
    check_precision_and_norm("simclr", METHODS.get("simclr"), "bf16-true", True)
    with pytest.raises(ConfigError, match="shuffling batch norm"):
        check_precision_and_norm("moco", METHODS.get("moco"), "bf16-mixed", True)


def test_backbone_names_are_checked_against_the_method_or_its_kind():
    from selfsup.checks import check_backbone
    from selfsup.config import ConfigError

    check_backbone(METHODS.get("simclr"), "resnet18")
    check_backbone(METHODS.get("mlm"), "bert-mini")
    check_backbone(METHODS.get("gpt"), "gpt2")  # a size only the gpt method builds
    with pytest.raises(KeyError, match="bert-mini"):
        check_backbone(METHODS.get("mlm"), "gpt2")
    with pytest.raises(ConfigError, match="gpt2"):
        check_backbone(METHODS.get("gpt"), "resnet18")


def test_word2vec_cbow_recipe_doubles_the_learning_rate(tiny_corpus):
    from selfsup.data.tokenizer import train_tokenizer

    tok = train_tokenizer(tiny_corpus, kind="wordlevel", vocab_size=300)
    ctx = BuildContext(tokenizer=tok, seq_len=12)
    skipgram = METHODS.get("word2vec").build(ctx, dim=8, min_count=1)
    cbow = METHODS.get("word2vec").build(ctx, dim=8, min_count=1, architecture="cbow")
    assert skipgram.recipe().lr == 0.025 and cbow.recipe().lr == 0.05
    assert cbow.recipe().schedule == "linear" and cbow.recipe().warmup == 0.0


# ---- image methods: the papers' defaults, and every backbone family each supports ----

# The values the papers state, by method argument (the module docstrings cite them).
PAPER_DEFAULTS = {
    "simclr": {"proj_dim": 128},
    "moco": {"queue_size": 65536, "temperature": 0.2, "momentum": 0.999, "proj_dim": 128},
    "mocov3": {"base_momentum": 0.99, "proj_dim": 256, "pred_hidden_dim": 4096},
    "byol": {"base_momentum": 0.996, "proj_dim": 256, "pred_hidden_dim": 4096},
    "simsiam": {"pred_hidden_dim": 512, "proj_dim": 2048},
    "swav": {"epsilon": 0.05, "sinkhorn_iterations": 3, "temperature": 0.1},
    "dino": {
        "center_momentum": 0.9,
        "warmup_teacher_temp": 0.04,
        "teacher_temp": 0.07,
        "student_temp": 0.1,
        "momentum": 0.996,
        "out_dim": 65536,
    },
    "barlowtwins": {"lambd": 0.0051, "proj_dim": 8192},
    "vicreg": {"sim_coeff": 25.0, "std_coeff": 25.0, "cov_coeff": 1.0, "proj_dim": 8192},
    "instdisc": {"temperature": 0.07, "num_negatives": 4096, "bank_momentum": 0.5},
    "mae": {"mask_ratio": 0.75, "norm_pix_loss": True},
    "rotation": {},
    "jigsaw": {"num_permutations": 100},
    "relative_patch": {},
    "inpainting": {"mask": "center"},
    "colorization": {"loss": "classification", "neighbours": 5, "sigma": 5.0, "rebalance": 0.5},
}
IMAGE_METHODS = sorted(n for n in METHODS.names() if METHODS.get(n).kind == "image")
FAMILIES = {"resnet": "resnet18", "vit": "vit_tiny_patch4"}


def test_every_image_method_is_listed():
    assert set(PAPER_DEFAULTS) == set(IMAGE_METHODS)


@pytest.mark.parametrize("name", IMAGE_METHODS)
def test_defaults_are_the_papers(name):
    defaults = METHODS.get(name).argument_defaults()
    assert {k: defaults[k] for k in PAPER_DEFAULTS[name]} == PAPER_DEFAULTS[name]


@pytest.mark.parametrize("name", IMAGE_METHODS)
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_trains_on_each_supported_backbone_family_and_refuses_the_others(name, family):
    cls = METHODS.get(name)
    ctx = BuildContext(FAMILIES[family], image_size=16, batch_size=4, num_samples=16)
    if family not in cls.architectures:
        with pytest.raises(ValueError, match=f"needs a .*backbone; '{FAMILIES[family]}' is a"):
            cls.build(ctx, **TINY[name])
        return
    torch.manual_seed(0)
    method = cls.build(ctx, **TINY[name])
    batch = make_batch("image", None)
    assert_trains(method, batch)
    method.eval()
    feats = method.embed(batch)
    assert feats.shape[0] == 4 and torch.isfinite(feats).all()
