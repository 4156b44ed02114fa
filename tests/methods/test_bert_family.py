"""BERT, RoBERTa and ALBERT pretraining: losses against transformers' own, gradients, sharing,
positions, export, and the mlm / pseudo_perplexity evaluation interfaces."""

import math
import random
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from transformers import AutoModel, AutoTokenizer

from selfsup.config import ConfigError
from selfsup.data.packing import PackedBlocks
from selfsup.data.tokenizer import train_tokenizer
from selfsup.evaluate.protocols import EVAL_PROTOCOLS, EvalOptions
from selfsup.evaluate.protocols.masked_accuracy import masked_token_accuracy
from selfsup.evaluate.protocols.pseudo_ppl import pseudo_log_likelihood
from selfsup.methods.base import METHODS, BuildContext, create_method
from selfsup.views.tokens import IGNORE_INDEX

SEQ_LEN = 24
TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2}
KIND = {"mlm": "wordpiece", "bert": "wordpiece", "roberta": "bpe", "albert": "unigram"}
PAIR_KEY = {"bert": "next_sentence_label", "albert": "sentence_order_label"}
WORDS = (
    "the a cat dog bird sat ran flew on under over mat tree roof big small red blue green "
    "quickly slowly home park river morning night"
).split()


def make_docs(n=40, seed=0):
    rng = random.Random(seed)
    docs = []
    for _ in range(n):
        sentences = [
            " ".join(rng.choices(WORDS, k=rng.randint(3, 8))).capitalize()
            for _ in range(rng.randint(2, 8))
        ]
        docs.append(". ".join(sentences) + ".")
    return docs


@pytest.fixture(scope="module")
def docs():
    return make_docs()


@pytest.fixture(scope="module")
def tokenizers(docs):
    kinds = set(KIND.values())
    return {k: train_tokenizer(docs, kind=k, vocab_size=150) for k in sorted(kinds)}


def build(name, tok, seq_len=SEQ_LEN, **kw):
    torch.manual_seed(0)
    ctx = BuildContext(backbone="bert-tiny", tokenizer=tok, seq_len=seq_len)
    extra = {"embedding_size": 16} if name == "albert" else {}
    return create_method(name, ctx, max_position_embeddings=64, **{**TINY, **extra, **kw})


def batch_for(method, tok, docs, batch_size=8):
    custom = method.training_data([{"text": d} for d in docs], tok, SEQ_LEN)
    if custom is None:
        return next(iter(DataLoader(PackedBlocks(docs, tok, SEQ_LEN), batch_size=batch_size)))
    dataset, collate = custom
    return next(iter(DataLoader(dataset, batch_size=batch_size, collate_fn=collate)))


def method_and_batch(name, tokenizers, docs, **kw):
    tok = tokenizers[KIND[name]]
    method = build(name, tok, **kw)
    return method, tok, batch_for(method, tok, docs)


def test_registered_with_the_papers_settings():
    for name in ("bert", "roberta", "albert"):
        cls = METHODS.get(name)
        assert cls.kind == "text" and cls.tokenizer_kind == KIND[name]
        assert {"mlm", "pseudo_perplexity", "knn", "linear"} <= set(cls.protocols)
        optimizer = "lamb" if name == "albert" else "adamw"  # ALBERT: LAMB, lr 0.00176
        assert cls.defaults.optimizer == optimizer and cls.defaults.schedule == "linear"
        assert cls.defaults.weight_decay == 0.01 and cls.defaults.eps == 1e-6
    assert METHODS.get("roberta").defaults.betas == (0.9, 0.98)
    assert {"short_seq_prob", "hidden_size"} <= set(METHODS.get("bert").argument_names())
    assert {"embedding_size", "num_hidden_groups"} <= set(METHODS.get("albert").argument_names())


@pytest.mark.parametrize("name", ["bert", "albert"])
def test_pair_losses_equal_transformers_own(name, tokenizers, docs):
    method, _, batch = method_and_batch(name, tokenizers, docs)
    method.eval()  # no dropout, so the two passes see the same network
    key = PAIR_KEY[name]
    assert set(batch[key].tolist()) <= {0, 1}
    torch.manual_seed(1)
    out = method(batch)
    torch.manual_seed(1)
    masked, labels, attention_mask = method.mask(batch)  # the same draw as forward's
    assert (labels != IGNORE_INDEX).any()
    ref = method.model(
        input_ids=masked,
        attention_mask=attention_mask,
        token_type_ids=batch["token_type_ids"],
        labels=labels,
        **{key: batch[key]},
    )
    torch.testing.assert_close(out["loss"], ref.loss)
    pair_logits = ref.seq_relationship_logits if name == "bert" else ref.sop_logits
    task = "nsp" if name == "bert" else "sop"
    torch.testing.assert_close(out[f"{task}_loss"], F.cross_entropy(pair_logits, batch[key]))
    acc = (pair_logits.argmax(-1) == batch[key]).float().mean()
    torch.testing.assert_close(out[f"{task}_acc"], acc)
    assert 0 <= out["mlm_acc"].item() <= 1


