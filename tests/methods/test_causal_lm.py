"""GPT causal language modelling: targets, causality, the loss against transformers', training,
export, and the perplexity protocol against an independent computation."""

import copy
import math
from types import SimpleNamespace

import pytest
import torch
from transformers import GPT2LMHeadModel

from selfsup.methods import METHODS, BuildContext
from selfsup.methods.causal_lm import (
    CausalBlocks,
    CausalLM,
    build_gpt_config,
    next_token_labels,
)

TINY = {"n_layer": 2, "n_embd": 32, "n_head": 2}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread: on the shared 2-core machine, two threads per tiny matmul made each
    step about 30x slower under load."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def bpe(tiny_corpus):
    from selfsup.data.tokenizer import train_tokenizer

    return train_tokenizer(tiny_corpus, kind="bpe", vocab_size=300)


@pytest.fixture(scope="module")
def bpe_pad_is_eos(bpe):
    """GPT-2's usual setting: no pad token of its own, padding with eos."""
    tok = copy.deepcopy(bpe)
    tok.pad_token = tok.eos_token
    assert tok.pad_token_id == tok.eos_token_id
    return tok


def tiny_gpt(tokenizer, seq_len=64, **overrides):
    torch.manual_seed(0)
    ctx = BuildContext("bert-tiny", tokenizer=tokenizer, seq_len=seq_len)
    return CausalLM.build(ctx, **{**TINY, **overrides})


def padded_batch(tokenizer, texts):
    """Right-padded rows, each text followed by eos (as documents are in training)."""
    rows = [
        tokenizer(t, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        for t in texts
    ]
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), tokenizer.pad_token_id)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    return {"input_ids": ids, "attention_mask": mask}


def test_registered_with_its_kind_tokenizer_and_protocols():
    assert METHODS.get("gpt") is CausalLM
    assert CausalLM.kind == "text" and CausalLM.tokenizer_kind == "bpe"
    assert CausalLM.protocols == ("perplexity", "knn", "linear", "finetune")


def test_labels_keep_eos_as_a_target_when_pad_shares_its_id():
    eos = pad = 2
    ids = torch.tensor([[5, 6, eos, 7, 8], [5, 6, eos, pad, pad], [9, eos, 4, eos, pad]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 1, 1, 0]])
    expected = torch.tensor([[6, eos, 7, 8], [6, eos, -100, -100], [eos, 4, eos, -100]])
    assert torch.equal(next_token_labels(ids, mask), expected)


def test_blocks_are_documents_each_followed_by_eos_cut_into_seq_len(bpe):
    docs = [{"text": "the quick brown fox"}, {"text": "a blue square"}, {"text": "self supervised"}]
    stream = []
    for d in docs:
        stream += bpe(d["text"], add_special_tokens=False)["input_ids"] + [bpe.eos_token_id]
    full = list(CausalBlocks(docs, bpe, 5))
    assert [b["input_ids"].tolist() for b in full] == [
        stream[i : i + 5] for i in range(0, len(stream) - 4, 5)
    ]
    assert all(b["attention_mask"].sum() == 5 for b in full)  # no padding, no [CLS]/[SEP] added
    with_tail = list(CausalBlocks(docs, bpe, 5, keep_tail=True))
    tail = stream[len(full) * 5 :]
    assert len(with_tail) == len(full) + (len(tail) > 1)
    if len(tail) > 1:
        last = with_tail[-1]
        assert last["input_ids"][: len(tail)].tolist() == tail
        assert last["attention_mask"].tolist() == [1] * len(tail) + [0] * (5 - len(tail))


