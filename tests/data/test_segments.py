"""Sentence-pair examples for NSP (BERT) and SOP (ALBERT): provenance of every token, labels,
layout, lengths and sharding.

A fake tokenizer maps the word ``"1DDSSK"`` to the id ``1DDSSK`` so that every token tells which
document (DD), sentence (SS) and position (K) it came from.
"""

import random

import pytest
import torch
from torch.utils.data import DataLoader

from selfsup.data.segments import (
    PairCollate,
    SentencePairs,
    document_pairs,
    split_sentences,
    truncate_pair,
)

CLS, SEP, PAD, MASK = 1, 2, 0, 3
LABEL = {"nsp": "next_sentence_label", "sop": "sentence_order_label"}


class IdTokenizer:
    """Words are their own ids (trailing punctuation dropped)."""

    cls_token_id, sep_token_id, pad_token_id = CLS, SEP, PAD
    bos_token_id = eos_token_id = None
    all_special_ids = [PAD, CLS, SEP, MASK]

    def __call__(self, texts, **kwargs):
        return {"input_ids": [[int(w.strip(".!?")) for w in t.split()] for t in texts]}


def token(doc, sentence, k):
    return 100000 + doc * 1000 + sentence * 10 + k


def where(t):
    """(document, sentence, position) of a token id."""
    t -= 100000
    return t // 1000, (t % 1000) // 10, t % 10


def make_docs(n_docs=60, sentences=(3, 30), words=(1, 8), seed=0):
    rng = random.Random(seed)
    docs = []
    for d in range(n_docs):
        n = rng.randint(*sentences)
        text = ". ".join(
            " ".join(str(token(d, s, k)) for k in range(rng.randint(*words))) for s in range(n)
        )
        docs.append({"text": text + "."})
    return docs


def stream_positions(tokens):
    """Positions of ``tokens`` in their document's token stream (ids sort in stream order)."""
    return [(where(t)[1], where(t)[2]) for t in tokens]


def assert_contiguous(tokens, docs_tokens):
    """``tokens`` is a contiguous run of one document's token stream."""
    doc = where(tokens[0])[0]
    stream = docs_tokens[doc]
    start = stream.index(tokens[0])
    assert stream[start : start + len(tokens)] == tokens


def doc_streams(docs):
    tok = IdTokenizer()
    return {d: [t for s in split_sentences(x["text"]) for t in tok([s])["input_ids"][0]]
            for d, x in enumerate(docs)}  # fmt: skip


def examples(docs, seq_len=32, task="nsp", **kw):
    return list(SentencePairs(docs, IdTokenizer(), seq_len, task=task, **kw))


def split_example(ex):
    ids = ex["input_ids"].tolist()
    seps = [i for i, t in enumerate(ids) if t == SEP]
    assert ids[0] == CLS and len(seps) == 2 and seps[1] == len(ids) - 1
    return ids[1 : seps[0]], ids[seps[0] + 1 : -1], seps[0]


def test_sentence_splitter():
    text = 'He said "Stop." Then he left! Did he?\nYes. 3.5 stays whole.'
    assert split_sentences(text) == [
        'He said "Stop."',
        "Then he left!",
        "Did he?",
        "Yes.",
        "3.5 stays whole.",
    ]
    assert split_sentences("  \n ") == []


def test_truncate_pair_cuts_the_longer_segment_at_either_end():
    rng = random.Random(0)
    fronts = backs = 0
    for _ in range(200):
        a, b = list(range(10)), list(range(100, 103))
        truncate_pair(a, b, 8, rng)
        assert len(a) + len(b) == 8 and b == [100, 101, 102]  # only the longer one shrinks
        assert a == list(range(a[0], a[0] + 5))  # a contiguous piece of a
        fronts += a[0] > 0
        backs += a[-1] < 9
    assert fronts > 20 and backs > 20