def test_roberta_loss_equals_transformers_own(tokenizers, docs):
    method, _, batch = method_and_batch("roberta", tokenizers, docs)
    method.eval()
    torch.manual_seed(2)
    out = method(batch)
    torch.manual_seed(2)
    masked, labels, attention_mask = method.mask(batch)
    ref = method.model(input_ids=masked, attention_mask=attention_mask, labels=labels)
    torch.testing.assert_close(out["loss"], ref.loss)
    assert abs(out["loss"].item() - math.log(len(tokenizers["bpe"]))) < 0.5  # untrained


@pytest.mark.parametrize("name", ["bert", "roberta", "albert"])
def test_a_training_step_reaches_every_parameter(name, tokenizers, docs):
    method, _, batch = method_and_batch(name, tokenizers, docs)
    before = {n: p.detach().clone() for n, p in method.named_parameters()}
    optimizer = torch.optim.AdamW(method.parameters(), lr=1e-3, weight_decay=0.0)
    loss = method(batch)["loss"]
    loss.backward()
    missing = [n for n, p in method.named_parameters() if p.grad is None]
    assert not missing, missing
    optimizer.step()
    unchanged = [n for n, p in method.named_parameters() if torch.equal(p, before[n])]
    assert not unchanged, unchanged


def test_albert_factorises_the_embedding_and_shares_all_layers(tokenizers):
    tok = tokenizers["unigram"]
    ctx = BuildContext(backbone="bert-mini", tokenizer=tok, seq_len=SEQ_LEN)
    albert = create_method("albert", ctx)
    bert = create_method("bert", ctx)
    config = albert.model.config
    assert config.embedding_size == 128 and config.hidden_size == 256
    assert config.num_hidden_layers == 4 and config.num_hidden_groups == 1
    emb = albert.model.albert.embeddings.word_embeddings.weight
    assert emb.shape == (len(tok), 128)
    assert albert.model.albert.encoder.embedding_hidden_mapping_in.weight.shape == (256, 128)
    groups = albert.model.albert.encoder.albert_layer_groups
    assert len(groups) == 1 and len(groups[0].albert_layers) == 1  # one layer, applied 4 times
    layer = sum(p.numel() for p in groups[0].parameters())
    bert_layers = sum(p.numel() for p in bert.model.bert.encoder.parameters())
    assert bert_layers == 4 * layer  # BERT has four such layers, ALBERT shares one
    assert albert.model.predictions.decoder.weight is emb  # output tied to the E-dim table


def test_roberta_positions_start_after_the_pad_id(tokenizers, docs):
    tok = tokenizers["bpe"]
    assert tok.pad_token_id == 1
    method = build("roberta", tok, seq_len=64)
    config = method.model.config
    assert config.max_position_embeddings == 64 + 2 and config.type_vocab_size == 1
    assert config.pad_token_id == 1
    blocks = DataLoader(PackedBlocks(docs, tok, 64), batch_size=2)
    out = method(next(iter(blocks)))  # a block of the longest length fits the table
    assert torch.isfinite(out["loss"])
    default = create_method("roberta", BuildContext(backbone="bert-tiny", tokenizer=tok))
    assert default.model.config.max_position_embeddings == 514  # as roberta-base


