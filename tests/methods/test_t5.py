"""T5 span corruption: lengths, span statistics, sentinel format, reconstruction and the loss."""

import itertools
import math

import pytest
import torch
from transformers import AutoModel, T5EncoderModel, T5ForConditionalGeneration

from selfsup.data.tokenizer import train_tokenizer
from selfsup.methods import BuildContext
from selfsup.methods.t5 import T5SpanCorruption
from selfsup.views.spans import (
    _random_segmentation,
    corrupt_spans,
    random_spans_noise_mask,
    span_corruption_lengths,
)

SENTINELS = 40
TINY_T5 = {"num_sentinels": SENTINELS, "d_model": 32, "num_layers": 1, "num_heads": 2}


@pytest.fixture(scope="module")
def unigram(tiny_corpus):
    specials = T5SpanCorruption.tokenizer_specials({"num_sentinels": SENTINELS})
    return train_tokenizer(tiny_corpus, "unigram", 300, extra_special_tokens=specials)


def tiny_t5(tokenizer, **kwargs):
    torch.manual_seed(0)
    ctx = BuildContext("bert-tiny", tokenizer=tokenizer, seq_len=32, batch_size=4)
    return T5SpanCorruption.build(ctx, **{**TINY_T5, **kwargs})


def regular_ids(method, shape, generator=None):
    """Random ids of trained pieces: after the 5 specials, before the sentinels."""
    return torch.randint(5, int(method.sentinel_ids.min()), shape, generator=generator)


def lengths_by_brute_force(seq_len, density=0.15, mean=3.0):
    """Largest raw length n whose input (non-noise + sentinels + EOS) fits in seq_len."""
    best = None
    for n in range(2, 4 * seq_len):
        k = min(max(round(n * density), 1), n - 1)
        s = max(round(k / mean), 1)
        if n - k + s + 1 <= seq_len:
            best = (n, n - k + s + 1, k + s + 1)
    return best


def test_lengths_match_the_reference_and_fit_exactly():
    assert span_corruption_lengths(512) == (568, 114)  # T5's 512-token inputs
    for seq_len in range(3, 300):
        raw, target = span_corruption_lengths(seq_len)
        n, inputs, expected_target = lengths_by_brute_force(seq_len)
        assert (raw, target, inputs) == (n, expected_target, seq_len)


def test_every_corrupted_block_has_exactly_the_computed_lengths():
    for seq_len in (12, 32, 100, 512):
        raw, target = span_corruption_lengths(seq_len)
        sentinels = torch.arange(1000, 1100)
        for seed in range(50):
            g = torch.Generator().manual_seed(seed)
            ids = torch.randint(5, 900, (3, raw), generator=g)
            noise, span = random_spans_noise_mask(3, raw, generator=g)
            inputs, targets = corrupt_spans(ids, noise, span, sentinels, eos_id=2)
            assert inputs.shape == (3, seq_len) and targets.shape == (3, target)
            assert (inputs[:, -1] == 2).all() and (targets[:, -1] == 2).all()
            assert not (inputs == 0).any() and not (targets == 0).any()  # no padding


def spans_of(mask_row):
    """(value, length) runs of a boolean row."""
    return [(k, len(list(g))) for k, g in itertools.groupby(mask_row.tolist())]


def test_span_statistics_over_many_seeds():
    raw, _ = span_corruption_lengths(512)
    noise_tokens = noise_spans = 0
    lengths = []
    for seed in range(20):
        noise, _ = random_spans_noise_mask(16, raw, generator=torch.Generator().manual_seed(seed))
        assert (noise.sum(1) == 85).all()  # round(568 * 0.15)
        for row in noise:
            runs = spans_of(row)
            assert not runs[0][0] and runs[-1][0]  # starts with non-noise, ends with noise
            spans = [n for is_noise, n in runs if is_noise]
            assert len(spans) == 28  # round(85 / 3)
            lengths += spans
            noise_tokens += sum(spans)
            noise_spans += len(spans)
    assert noise_tokens / (20 * 16 * raw) == pytest.approx(0.15, abs=0.001)
    assert noise_tokens / noise_spans == pytest.approx(3.0, abs=0.05)
    assert max(lengths) >= 8 and lengths.count(1) > 0.2 * len(lengths)  # random, not all 3s