def test_nsp_isnext_continues_a_and_notnext_comes_from_another_document():
    docs = make_docs()
    streams = doc_streams(docs)
    out = examples(docs, short_seq_prob=0.1)
    is_next = not_next = 0
    for ex in out:
        a, b, _ = split_example(ex)
        assert a and b
        assert_contiguous(a, streams)
        assert_contiguous(b, streams)
        doc_a, doc_b = where(a[0])[0], where(b[0])[0]
        if ex["next_sentence_label"] == 0:
            is_next += 1
            assert doc_a == doc_b
            assert stream_positions(a)[-1] < stream_positions(b)[0]
            if len(a) + len(b) < 32 - 3:  # not truncated: B starts where A ends
                s = streams[doc_a]
                assert s.index(b[0]) == s.index(a[-1]) + 1
                # at a sentence start, unless a one-sentence chunk was cut inside its sentence
                assert where(b[0])[2] == 0 or where(b[0])[1] == where(a[-1])[1]
        else:
            not_next += 1
            assert doc_a != doc_b
    assert is_next > 100 and not_next > 100


def test_nsp_and_sop_labels_are_balanced():
    docs = make_docs(n_docs=300, sentences=(20, 40), words=(2, 5))
    for task, key in (("nsp", "next_sentence_label"), ("sop", "sentence_order_label")):
        labels = torch.stack([ex[key] for ex in examples(docs, task=task)]).float()
        assert len(labels) > 1000  # 3 sigma of a fair coin: 0.045
        assert abs(labels.mean().item() - 0.5) < 0.04, (task, labels.mean())


def test_sop_pairs_are_consecutive_segments_of_one_document_swapped_half_the_time():
    docs = make_docs()
    streams = doc_streams(docs)
    for ex in examples(docs, task="sop"):
        a, b, _ = split_example(ex)
        assert_contiguous(a, streams)
        assert_contiguous(b, streams)
        assert where(a[0])[0] == where(b[0])[0]
        first, second = (a, b) if ex["sentence_order_label"] == 0 else (b, a)
        assert stream_positions(first)[-1] < stream_positions(second)[0]
        if len(a) + len(b) < 32 - 3:  # not truncated: the two segments touch
            s = streams[where(a[0])[0]]
            assert s.index(second[0]) == s.index(first[-1]) + 1


def test_layout_types_masks_and_lengths():
    docs = make_docs(words=(1, 20))
    for seq_len in (12, 32):
        for task in ("nsp", "sop"):
            for ex in examples(docs, seq_len=seq_len, task=task, short_seq_prob=0.5):
                ids = ex["input_ids"]
                assert 5 <= len(ids) <= seq_len
                _, _, first_sep = split_example(ex)
                types = ex["token_type_ids"]
                assert (types[: first_sep + 1] == 0).all() and (types[first_sep + 1 :] == 1).all()
                assert ex["attention_mask"].tolist() == [1] * len(ids)
                special = ex["special_tokens_mask"]
                assert special.dtype == torch.bool
                assert special.tolist() == [t in (CLS, SEP) for t in ids.tolist()]


def test_short_sequences_appear_with_short_seq_prob():
    docs = make_docs(n_docs=100, sentences=(20, 40), words=(2, 4))
    lengths = [len(ex["input_ids"]) for ex in examples(docs, short_seq_prob=0.0)]
    short = [len(ex["input_ids"]) for ex in examples(docs, short_seq_prob=1.0)]
    assert sum(lengths) / len(lengths) > 28  # close to the full 32
    assert sum(short) / len(short) < 24


def test_single_sentence_documents():
    docs = [{"text": " ".join(str(token(d, 0, k)) for k in range(6))} for d in range(10)]
    for task in ("nsp", "sop"):  # the one sentence is cut into two spans
        out = examples(docs, task=task, seed=1)
        assert len(out) == 10
        labels = [ex[LABEL[task]].item() for ex in out]
        assert 0 in labels and 1 in labels
        for ex, label in zip(out, labels, strict=True):
            a, b, _ = split_example(ex)
            sentence = [token(where(a[0])[0], 0, k) for k in range(6)]
            if task == "nsp" and label == 1:
                assert where(a[0])[0] != where(b[0])[0] and a == sentence[: len(a)]
            else:
                first, second = (b, a) if task == "sop" and label == 1 else (a, b)
                assert first + second == sentence
    # one document alone has no other document for NotNext: those chunks are skipped
    alone = [ex for seed in range(8) for ex in examples(docs[:1], task="nsp", seed=seed)]
    assert 0 < len(alone) < 8 and all(ex["next_sentence_label"] == 0 for ex in alone)
    for task in ("nsp", "sop"):  # a one-token document has nothing to split
        assert examples([{"text": str(token(0, 0, 0))}] * 3, task=task) == []