@pytest.mark.parametrize("name", ["bert", "roberta", "albert"])
def test_export_loads_with_auto_model_and_reproduces_hidden_states(
    name, tokenizers, docs, tmp_path
):
    method, tok, batch = method_and_batch(name, tokenizers, docs)
    method.eval()
    method.export(tmp_path)
    model = AutoModel.from_pretrained(tmp_path).eval()
    assert type(model).__name__ == type(method.encoder).__name__
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded(docs[:3])["input_ids"] == tok(docs[:3])["input_ids"]
    pair = loaded(docs[0], docs[1], truncation=True, max_length=SEQ_LEN)
    if "token_type_ids" in batch:  # trained with segment ids: the tokenizer gives them
        types = pair["token_type_ids"]
        assert types == sorted(types) and types[0] == 0 and types[-1] == 1
    else:
        assert "token_type_ids" not in pair
    enc = tok(docs[:3], padding=True, truncation=True, max_length=SEQ_LEN, return_tensors="pt")
    inputs = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
    with torch.no_grad():
        torch.testing.assert_close(
            model(**inputs).last_hidden_state, method.encoder(**inputs).last_hidden_state
        )
        mask = enc["attention_mask"].unsqueeze(-1).float()
        pooled = (model(**inputs).last_hidden_state * mask).sum(1) / mask.sum(1)
        torch.testing.assert_close(pooled, method.embed(dict(enc)), atol=1e-5, rtol=1e-5)
        if "token_type_ids" in batch:  # the pair inputs the encoder was trained on
            pair = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
            torch.testing.assert_close(
                model(**pair).last_hidden_state, method.encoder(**pair).last_hidden_state
            )


@pytest.mark.parametrize("name", ["bert", "roberta", "albert"])
def test_mlm_protocol_interface(name, tokenizers, docs):
    tok = tokenizers[KIND[name]]
    method = build(name, tok)
    loader = DataLoader(PackedBlocks(docs, tok, SEQ_LEN), batch_size=4)
    first = masked_token_accuracy(method, loader, seed=3, max_batches=2)
    assert method.training and 0.0 <= first <= 1.0
    assert first == masked_token_accuracy(method, loader, seed=3, max_batches=2)


def one_at_a_time(method, blocks):
    """PLL by the definition: one full forward of the transformers model per scored token."""
    total, count = 0.0, 0
    for block in blocks:
        ids = block["input_ids"]
        for i in torch.nonzero(~block["special_tokens_mask"]).flatten().tolist():
            copy = ids.clone()
            copy[i] = method.mask_token_id
            with torch.no_grad():
                out = method.model(input_ids=copy[None], attention_mask=torch.ones_like(copy)[None])
            logits = out.logits if hasattr(out, "logits") else out.prediction_logits  # (1, L, V)
            total += torch.log_softmax(logits[0, i], -1)[ids[i]].item()
            count += 1
    return total, count


@pytest.mark.parametrize("name", ["mlm", "bert", "roberta", "albert"])
def test_pseudo_log_likelihood_equals_the_explicit_loop(name, tokenizers, docs):
    tok = tokenizers[KIND[name]]
    method = build(name, tok, seq_len=12, num_hidden_layers=1).eval()
    blocks = list(PackedBlocks(docs[:4], tok, 12))[:2]
    total, count = pseudo_log_likelihood(method, blocks, max_tokens=None, batch_size=4)
    ref_total, ref_count = one_at_a_time(method, blocks)
    assert count == ref_count > 15
    assert total == pytest.approx(ref_total, rel=1e-5)


def test_pseudo_perplexity_protocol(tokenizers, docs):
    tok = tokenizers["wordpiece"]
    method = build("bert", tok, seq_len=16).eval()
    run = SimpleNamespace(
        method=method, tokenizer=tok, config=SimpleNamespace(seq_len=16), path="r"
    )
    source = SimpleNamespace(test=docs, name="docs")
    protocol = EVAL_PROTOCOLS.get("pseudo_perplexity")
    result = protocol(run, source, EvalOptions(batch_size=7, extra={"max_tokens": "30"}))
    assert result["scored_tokens"] == 30
    total, count = pseudo_log_likelihood(method, PackedBlocks(docs, tok, 16), 30)
    assert result["pseudo_perplexity"] == pytest.approx(math.exp(-total / count))
    assert len(tok) / 2 < result["pseudo_perplexity"] < 2 * len(tok)  # untrained: near uniform
    with pytest.raises(ConfigError, match="max_tokens"):
        protocol(run, source, EvalOptions(extra={"max_token": "30"}))
    with pytest.raises(ConfigError, match="max_tokens"):
        protocol(run, source, EvalOptions(extra={"max_tokens": "many"}))


def test_pair_methods_need_pair_batches(tokenizers, docs):
    tok = tokenizers["wordpiece"]
    method = build("bert", tok)
    blocks = next(iter(DataLoader(PackedBlocks(docs, tok, SEQ_LEN), batch_size=2)))
    with pytest.raises(KeyError, match="next_sentence_label"):
        method(blocks)