def test_every_segmentation_is_equally_likely():
    counts = {}
    g = torch.Generator().manual_seed(0)
    for row in _random_segmentation(6, 3, 20000, torch.device("cpu"), g).tolist():
        counts[tuple(row)] = counts.get(tuple(row), 0) + 1
    assert len(counts) == math.comb(5, 2) and all(sum(k) == 6 and min(k) >= 1 for k in counts)
    for n in counts.values():
        assert n / 20000 == pytest.approx(0.1, abs=0.012)


def test_hand_checked_example(unigram):
    method = tiny_t5(unigram)
    s0, s1, s2 = method.sentinel_ids[:3].tolist()
    assert unigram.convert_ids_to_tokens([s0, s1, s2]) == [
        "<extra_id_0>",
        "<extra_id_1>",
        "<extra_id_2>",
    ]
    eos = method.eos_id
    assert eos == unigram.sep_token_id  # the unigram tokenizer's end of sequence
    ids = torch.arange(100, 112).unsqueeze(0)  # t0 .. t11 = 100 .. 111
    # keep t0 t1, drop t2 t3, keep t4 t5 t6, drop t7, keep t8 t9, drop t10 t11
    noise = torch.tensor([[0, 0, 1, 1, 0, 0, 0, 1, 0, 0, 1, 1]]).bool()
    span = torch.tensor([[0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]])
    inputs, targets = corrupt_spans(ids, noise, span, method.sentinel_ids, eos)
    assert inputs.tolist() == [[100, 101, s0, 104, 105, 106, s1, 108, 109, s2, eos]]
    assert targets.tolist() == [[s0, 102, 103, s1, 107, s2, 110, 111, eos]]


def test_sentinels_are_the_tokenizers_in_order(unigram):
    method = tiny_t5(unigram)
    expected = [unigram.convert_tokens_to_ids(f"<extra_id_{i}>") for i in range(SENTINELS)]
    assert method.sentinel_ids.tolist() == expected and len(set(expected)) == SENTINELS
    raw, _ = span_corruption_lengths(100)
    spans = round(round(raw * 0.15) / 3)
    ids = regular_ids(method, (4, raw))
    inputs, targets = method.corrupt(ids, torch.Generator().manual_seed(0))
    order = {s: i for i, s in enumerate(expected)}
    for row in (*inputs.tolist(), *targets.tolist()):
        seen = [order[t] for t in row if t in order]
        assert seen == list(range(len(seen))) and len(seen) == spans


def reconstruct(inputs, targets, sentinels, eos):
    """Put each sentinel's target span back in place of the sentinel (a slow explicit loop)."""
    fill, current = {}, None
    for t in targets:
        if t in sentinels:
            current = t
            fill[t] = []
        elif t != eos:
            fill[current].append(t)
    out = []
    for t in inputs[:-1]:  # drop EOS
        out += fill[t] if t in sentinels else [t]
    return out


def test_merging_input_and_target_gives_back_the_raw_block(unigram):
    method = tiny_t5(unigram)
    sentinels = set(method.sentinel_ids.tolist())
    for seq_len in (12, 64):
        raw, _ = span_corruption_lengths(seq_len)
        for seed in range(30):
            g = torch.Generator().manual_seed(seed)
            ids = regular_ids(method, (2, raw), g)
            inputs, targets = method.corrupt(ids, g)
            for i in range(2):
                merged = reconstruct(
                    inputs[i].tolist(), targets[i].tolist(), sentinels, method.eos_id
                )
                assert merged == ids[i].tolist()


def test_loss_equals_transformers_own(unigram):
    method = tiny_t5(unigram).eval()  # eval: no dropout
    raw, _ = span_corruption_lengths(32)
    ids = regular_ids(method, (4, raw), torch.Generator().manual_seed(0))
    torch.manual_seed(5)
    out = method({"input_ids": ids, "attention_mask": torch.ones_like(ids)})
    torch.manual_seed(5)
    inputs, targets = method.corrupt(ids)
    with torch.no_grad():
        reference = method.model(input_ids=inputs, labels=targets).loss
    assert out["loss"].item() == pytest.approx(reference.item(), rel=1e-5)
    assert method.model.config.decoder_start_token_id == unigram.pad_token_id


