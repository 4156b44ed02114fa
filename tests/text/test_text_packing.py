import pytest
import torch
from torch.utils.data import DataLoader, IterableDataset

from selfsup.data.packing import CaptionCollate, PackedBlocks

SEQ_LEN = 24


def document_ids(tok, docs):
    return [ids for ids in tok(docs, add_special_tokens=False)["input_ids"] if ids]


def check_stream(blocks, docs_ids, sep, size):
    """The blocks' contents are the documents' tokens, in order, each exactly once, with one
    separator between consecutive documents except where a document starts a block; only a
    final partial block (fewer than `size` tokens) is missing."""
    content = [t for b in blocks for t in b["input_ids"][1:-1].tolist()]
    expected = [t for i, ids in enumerate(docs_ids) for t in ([sep] if i else []) + ids]
    j = 0
    for i, token in enumerate(content):
        if expected[j] != token:
            # the only allowed difference: a separator dropped at the start of a block
            assert expected[j] == sep and i % size == 0 and expected[j + 1] == token, i
            j += 1
        j += 1
    leftover = expected[j:]
    assert len(leftover) - leftover.count(sep) < size  # the dropped tail is one partial block
    return content


@pytest.mark.parametrize("tok_name", ["wordpiece_tok", "bpe_tok"])
def test_blocks_are_full_framed_and_hold_the_corpus_in_order(request, tok_name, text_corpus):
    tok = request.getfixturevalue(tok_name)
    blocks = list(PackedBlocks(text_corpus, tok, seq_len=SEQ_LEN, batch_size=16))
    docs_ids = document_ids(tok, text_corpus)
    assert max(len(ids) for ids in docs_ids) > SEQ_LEN  # documents do span blocks here
    cls, sep = tok.cls_token_id, tok.sep_token_id
    if tok_name == "bpe_tok":
        assert sep == tok.eos_token_id  # documents are separated by </s>
    for b in blocks:
        ids = b["input_ids"]
        assert ids.dtype == torch.int64 and ids.shape == (SEQ_LEN,)
        assert b["attention_mask"].dtype == torch.int64 and bool((b["attention_mask"] == 1).all())
        assert tok.pad_token_id not in ids.tolist()  # no padding waste
        assert ids[0] == cls and ids[-1] == sep and cls not in ids[1:].tolist()
        assert b["special_tokens_mask"].dtype == torch.bool
        assert torch.equal(b["special_tokens_mask"], (ids == cls) | (ids == sep))
    content = check_stream(blocks, docs_ids, sep, SEQ_LEN - 2)
    n_tokens = sum(len(ids) for ids in docs_ids)
    assert n_tokens - (SEQ_LEN - 2) < len(content) - content.count(sep) <= n_tokens
    assert content.count(sep) >= len(docs_ids) // 2  # separators really are there


def test_deterministic(wordpiece_tok, text_corpus):
    first = list(PackedBlocks(text_corpus, wordpiece_tok, seq_len=SEQ_LEN))
    second = list(PackedBlocks(text_corpus, wordpiece_tok, seq_len=SEQ_LEN, batch_size=7))
    assert len(first) == len(second) > 10
    assert all(
        torch.equal(a["input_ids"], b["input_ids"]) for a, b in zip(first, second, strict=True)
    )


class Stream(IterableDataset):
    def __init__(self, docs):
        self.docs, self.epoch = docs, None

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __iter__(self):
        return iter({"text": d} for d in self.docs)


def test_iterable_source_and_set_epoch(wordpiece_tok, text_corpus):
    source = Stream(text_corpus)
    packed = PackedBlocks(source, wordpiece_tok, seq_len=SEQ_LEN)
    packed.set_epoch(3)
    assert source.epoch == 3
    from_list = list(PackedBlocks(text_corpus, wordpiece_tok, seq_len=SEQ_LEN))
    from_stream = list(packed)
    assert [b["input_ids"].tolist() for b in from_stream] == [
        b["input_ids"].tolist() for b in from_list
    ]


def as_keys(blocks):
    return sorted(tuple(b["input_ids"].tolist()) for b in blocks)


def test_map_style_is_split_across_workers_and_ranks(wordpiece_tok, text_corpus):
    docs = [{"text": t} for t in text_corpus]
    half = len(docs) // 2
    expected = as_keys(
        list(PackedBlocks(docs[:half], wordpiece_tok, SEQ_LEN))
        + list(PackedBlocks(docs[half:], wordpiece_tok, SEQ_LEN))
    )
    loader = DataLoader(PackedBlocks(docs, wordpiece_tok, SEQ_LEN), batch_size=None, num_workers=2)
    assert as_keys(loader) == expected  # each worker packs its own contiguous half, no overlap
    rank1 = PackedBlocks(docs, wordpiece_tok, SEQ_LEN, rank=1, world_size=2)
    assert as_keys(rank1) == as_keys(PackedBlocks(docs[half:], wordpiece_tok, SEQ_LEN))


def test_default_collate_stacks_blocks(wordpiece_tok, text_corpus):
    batch = next(iter(DataLoader(PackedBlocks(text_corpus, wordpiece_tok, SEQ_LEN), batch_size=4)))
    assert (
        batch["input_ids"].shape == (4, SEQ_LEN)
        and batch["special_tokens_mask"].dtype == torch.bool
    )


def test_caption_collate_pads_to_longest_and_truncates(wordpiece_tok):
    texts = ["anan", "anan elpo orveel", " ".join(["anan"] * 50)]
    samples = [
        {"image": torch.full((3, 8, 8), i, dtype=torch.uint8), "text": t, "label": i}
        for i, t in enumerate(texts)
    ]
    batch = CaptionCollate(wordpiece_tok, max_len=10)(samples[:2])
    assert batch["image"].shape == (2, 3, 8, 8) and batch["image"].dtype == torch.uint8
    assert torch.equal(batch["label"], torch.tensor([0, 1]))
    lengths = [len(wordpiece_tok(t)["input_ids"]) for t in texts[:2]]
    assert batch["input_ids"].shape == (2, max(lengths)) < (2, 10)  # longest, not max_len
    assert batch["attention_mask"].sum(1).tolist() == lengths
    pad = batch["input_ids"][batch["attention_mask"] == 0]
    assert bool((pad == wordpiece_tok.pad_token_id).all())
    capped = CaptionCollate(wordpiece_tok, max_len=10)(samples)
    assert capped["input_ids"].shape == (3, 10) and capped["input_ids"].dtype == torch.int64
    assert capped["input_ids"][2, -1] == wordpiece_tok.sep_token_id  # truncated, still closed
