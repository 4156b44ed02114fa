"""ELECTRA: shared embeddings, sampling, replaced-token labels and the joint loss."""

import math

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModel, BertConfig

from selfsup.backbones.text_configs import build_text_config
from selfsup.config import ConfigError
from selfsup.losses.classification import replaced_token_detection_loss
from selfsup.methods import BuildContext
from selfsup.methods.electra import Electra, electra_configs
from selfsup.views.tokens import sample_tokens

TEXTS = ["the quick brown fox jumps over the lazy dog", "a small red circle", "masked words"]


def tiny_electra(tokenizer, backbone="bert-tiny", **kwargs):
    torch.manual_seed(0)
    ctx = BuildContext(backbone, tokenizer=tokenizer, seq_len=16, batch_size=3)
    sizes = {"hidden_size": 64, "num_attention_heads": 2, "max_position_embeddings": 32}
    return Electra.build(ctx, **{**sizes, **kwargs})


def text_batch(tokenizer, length=16):
    enc = tokenizer(
        TEXTS,
        padding="max_length",
        max_length=length,
        truncation=True,
        return_tensors="pt",
        return_special_tokens_mask=True,
    )
    assert (enc["attention_mask"] == 0).any()  # some padding, which the losses must skip
    return {
        "input_ids": enc["input_ids"],
        "attention_mask": enc["attention_mask"],
        "special_tokens_mask": enc["special_tokens_mask"].bool(),
    }


def test_generator_is_a_quarter_wide_and_as_deep():
    disc, gen = electra_configs(BertConfig(), embedding_size=768)  # BERT-Base sizes
    assert (disc.hidden_size, disc.num_hidden_layers, disc.num_attention_heads) == (768, 12, 12)
    assert (gen.hidden_size, gen.intermediate_size, gen.num_attention_heads) == (192, 768, 3)
    assert gen.num_hidden_layers == 12 and gen.embedding_size == disc.embedding_size == 768
    small = build_text_config("electra-small", 300)  # table 6: 12 x 256, 4 heads
    disc, gen = electra_configs(small, embedding_size=128)
    assert (gen.hidden_size, gen.intermediate_size, gen.num_attention_heads) == (64, 256, 1)


def test_electra_small_embeds_at_128(tiny_tokenizer):
    method = tiny_electra(tiny_tokenizer, "electra-small", num_hidden_layers=1, hidden_size=256)
    disc = method.discriminator.config
    assert (disc.embedding_size, disc.hidden_size) == (128, 256)
    assert method.generator.config.hidden_size == 64
    assert tiny_electra(tiny_tokenizer).discriminator.config.embedding_size == 64  # = hidden


def test_token_and_position_embeddings_are_the_same_parameters(tiny_tokenizer):
    method = tiny_electra(tiny_tokenizer)
    d, g = method.discriminator.electra.embeddings, method.generator.electra.embeddings
    assert d.word_embeddings.weight is g.word_embeddings.weight
    assert d.position_embeddings.weight is g.position_embeddings.weight
    assert method.generator.generator_lm_head.weight is d.word_embeddings.weight  # tied output
    assert sum(p is d.word_embeddings.weight for p in method.parameters()) == 1  # one update
    # the generator (16 wide) projects the shared 64-dim embedding to its own width
    assert method.generator.electra.embeddings_project.weight.shape == (16, 64)
    method.load_state_dict(method.state_dict())  # a checkpoint restore keeps them shared
    assert method.generator.electra.embeddings.word_embeddings.weight is d.word_embeddings.weight


def test_sampling_follows_the_softmax_without_gradient():
    probs = torch.tensor([0.7, 0.2, 0.1])
    logits = probs.log().repeat(20000, 1).requires_grad_()
    g = torch.Generator().manual_seed(0)
    samples = sample_tokens(logits, g)
    assert not samples.requires_grad and samples.dtype == torch.long
    freq = torch.bincount(samples, minlength=3).float() / len(samples)
    torch.testing.assert_close(freq, probs, atol=0.015, rtol=0)
    again = sample_tokens(logits, torch.Generator().manual_seed(0))
    assert torch.equal(samples, again)
    assert sample_tokens(logits[:0]).shape == (0,)


def test_a_sample_equal_to_the_original_is_labelled_original(tiny_tokenizer):
    method = tiny_electra(tiny_tokenizer, mlm_probability=0.5).eval()
    t = tiny_tokenizer.convert_tokens_to_ids("fox")
    u = tiny_tokenizer.convert_tokens_to_ids("dog")
    with torch.no_grad():  # the generator now always samples "fox"
        method.generator.generator_lm_head.bias[t] = 1e4
    ids = torch.full((4, 12), t)
    ids[:, ::2] = u
    ids[:, 0], ids[:, -1] = tiny_tokenizer.cls_token_id, tiny_tokenizer.sep_token_id
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    out = method.corrupt_and_detect(batch, torch.Generator().manual_seed(0))
    selected = out["selected"]
    assert (selected & (ids == t)).sum() > 0 and (selected & (ids == u)).sum() > 0
    assert (out["corrupted"][selected] == t).all()
    assert torch.equal(out["replaced"], selected & (ids == u))  # "fox" for "fox" is original