def test_token_nll_scores_eos_when_pad_id_equals_eos_id(bpe_pad_is_eos):
    tok = bpe_pad_is_eos
    method = tiny_gpt(tok).eval()
    batch = padded_batch(tok, ["the quick brown fox jumps over the lazy dog", "a blue square"])
    ids, mask = batch["input_ids"], batch["attention_mask"]
    with torch.no_grad():
        nll, count = method.token_nll(batch)
        # independent: a plain loop over every position whose token and next token are real
        logp = method.model(input_ids=ids, attention_mask=mask).logits.log_softmax(-1)
    total, n = 0.0, 0
    for b in range(ids.shape[0]):
        for t in range(ids.shape[1] - 1):
            if mask[b, t] and mask[b, t + 1]:
                total -= float(logp[b, t, ids[b, t + 1]])
                n += 1
    assert int(count) == n == int((mask.sum(1) - 1).sum())
    # deriving the mask from ids == pad_token_id would have dropped the final eos of each row
    assert n > int(((ids != tok.pad_token_id)[:, 1:]).sum())
    assert float(nll) == pytest.approx(total, rel=1e-5)


def test_loss_equals_transformers_labels_loss(bpe_pad_is_eos):
    tok = bpe_pad_is_eos
    method = tiny_gpt(tok).eval()
    batch = padded_batch(tok, ["masked language models predict hidden words", "the lazy dog"])
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    with torch.no_grad():
        ours = method(batch)["loss"]
        theirs = method.model(**batch, labels=labels).loss
    assert float(ours) == pytest.approx(float(theirs), rel=1e-5)


def test_attention_is_causal(bpe):
    method = tiny_gpt(bpe).eval()
    ids = torch.randint(5, len(bpe), (2, 12), generator=torch.Generator().manual_seed(0))
    changed = ids.clone()
    changed[:, 7] = (ids[:, 7] + 1 - 5) % (len(bpe) - 5) + 5
    with torch.no_grad():
        before = method.model(input_ids=ids).logits  # (B, L, V)
        after = method.model(input_ids=changed).logits
    assert torch.allclose(before[:, :7], after[:, :7], atol=1e-6)  # earlier positions unchanged
    assert not torch.allclose(before[:, 7:], after[:, 7:], atol=1e-4)


def test_sizes_paper_defaults_and_gpt2_init():
    config = build_gpt_config("gpt2", 50257, 1024)
    assert (config.n_layer, config.n_embd, config.n_head) == (12, 768, 12)
    assert (config.resid_pdrop, config.embd_pdrop, config.attn_pdrop) == (0.1, 0.1, 0.1)
    assert config.layer_norm_epsilon == 1e-5 and config.tie_word_embeddings
    small = build_gpt_config("bert-small", 100, 64)
    assert (small.n_layer, small.n_embd, small.n_head) == (4, 512, 8)
    with pytest.raises(KeyError, match="bert-mini"):
        build_gpt_config("gpt3", 100, 64)
    with pytest.raises(TypeError, match="n_embed"):
        build_gpt_config("gpt2", 100, 64, n_embed=8)
    # residual projections start 1/sqrt(2 * n_layer) smaller (GPT-2 section 2.3)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(build_gpt_config("bert-tiny", 100, 16, n_layer=8, n_embd=64))
    attn = torch.cat([b.attn.c_attn.weight.detach().flatten() for b in model.transformer.h]).std()
    proj = torch.cat([b.mlp.c_proj.weight.detach().flatten() for b in model.transformer.h]).std()
    assert float(attn) == pytest.approx(0.02, rel=0.05)
    assert float(proj) == pytest.approx(0.02 / math.sqrt(16), rel=0.05)
    assert model.lm_head.weight is model.transformer.wte.weight


def test_context_comes_from_seq_len_and_untying_is_refused(bpe):
    assert tiny_gpt(bpe, seq_len=24).model.config.n_positions == 24
    assert "n_layer" in CausalLM.argument_names() and "hidden_size" in CausalLM.argument_names()
    assert "tie_word_embeddings" not in CausalLM.argument_names()
    with pytest.raises(ValueError, match="tie_word_embeddings"):
        tiny_gpt(bpe, tie_word_embeddings=False)