def test_document_pairs_with_no_other_document():
    doc = [[token(0, s, k) for k in range(3)] for s in range(12)]
    out = document_pairs(doc, 9, random.Random(0), "nsp", other_document=None)
    assert out and all(label == 0 for _, _, label in out)  # only the IsNext pairs survive


def test_deterministic_per_seed_and_epoch():
    docs = make_docs()

    def ids(seed, epoch):
        ds = SentencePairs(docs, IdTokenizer(), 32, seed=seed)
        ds.set_epoch(epoch)
        return [ex["input_ids"].tolist() for ex in ds]

    assert ids(0, 0) == ids(0, 0)
    assert ids(0, 0) != ids(0, 1)
    assert ids(0, 0) != ids(1, 0)


def test_ranks_and_workers_read_disjoint_documents():
    docs = make_docs(n_docs=40)

    def documents_seen(dataset, workers=0):
        loader = DataLoader(dataset, batch_size=None, num_workers=workers)
        return {where(ex["input_ids"][1].item())[0] for ex in loader}  # A's document

    seen = [documents_seen(SentencePairs(docs, IdTokenizer(), 32, task="sop", rank=r,
                                         world_size=2)) for r in range(2)]  # fmt: skip
    assert not seen[0] & seen[1] and seen[0] | seen[1] == set(range(40))
    both = documents_seen(SentencePairs(docs, IdTokenizer(), 32, task="sop"), workers=2)
    assert both == set(range(40))


def test_pool_draws_notnext_from_other_documents_across_pools():
    docs = make_docs(n_docs=7)
    out = examples(docs, pool_size=1)  # each pool is one document: NotNext from the previous
    labels = [ex["next_sentence_label"].item() for ex in out]
    assert 1 in labels and 0 in labels


def test_collate_pads_to_longest_or_fixed_length():
    samples = examples(make_docs(), seq_len=16, short_seq_prob=1.0)[:6]
    longest = max(len(s["input_ids"]) for s in samples)
    batch = PairCollate(PAD)(samples)
    assert batch["input_ids"].shape == (6, longest)
    assert batch["next_sentence_label"].shape == (6,)
    fixed = PairCollate(PAD, pad_to=16)(samples)
    assert fixed["input_ids"].shape == (6, 16)
    for row, s in enumerate(samples):
        n = len(s["input_ids"])
        assert fixed["input_ids"][row, :n].tolist() == s["input_ids"].tolist()
        assert (fixed["input_ids"][row, n:] == PAD).all()
        assert (fixed["attention_mask"][row, n:] == 0).all()
        assert (fixed["token_type_ids"][row, n:] == 0).all()
        assert fixed["special_tokens_mask"][row, n:].all()
    with pytest.raises(ValueError, match="pad_to"):
        PairCollate(PAD, pad_to=4)(samples)


def test_real_tokenizer_pairs(tiny_tokenizer, tiny_corpus):
    docs = [{"text": ". ".join(tiny_corpus[i : i + 5]) + "."} for i in range(0, 20, 5)]
    out = list(SentencePairs(docs, tiny_tokenizer, 24, task="nsp"))
    assert len(out) >= 4
    for ex in out:
        ids = ex["input_ids"].tolist()
        assert ids[0] == tiny_tokenizer.cls_token_id and ids[-1] == tiny_tokenizer.sep_token_id
    with pytest.raises(ValueError, match="seq_len"):
        SentencePairs(docs, tiny_tokenizer, 4)
    with pytest.raises(ValueError, match="task"):
        SentencePairs(docs, tiny_tokenizer, 16, task="nspp")