def test_training_data_and_a_step(unigram, tiny_corpus):
    method = tiny_t5(unigram)
    docs = [{"text": " ".join(tiny_corpus[i : i + 4])} for i in range(0, 20, 4)] * 3
    dataset, collate = method.training_data(docs, unigram, 32)
    raw, target = span_corruption_lengths(32)
    batch = next(iter(torch.utils.data.DataLoader(dataset, batch_size=4, collate_fn=collate)))
    assert batch["input_ids"].shape == (4, raw) and batch["attention_mask"].all()
    assert not (batch["input_ids"] == unigram.cls_token_id).any()  # raw tokens, no [CLS]
    # documents concatenated with nothing between them, as T5 packs: EOS ends inputs and
    # targets and appears nowhere else (here EOS is the tokenizer's [SEP])
    assert method.eos_id == unigram.sep_token_id
    assert not (batch["input_ids"] == method.eos_id).any()
    stream = [t for d in docs[:5] for t in unigram(d["text"], add_special_tokens=False).input_ids]
    assert batch["input_ids"][0].tolist() == stream[:raw]
    inputs, targets = method.corrupt(batch["input_ids"])
    assert inputs.shape == (4, 32) and targets.shape == (4, target)
    for row in (inputs, targets):
        assert ((row == method.eos_id).sum(1) == 1).all() and (row[:, -1] == method.eos_id).all()
    out = method(batch)
    out["loss"].backward()
    missing = [n for n, p in method.named_parameters() if p.grad is None]
    assert not missing and math.isfinite(out["loss"].item()) and 0 <= out["target_acc"] <= 1
    padded = {**batch, "attention_mask": torch.zeros_like(batch["attention_mask"])}
    with pytest.raises(ValueError, match="padding"):
        method(padded)


def test_missing_or_too_few_sentinels_fail_clearly(unigram, tiny_tokenizer):
    with pytest.raises(ValueError, match="<extra_id_0>"):
        tiny_t5(tiny_tokenizer)  # a wordpiece tokenizer trained without sentinels
    with pytest.raises(ValueError, match="num_sentinels"):
        tiny_t5(unigram, num_sentinels=SENTINELS + 1)
    method = tiny_t5(unigram, num_sentinels=2)
    with pytest.raises(ValueError, match="num_sentinels"):
        method.corrupt(regular_ids(method, (1, 100)))  # 5 spans, 2 sentinels
    assert T5SpanCorruption.tokenizer_specials({})[:2] == ["<extra_id_0>", "<extra_id_1>"]
    assert len(T5SpanCorruption.tokenizer_specials({})) == 100


def test_export_loads_as_t5model_encoder_and_seq2seq(unigram, tmp_path):
    method = tiny_t5(unigram).eval()
    method.export(tmp_path)
    ids = regular_ids(method, (2, 9))
    mask = torch.ones_like(ids)
    model = AutoModel.from_pretrained(tmp_path).eval()
    assert type(model).__name__ == "T5Model"
    encoder, info = T5EncoderModel.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"]
    with torch.no_grad():
        hidden = model.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        torch.testing.assert_close(hidden.mean(1), method.embed({"input_ids": ids}))
        torch.testing.assert_close(encoder.eval()(input_ids=ids).last_hidden_state, hidden)
        full = T5ForConditionalGeneration.from_pretrained(tmp_path).eval()
        targets = regular_ids(method, (2, 4))
        torch.testing.assert_close(
            full(input_ids=ids, labels=targets).loss,
            method.model(input_ids=ids, labels=targets).loss,
        )
    from transformers import AutoTokenizer

    exported = AutoTokenizer.from_pretrained(tmp_path)
    assert exported.convert_tokens_to_ids("<extra_id_3>") == method.sentinel_ids[3].item()