def test_a_few_steps_on_lee_reduce_the_loss():
    from selfsup.data import build_source
    from selfsup.data.tokenizer import train_tokenizer
    from selfsup.run_data import texts_of

    source = build_source("lee", image_size=32, seed=0, shuffle_buffer=0)
    tok = train_tokenizer(texts_of(source), kind="bpe", vocab_size=300)
    method = tiny_gpt(tok, seq_len=32)
    dataset, collate = method.training_data(source.train, tok, 32)
    loader = torch.utils.data.DataLoader(dataset, batch_size=8, collate_fn=collate)
    batches = [b for _, b in zip(range(2), loader, strict=False)]
    optimizer = torch.optim.AdamW(method.parameters(), lr=1e-2, betas=(0.9, 0.95))
    losses = []
    for step in range(10):
        loss = method(batches[step % 2])["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[0] == pytest.approx(math.log(len(tok)), rel=0.05)  # uniform at the start
    assert sum(losses[-2:]) / 2 < losses[0] - 1.0


def test_export_loads_with_transformers_auto_classes(bpe, tmp_path):
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

    method = tiny_gpt(bpe).eval()
    method.export(tmp_path)
    tok = AutoTokenizer.from_pretrained(tmp_path)
    text = "the quick brown fox"
    assert tok(text)["input_ids"] == bpe(text)["input_ids"]
    batch = padded_batch(bpe, [text, "a blue square"])
    base = AutoModel.from_pretrained(tmp_path).eval()
    lm = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        hidden = base(**batch).last_hidden_state
        ours = method.model.transformer(**batch).last_hidden_state
        assert torch.allclose(hidden, ours, atol=1e-6)
        mask = batch["attention_mask"].unsqueeze(-1).float()
        pooled = (hidden * mask).sum(1) / mask.sum(1)
        assert torch.allclose(method.embed(batch), pooled, atol=1e-6)
        assert torch.allclose(lm(**batch).logits, method.model(**batch).logits, atol=1e-5)


def test_perplexity_protocol_matches_a_plain_transformers_computation(bpe):
    from selfsup.evaluate.protocols import EVAL_PROTOCOLS, EvalOptions

    method = tiny_gpt(bpe, seq_len=16).eval()
    texts = [
        "the quick brown fox jumps over the lazy dog",
        "a small red circle above a blue square",
        "contrastive methods pull two views of one image together",
    ]
    run = SimpleNamespace(
        method=method,
        tokenizer=bpe,
        config=SimpleNamespace(method="gpt", seq_len=16, batch_size=2),
    )
    source = SimpleNamespace(name="toy", test=[{"text": t} for t in texts])
    result = EVAL_PROTOCOLS.get("perplexity")(run, source, EvalOptions(batch_size=8))

    # independently: the same stream, non-overlapping 16-token blocks, the tail block kept
    stream = []
    for t in texts:
        stream += bpe(t, add_special_tokens=False)["input_ids"] + [bpe.eos_token_id]
    plain = GPT2LMHeadModel(method.model.config).eval()
    plain.load_state_dict(method.model.state_dict())
    total, tokens = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(stream), 16):
            block = torch.tensor([stream[i : i + 16]])
            if block.shape[1] < 2:
                continue
            n = block.shape[1] - 1
            total += float(plain(input_ids=block, labels=block).loss) * n
            tokens += n
    assert result["tokens"] == tokens == len(stream) - math.ceil(len(stream) / 16)
    assert result["nll"] == pytest.approx(total / tokens, rel=1e-5)
    assert result["perplexity"] == pytest.approx(math.exp(total / tokens), rel=1e-5)
    assert abs(result["perplexity"] / len(bpe) - 1) < 0.1  # untrained: nearly uniform
    with pytest.raises(ValueError, match="--arg"):
        EVAL_PROTOCOLS.get("perplexity")(run, source, EvalOptions(extra={"stride": "8"}))