def explicit_bce(logits, labels, mask):
    total, count = 0.0, 0
    flat = (logits.flatten().tolist(), labels.flatten().tolist(), mask.flatten().tolist())
    for x, y, m in zip(*flat, strict=True):
        if m:
            p = 1 / (1 + math.exp(-x))
            total -= math.log(p) if y else math.log(1 - p)
            count += 1
    return total / count


def test_rtd_loss_is_bce_over_real_tokens():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 7, generator=g) * 3
    labels = torch.rand(3, 7, generator=g) < 0.3
    mask = torch.ones(3, 7, dtype=torch.long)
    mask[1, 4:] = 0
    mask[2, 2:] = 0
    loss, acc = replaced_token_detection_loss(logits, labels, mask)
    assert loss.item() == pytest.approx(explicit_bce(logits, labels, mask), rel=1e-5)
    real = mask.bool()
    assert acc.item() == pytest.approx(((logits > 0) == labels)[real].float().mean().item())
    noisy = torch.where(real, logits, torch.full_like(logits, 100.0))  # padding changed
    assert replaced_token_detection_loss(noisy, labels, mask)[0].item() == pytest.approx(
        loss.item()
    )


def test_total_loss_is_mlm_plus_50_rtd(tiny_tokenizer):
    method = tiny_electra(tiny_tokenizer).eval()  # eval: no dropout, same forward twice
    batch = text_batch(tiny_tokenizer)
    torch.manual_seed(3)
    out = method(batch)
    torch.manual_seed(3)
    parts = method.corrupt_and_detect(batch)
    logp = F.log_softmax(parts["gen_logits"].double(), dim=-1)
    mlm = -sum(logp[i, t].item() for i, t in enumerate(parts["targets"].tolist()))
    mlm /= len(parts["targets"])
    rtd = explicit_bce(parts["disc_logits"], parts["replaced"], batch["attention_mask"])
    assert out["mlm_loss"].item() == pytest.approx(mlm, rel=1e-4)
    assert out["rtd_loss"].item() == pytest.approx(rtd, rel=1e-4)
    assert out["loss"].item() == pytest.approx(mlm + 50 * rtd, rel=1e-4)
    assert not parts["replaced"][batch["attention_mask"] == 0].any()  # padding never replaced
    assert not parts["selected"][batch["special_tokens_mask"]].any()
    assert {"gen_acc", "disc_acc", "replaced"} <= set(out)
    real = batch["attention_mask"].bool()
    assert out["replaced"].item() == pytest.approx(parts["replaced"][real].float().mean().item())


def test_no_gradient_flows_from_the_discriminator_into_the_generator(tiny_tokenizer):
    method = tiny_electra(tiny_tokenizer)
    parts = method.corrupt_and_detect(text_batch(tiny_tokenizer))
    rtd, _ = replaced_token_detection_loss(
        parts["disc_logits"], parts["replaced"], parts["attention_mask"]
    )
    rtd.backward()
    shared = {id(p) for p in method.discriminator.parameters()}
    generator_only = [n for n, p in method.generator.named_parameters() if id(p) not in shared]
    assert generator_only  # the encoder layers, projection and MLM head
    leaked = [
        n
        for n, p in method.generator.named_parameters()
        if id(p) not in shared and p.grad is not None and p.grad.abs().sum() > 0
    ]
    assert not leaked, leaked
    word = method.discriminator.electra.embeddings.word_embeddings.weight
    assert word.grad is not None and word.grad.abs().sum() > 0  # shared: RTD trains it


def test_a_training_step_reaches_every_parameter(tiny_tokenizer):
    method = tiny_electra(tiny_tokenizer)
    out = method(text_batch(tiny_tokenizer))
    assert math.isfinite(out["loss"].item())
    out["loss"].backward()
    missing = [n for n, p in method.named_parameters() if p.grad is None]
    assert not missing, missing
    before = method.discriminator.electra.encoder.layer[0].attention.self.query.weight.clone()
    torch.optim.AdamW(method.parameters(), lr=1e-3).step()
    after = method.discriminator.electra.encoder.layer[0].attention.self.query.weight
    assert not torch.equal(before, after)


def test_export_is_the_discriminator_and_loads_with_automodel(tiny_tokenizer, tmp_path):
    method = tiny_electra(tiny_tokenizer).eval()
    method.export(tmp_path)
    model = AutoModel.from_pretrained(tmp_path).eval()
    assert type(model).__name__ == "ElectraModel" and model.config.hidden_size == 64
    batch = text_batch(tiny_tokenizer)
    with torch.no_grad():
        hidden = model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        ).last_hidden_state
    real = batch["attention_mask"].unsqueeze(-1).float()
    pooled = (hidden * real).sum(1) / real.sum(1)
    torch.testing.assert_close(pooled, method.embed(batch), atol=1e-5, rtol=1e-5)
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(tmp_path)("fox")["input_ids"][0] == (
        tiny_tokenizer.cls_token_id
    )


def test_backbones_of_other_families_are_refused(tiny_tokenizer):
    with pytest.raises(ConfigError, match="deberta-mini"):
        Electra.build(BuildContext("deberta-mini", tokenizer=tiny_tokenizer, seq_len=16))
    with pytest.raises(ValueError, match="generator"):
        tiny_electra(tiny_tokenizer, generator_size_divisor=200)
    assert {"generator_size_divisor", "rtd_weight", "hidden_size"} <= set(Electra.argument_names())
