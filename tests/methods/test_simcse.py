"""Unsupervised SimCSE: the loss against an explicit loop, dropout as the only noise, gradients,
sentence training data and the export."""

import math

import pytest
import torch

from selfsup.data.text import SentenceStream, split_sentences
from selfsup.methods import BuildContext, create_method
from selfsup.methods.simcse import simcse_loss

TINY = {"hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64}


def build(tokenizer, **kwargs):
    torch.manual_seed(0)
    ctx = BuildContext("bert-tiny", tokenizer=tokenizer, seq_len=12, batch_size=4)
    return create_method("simcse", ctx, **{**TINY, **kwargs})


def batch_of(tokenizer, texts):
    enc = tokenizer(texts, padding=True, return_tensors="pt", return_token_type_ids=False)
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


TEXTS = [
    "the quick brown fox jumps over the lazy dog",
    "a small red circle",
    "masked language models predict hidden words",
    "contrastive methods pull two views together",
]


def reference_loss(z1, z2, t):
    """Mean over i of -log softmax_j(cos(z1_i, z2_j) / t)[i], with explicit sums."""
    n = len(z1)

    def cos(a, b):
        return sum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(
            sum(x * x for x in a) * sum(y * y for y in b)
        )

    total = 0.0
    for i in range(n):
        scores = [math.exp(cos(z1[i], z2[j]) / t) for j in range(n)]
        total -= math.log(scores[i] / sum(scores))
    return total / n


def test_loss_matches_an_explicit_loop():
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g)
    for t in (0.05, 0.5):
        expected = reference_loss(z1.tolist(), z2.tolist(), t)
        assert simcse_loss(z1, z2, t).item() == pytest.approx(expected, rel=1e-5)
    # one-directional: the first views are the queries, the second views the keys
    assert simcse_loss(z1, z2).item() != pytest.approx(simcse_loss(z2, z1).item(), rel=1e-3)
    # identical, well-separated views give a loss near 0
    eye = torch.eye(4) * 3
    assert simcse_loss(eye, eye).item() < 1e-6


def test_the_two_passes_differ_only_through_dropout(tiny_tokenizer):
    batch = batch_of(tiny_tokenizer, TEXTS)
    method = build(tiny_tokenizer).train()
    z1, z2 = method.encode_views(batch)
    assert z1.shape == (4, 32) and not torch.allclose(z1, z2)
    method.eval()
    z1, z2 = method.encode_views(batch)
    torch.testing.assert_close(z1, z2)
    no_dropout = build(tiny_tokenizer, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    z1, z2 = no_dropout.train().encode_views(batch)
    torch.testing.assert_close(z1, z2)


def test_gradient_reaches_every_parameter_and_the_mlp_is_training_only(tiny_tokenizer):
    batch = batch_of(tiny_tokenizer, TEXTS)
    method = build(tiny_tokenizer).train()
    out = method(batch)
    assert math.isfinite(out["loss"].item()) and -1 <= out["positive_cos"].item() <= 1
    out["loss"].backward()
    missing = [n for n, p in method.named_parameters() if p.grad is None or not p.grad.any()]
    assert not missing, missing
    assert any(n.startswith("mlp.") for n, _ in method.named_parameters())
    method.eval()
    hidden = method.encoder.bert(**batch).last_hidden_state  # (B, L, D)
    torch.testing.assert_close(method.embed(batch), hidden[:, 0])  # [CLS] without the MLP
    mean = build(tiny_tokenizer, pooling="mean")
    assert mean.mlp is None and not any(n.startswith("mlp.") for n, _ in mean.named_parameters())
    with pytest.raises(ValueError, match="pooling"):
        build(tiny_tokenizer, pooling="max")


def test_split_sentences():
    text = (
        "Dr. Smith moved to the U.S. in 1850. He built a mill, e.g. for grain! "
        'Did it work? "Yes," he said. Ok.\nA new line starts here'
    )
    assert split_sentences(text) == [
        "Dr. Smith moved to the U.S. in 1850.",
        "He built a mill, e.g. for grain!",
        "Did it work?",
        '"Yes," he said.',
        "A new line starts here",
    ]
    assert split_sentences(text, min_words=1)[-2:] == ["Ok.", "A new line starts here"]


def documents():
    return [
        {"text": " ".join(f"Document {d} has sentence number {s}." for s in range(5))}
        for d in range(6)
    ]


def test_training_data_is_every_sentence_once_shuffled_and_sharded(tiny_tokenizer):
    method = build(tiny_tokenizer)
    dataset, collate = method.training_data(documents(), tiny_tokenizer, 8)
    sentences = [s["text"] for s in dataset]
    expected = [f"Document {d} has sentence number {s}." for d in range(6) for s in range(5)]
    assert sorted(sentences) == sorted(expected) and sentences != expected
    assert sentences == [s["text"] for s in dataset]  # same epoch, same order
    dataset.set_epoch(1)
    assert [s["text"] for s in dataset] != sentences
    shards = [
        [s["text"] for s in SentenceStream(documents(), rank=r, world_size=2)] for r in (0, 1)
    ]
    assert not set(shards[0]) & set(shards[1]) and sorted(shards[0] + shards[1]) == sorted(expected)
    batch = collate([{"text": "the fox"}, {"text": " ".join(["word"] * 20)}])
    assert set(batch) == {"input_ids", "attention_mask"}
    assert batch["input_ids"].shape == (2, 8) and batch["attention_mask"][0].sum() < 8
    assert batch["input_ids"][1, -1] == tiny_tokenizer.sep_token_id  # truncated, [SEP] kept
    short = collate([{"text": "the fox"}])
    assert short["input_ids"].shape[1] < 8  # padded to the batch's longest only


def test_export_loads_with_automodel(tiny_tokenizer, tmp_path):
    from transformers import AutoModel, AutoTokenizer

    method = build(tiny_tokenizer).eval()
    method.export(tmp_path / "export")
    model = AutoModel.from_pretrained(tmp_path / "export").eval()
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "export")
    batch = batch_of(tokenizer, TEXTS)
    with torch.no_grad():
        cls = model(**batch).last_hidden_state[:, 0]
    torch.testing.assert_close(cls, method.embed(batch))
