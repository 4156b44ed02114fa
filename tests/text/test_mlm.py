import math

import pytest
import torch
from safetensors import safe_open
from torch.utils.data import DataLoader
from transformers import AutoModel, AutoTokenizer

from selfsup.data.packing import PackedBlocks
from selfsup.evaluate.protocols.masked_accuracy import masked_token_accuracy
from selfsup.losses.classification import masked_lm_loss
from selfsup.methods.base import METHODS, BuildContext, create_method
from selfsup.methods.mlm import MaskedLM

SEQ_LEN = 32
TINY = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2}


def build(tok, **kw):
    torch.manual_seed(0)
    ctx = BuildContext(backbone="bert-tiny", tokenizer=tok, seq_len=SEQ_LEN)
    return create_method("mlm", ctx, max_position_embeddings=64, **TINY, **kw)


def blocks(tok, corpus, batch_size=8):
    return DataLoader(PackedBlocks(corpus, tok, SEQ_LEN), batch_size=batch_size)


def fixed_mask_loss(method, batch, seed=0):
    method.eval()
    with torch.no_grad():
        logits, targets = method.predict_masked(batch, torch.Generator().manual_seed(seed))
        loss, _ = masked_lm_loss(logits, targets)
    method.train()
    return loss.item()


def test_registered_and_configured(wordpiece_tok, bpe_tok):
    assert "mlm" in METHODS and MaskedLM.kind == "text"
    assert MaskedLM.defaults.optimizer == "adamw" and MaskedLM.defaults.weight_decay == 0.01
    method = build(bpe_tok)
    config = method.model.config
    assert config.vocab_size == len(bpe_tok) and config.hidden_size == 32
    assert config.pad_token_id == bpe_tok.pad_token_id == 1  # <s> (id 0) must stay trainable
    assert config.max_position_embeddings == 64
    default = MaskedLM.build(BuildContext(tokenizer=wordpiece_tok, seq_len=1024))
    assert default.model.config.hidden_size == 256  # bert-mini
    assert default.model.config.max_position_embeddings == 1024
    with pytest.raises(ValueError, match="tokenizer"):
        MaskedLM.build(BuildContext())


def test_loss_at_init_and_gradients_reach_every_parameter(wordpiece_tok, text_corpus):
    method = build(wordpiece_tok)
    batch = next(iter(blocks(wordpiece_tok, text_corpus)))
    out = method(batch)
    assert set(out) == {"loss", "mlm_acc"}
    assert torch.isfinite(out["loss"]) and out["loss"].ndim == 0
    assert abs(out["loss"].item() - math.log(len(wordpiece_tok))) < 0.3
    assert 0.0 <= out["mlm_acc"].item() <= 1.0
    out["loss"].backward()
    missing = [n for n, p in method.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing
    assert method.model.cls.predictions.decoder.weight is (
        method.model.bert.embeddings.word_embeddings.weight
    )


def test_masked_lm_loss_is_cross_entropy_at_the_selected_positions():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 3.0]])
    targets = torch.tensor([0, 1])
    loss, acc = masked_lm_loss(logits, targets)
    by_hand = -(torch.log_softmax(logits, -1)[[0, 1], [0, 1]]).mean()
    torch.testing.assert_close(loss, by_hand)
    assert acc.item() == 0.5
    empty_loss, empty_acc = masked_lm_loss(torch.zeros(0, 3, requires_grad=True), targets[:0])
    assert empty_loss.item() == 0.0 and empty_acc.item() == 0.0


def test_a_few_adam_steps_reduce_the_loss(wordpiece_tok, text_corpus):
    method = build(wordpiece_tok)
    batch = next(iter(blocks(wordpiece_tok, text_corpus[:40], batch_size=16)))
    before = fixed_mask_loss(method, batch)
    optimizer = torch.optim.AdamW(method.parameters(), lr=3e-3, weight_decay=0.01)
    for _ in range(15):
        loss = method(batch)["loss"]  # a new mask each step
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = fixed_mask_loss(method, batch)
    assert after < before - 0.5, (before, after)


def test_masked_token_accuracy_is_reproducible(wordpiece_tok, text_corpus):
    method = build(wordpiece_tok)
    loader = blocks(wordpiece_tok, text_corpus)
    first = masked_token_accuracy(method, loader, seed=3, max_batches=3)
    assert method.training  # mode restored
    assert first == masked_token_accuracy(method, loader, seed=3, max_batches=3)
    assert 0.0 <= first <= 1.0


def test_embed_ignores_padding(wordpiece_tok):
    method = build(wordpiece_tok).eval()
    enc = wordpiece_tok(["anan elpo", "anan elpo orveel an"], padding=True, return_tensors="pt")
    emb = method.embed(dict(enc))
    assert emb.shape == (2, 32)
    alone = method.embed({k: v[:1, : enc["attention_mask"][0].sum()] for k, v in enc.items()})
    torch.testing.assert_close(emb[:1], alone, atol=1e-5, rtol=1e-5)


def test_export_loads_with_auto_classes(bpe_tok, text_corpus, tmp_path):
    method = build(bpe_tok).eval()
    method.export(tmp_path)
    with safe_open(tmp_path / "model.safetensors", "pt") as f:
        keys = list(f.keys())
    assert keys and not any("predictions" in k or k.startswith("cls") for k in keys)
    model = AutoModel.from_pretrained(tmp_path).eval()
    tok = AutoTokenizer.from_pretrained(tmp_path)
    texts = text_corpus[:3]
    assert tok(texts)["input_ids"] == bpe_tok(texts)["input_ids"]
    enc = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
    mask = enc["attention_mask"].unsqueeze(-1).float()
    pooled = (hidden.last_hidden_state * mask).sum(1) / mask.sum(1)
    torch.testing.assert_close(pooled, method.embed(dict(enc)), atol=1e-5, rtol=1e-5)


def test_mlm_trains_a_deberta_backbone_and_exports_it(tmp_path, tiny_tokenizer):
    torch.manual_seed(0)
    ctx = BuildContext("deberta-tiny", tokenizer=tiny_tokenizer, seq_len=12)
    method = create_method("mlm", ctx, hidden_size=32, num_attention_heads=2)
    assert type(method.model).__name__ == "DebertaV2ForMaskedLM"
    ids = torch.randint(5, len(tiny_tokenizer), (2, 12))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    method(batch)["loss"].backward()
    assert all(p.grad is not None for p in method.parameters() if p.requires_grad)
    method.eval()
    method.export(tmp_path / "export")
    loaded = AutoModel.from_pretrained(tmp_path / "export").eval()
    with torch.no_grad():
        ours = method.encoder(input_ids=ids, attention_mask=torch.ones_like(ids))
        theirs = loaded(input_ids=ids, attention_mask=torch.ones_like(ids))
    assert torch.allclose(ours.last_hidden_state, theirs.last_hidden_state, atol=1e-5)
