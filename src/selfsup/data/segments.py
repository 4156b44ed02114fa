"""Sentence-pair examples for BERT's next-sentence prediction and ALBERT's sentence-order prediction.

Next-sentence prediction (NSP; Devlin et al. 2019, "BERT: Pre-training of Deep Bidirectional
Transformers for Language Understanding", https://arxiv.org/abs/1810.04805, section 3.1 and
appendix A.2). Each document is split into sentences and walked through in chunks, as the
authors' ``create_pretraining_data`` does:

* a target length is drawn once per document: ``seq_len - 3`` tokens (room for
  ``[CLS] A [SEP] B [SEP]``), or, with probability ``short_seq_prob`` (0.1), uniform in
  ``[2, seq_len - 3]``, so that the model also sees short inputs;
* consecutive sentences are gathered into a chunk until it reaches the target length or the
  document ends; segment A is the chunk's first ``a_end`` sentences, ``a_end`` uniform in
  ``[1, sentences - 1]``;
* with probability 0.5 B is the rest of the chunk (IsNext, label 0); otherwise (NotNext, label 1)
  B is a span of consecutive sentences of a *different* document, from a random sentence on,
  until B fills the target length, and the chunk's unused sentences go back to be read again;
* a chunk of a single sentence (a one-sentence document, or one sentence reaching the target
  alone) is cut between two of its tokens into A and the rest, then treated like any chunk
  (IsNext or NotNext, 50/50); a chunk of one token is skipped. The paper defines a "sentence" as
  any span of contiguous text, and asks for 50 % NotNext; the reference instead makes every
  single-sentence chunk NotNext, which pushes the NotNext share above one half (53-56 % on the
  short-sentence corpus of ``tests/data/test_segments.py``: the sentences put back after a NotNext
  pair often leave a single sentence at a document's end);
* the pair is cut to ``seq_len - 3`` tokens by removing one token at a time from the longer
  segment, at its front or its back with equal probability.

Sentence-order prediction (SOP; Lan et al. 2020, "ALBERT: A Lite BERT for Self-supervised Learning
of Language Representations", https://arxiv.org/abs/1909.11942, section 4.1): the chunks, target
lengths and cuts are the same, B is always the rest of A's chunk, and with probability 0.5 the two
segments are swapped (label 1; label 0 = original order). Both segments come from one document,
so topic cannot give the answer away, only discourse order. ALBERT's reference code gives a
single-sentence chunk a random-document B instead, which would mix NSP's topic negatives into SOP.

Sentences: a simple rule-based splitter cuts after ``.``, ``!`` or ``?`` (optionally followed by a
closing quote or bracket) followed by whitespace, and at every line break. Abbreviations ("Mr.
Smith") are split too, which only makes a few sentences shorter. Each sentence is tokenised on its
own, without special tokens; empty sentences and empty documents are dropped.

Streaming: documents are read ``pool_size`` at a time; the NotNext spans of a pool's documents come
from the other documents of the pool and of the previous pool (the reference draws from the whole
corpus, which a stream cannot hold), and the examples of a pool are shuffled together before they
are yielded (the reference shuffles all examples of its input files). A document that finds no
other document to draw from (a stream of one document) gives no NotNext pair: that chunk is
skipped.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from itertools import islice
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from selfsup.data.packing import separator_id, shard_documents
from selfsup.data.streaming import seeded_rng

TASKS = ("nsp", "sop")
LABEL_KEYS = {"nsp": "next_sentence_label", "sop": "sentence_order_label"}

# after . ! ? (and an optional closing quote/bracket) followed by whitespace; or at a line break
_SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+|(?<=[.!?][\"'\u201d\u2019)\]])\s+|\s*\n\s*")

Document = list[list[int]]  # token ids of each sentence


def split_sentences(text: str) -> list[str]:
    """The non-empty sentences of ``text`` (see the module docstring for the rule)."""
    return [s.strip() for s in _SENTENCE_BREAK.split(text) if s.strip()]


def truncate_pair(a: list[int], b: list[int], max_tokens: int, rng: random.Random) -> None:
    """Shorten ``a`` and ``b`` in place to at most ``max_tokens`` tokens together.

    One token at a time is removed from the longer list (``b`` on a tie), from its front or its
    back with equal probability, so neither segment is always cut at the same end.
    """
    while len(a) + len(b) > max_tokens:
        longer = a if len(a) > len(b) else b
        if rng.random() < 0.5:
            del longer[0]
        else:
            longer.pop()


def document_pairs(
    document: Document,
    max_tokens: int,
    rng: random.Random,
    task: str = "nsp",
    other_document: Callable[[random.Random], Document | None] | None = None,
    short_seq_prob: float = 0.1,
    pair_prob: float = 0.5,
) -> list[tuple[list[int], list[int], int]]:
    """The ``(A, B, label)`` examples of one tokenised document (see the module docstring).

    Args:
        document: token ids of each sentence, every sentence non-empty.
        max_tokens: most tokens of A and B together (``seq_len - 3``), at least 2.
        rng: the only source of randomness.
        task: ``"nsp"`` (label 1 = B from another document) or ``"sop"`` (label 1 = swapped).
        other_document: ``rng -> Document | None``: a random other document, or None when
            there is none (NSP only; the argument None means there never is one).
        short_seq_prob: probability of a target length below ``max_tokens``.
        pair_prob: probability of a NotNext (NSP) or swapped (SOP) example.

    Returns:
        Lists of token ids A and B, each non-empty, ``len(A) + len(B) <= max_tokens``, and the
        label.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; valid: {', '.join(TASKS)}")
    target = max_tokens
    if rng.random() < short_seq_prob:
        target = rng.randint(2, max_tokens)
    examples = []
    chunk: Document = []
    length = 0
    i = 0
    while i < len(document):
        chunk.append(document[i])
        length += len(document[i])
        if i == len(document) - 1 or length >= target:
            example = None
            if task == "sop":
                example = _order_pair(chunk, rng, pair_prob)
            else:
                example, unused = _next_pair(chunk, target, rng, other_document, pair_prob)
                i -= unused  # sentences not used by a NotNext pair are read again
            if example is not None:
                a, b, label = example
                truncate_pair(a, b, max_tokens, rng)
                examples.append((a, b, label))
            chunk, length = [], 0
        i += 1
    return examples


def _split_chunk(chunk: Document, rng: random.Random) -> tuple[list[int], list[int], int] | None:
    """Cut ``chunk`` into A and the rest: at a random sentence boundary, or, for a single
    sentence, between two of its tokens. Returns ``(A, rest, sentences in rest)``, or None for a
    chunk of one token."""
    if len(chunk) >= 2:
        a_end = rng.randint(1, len(chunk) - 1)
        a = [t for sentence in chunk[:a_end] for t in sentence]
        rest = [t for sentence in chunk[a_end:] for t in sentence]
        return a, rest, len(chunk) - a_end
    if len(chunk[0]) >= 2:
        cut = rng.randint(1, len(chunk[0]) - 1)
        return list(chunk[0][:cut]), list(chunk[0][cut:]), 0
    return None


def _next_pair(
    chunk: Document,
    target: int,
    rng: random.Random,
    other_document: Callable[[random.Random], Document | None] | None,
    pair_prob: float,
) -> tuple[tuple[list[int], list[int], int] | None, int]:
    """One NSP example from ``chunk`` and how many of its sentences it leaves unused."""
    split = _split_chunk(chunk, rng)
    if split is None:
        return None, 0
    a, rest, rest_sentences = split
    if rng.random() >= pair_prob:
        return (a, rest, 0), 0
    other = other_document(rng) if other_document is not None else None
    if not other:
        return None, 0
    b: list[int] = []
    for sentence in other[rng.randint(0, len(other) - 1) :]:
        b.extend(sentence)
        if len(b) >= target - len(a):
            break
    return (a, b, 1), rest_sentences


def _order_pair(
    chunk: Document, rng: random.Random, pair_prob: float
) -> tuple[list[int], list[int], int] | None:
    """One SOP example from ``chunk``: A, B consecutive, swapped with probability ``pair_prob``."""
    split = _split_chunk(chunk, rng)
    if split is None:
        return None
    a, b, _ = split
    if rng.random() < pair_prob:
        return b, a, 1
    return a, b, 0


def _other_document(
    previous: list[Document], pool: list[Document], index: int, rng: random.Random
) -> Document | None:
    """A document drawn uniformly from ``previous`` and ``pool`` except ``pool[index]``."""
    others = len(previous) + len(pool) - 1
    if others == 0:
        return None
    j = rng.randrange(others)
    if j < len(previous):
        return previous[j]
    j -= len(previous)
    return pool[j + (j >= index)]  # skip the current document


class SentencePairs(IterableDataset):
    """``[CLS] A [SEP] B [SEP]`` examples for NSP or SOP, streamed from a text dataset.

    Each item is ``{"input_ids": int64 (L,), "token_type_ids": int64 (L,), "attention_mask":
    int64 (L,) all ones, "special_tokens_mask": bool (L,), LABEL: int64 ()}`` with ``L <=
    seq_len``; ``token_type_ids`` is 0 on [CLS], A and the first [SEP] and 1 on B and the last
    [SEP]; ``special_tokens_mask`` is True at special tokens (never masked); LABEL is
    ``next_sentence_label`` (NSP: 0 = IsNext, 1 = NotNext) or ``sentence_order_label`` (SOP: 0 =
    in order, 1 = swapped), the names ``transformers``' pretraining heads use.

    Iteration is deterministic: for the same documents, ``seed`` and epoch (``set_epoch``), each
    (rank, DataLoader worker) gives the same examples. Sharding across workers and processes is
    left to the inner dataset when it is iterable (as :class:`~selfsup.data.packing.PackedBlocks`
    does); a map-style dataset is split here into contiguous index ranges, one per
    ``(rank, worker)``.

    Args:
        dataset: a map-style or iterable dataset of ``{"text": str}`` documents (or strings).
        tokenizer: a fast ``transformers`` tokenizer with cls/sep (or bos/eos) and pad tokens.
        seq_len: most tokens per example, specials included; at least 5.
        task: ``"nsp"`` or ``"sop"``.
        short_seq_prob: probability of a shorter target length (0.1 in BERT and ALBERT).
        pair_prob: probability of a NotNext (NSP) or swapped (SOP) example (0.5).
        pool_size: documents read at once (NotNext spans come from this pool and the last).
        seed: base seed of the example RNG, combined with epoch, rank and worker.
        text_key: key of the text in each sample.
        rank: this process's rank (RNG stream; shards a map-style dataset).
        world_size: number of processes (shards a map-style dataset).
    """

    def __init__(
        self,
        dataset: Dataset | IterableDataset | Sequence[Any],
        tokenizer: Any,  # noqa: ANN401
        seq_len: int = 128,
        *,
        task: str = "nsp",
        short_seq_prob: float = 0.1,
        pair_prob: float = 0.5,
        pool_size: int = 1000,
        seed: int = 0,
        text_key: str = "text",
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; valid: {', '.join(TASKS)}")
        if seq_len < 5:
            raise ValueError(f"seq_len must be at least 5 ([CLS] a [SEP] b [SEP]), got {seq_len}")
        if not 0 <= rank < world_size:
            raise ValueError(
                f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}"
            )
        if pool_size < 1:
            raise ValueError(f"pool_size must be at least 1, got {pool_size}")
        cls = tokenizer.cls_token_id
        if cls is None:
            cls = tokenizer.bos_token_id
        if cls is None:
            raise ValueError("the tokenizer has neither a cls_token nor a bos_token")
        self.dataset = dataset
        self.tokenizer = tokenizer
        self.seq_len = seq_len
        self.task = task
        self.label_key = LABEL_KEYS[task]
        self.short_seq_prob = short_seq_prob
        self.pair_prob = pair_prob
        self.pool_size = pool_size
        self.seed = seed
        self.text_key = text_key
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.cls_id = cls
        self.sep_id = separator_id(tokenizer)
        self.special_ids = torch.tensor(sorted(set(tokenizer.all_special_ids)), dtype=torch.long)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's random stream; forwarded to the inner dataset."""
        self.epoch = int(epoch)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def _documents(self) -> Iterator[str]:
        return shard_documents(self.dataset, self.text_key, self.rank, self.world_size)

    def _pools(self) -> Iterator[list[Document]]:
        """Tokenised non-empty documents, ``pool_size`` at a time."""
        texts = self._documents()
        while True:
            batch = list(islice(texts, self.pool_size))
            if not batch:
                return
            sentences = [split_sentences(text) for text in batch]
            flat = [s for doc in sentences for s in doc]
            ids: list[list[int]] = []
            if flat:
                ids = self.tokenizer(
                    flat,
                    add_special_tokens=False,
                    return_attention_mask=False,
                    return_token_type_ids=False,
                    verbose=False,  # long sentences are not an error here
                )["input_ids"]
            pool, start = [], 0
            for doc in sentences:
                document = [s for s in ids[start : start + len(doc)] if s]
                start += len(doc)
                if document:
                    pool.append(document)
            if pool:
                yield pool

    def _encode(self, a: list[int], b: list[int], label: int) -> dict[str, Tensor]:
        ids = torch.tensor([self.cls_id, *a, self.sep_id, *b, self.sep_id], dtype=torch.long)
        types = torch.zeros_like(ids)  # (L,) 0 = [CLS] A [SEP]
        types[len(a) + 2 :] = 1  # 1 = B [SEP]
        return {
            "input_ids": ids,
            "token_type_ids": types,
            "attention_mask": torch.ones_like(ids),
            "special_tokens_mask": torch.isin(ids, self.special_ids),  # True = special, keep
            self.label_key: torch.tensor(label, dtype=torch.long),
        }

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        info = get_worker_info()
        worker = info.id if info is not None else 0
        rng = seeded_rng(self.seed, self.epoch, self.rank, worker)
        previous: list[Document] = []
        for pool in self._pools():
            examples = []
            for index, document in enumerate(pool):
                examples += document_pairs(
                    document,
                    self.seq_len - 3,
                    rng,
                    self.task,
                    partial(_other_document, previous, pool, index),
                    self.short_seq_prob,
                    self.pair_prob,
                )
            rng.shuffle(examples)
            for a, b, label in examples:
                yield self._encode(a, b, label)
            previous = pool


class PairCollate:
    """Pad sentence-pair examples into a batch.

    Pads ``input_ids`` with the pad id, ``token_type_ids`` and ``attention_mask`` with 0 and
    ``special_tokens_mask`` with True, to the batch's longest example or to ``pad_to``; stacks
    the label. The batch holds ``(B, L)`` tensors and a ``(B,)`` label.

    Args:
        pad_token_id: the tokenizer's pad id.
        pad_to: fixed length (e.g. ``seq_len``, for static shapes); None = the batch's longest.
    """

    def __init__(self, pad_token_id: int, pad_to: int | None = None) -> None:
        if pad_token_id is None:
            raise ValueError("PairCollate needs a tokenizer with a pad token")
        self.pad_token_id = pad_token_id
        self.pad_to = pad_to

    def __call__(self, samples: Sequence[dict[str, Tensor]]) -> dict[str, Tensor]:
        longest = max(len(s["input_ids"]) for s in samples)
        length = longest if self.pad_to is None else self.pad_to
        if longest > length:
            raise ValueError(f"an example has {longest} tokens, more than pad_to={length}")
        fill = {
            "input_ids": self.pad_token_id,
            "token_type_ids": 0,
            "attention_mask": 0,
            "special_tokens_mask": True,
        }
        batch = {}
        for key, value in fill.items():
            out = torch.full((len(samples), length), value, dtype=samples[0][key].dtype)  # (B, L)
            for row, sample in enumerate(samples):
                out[row, : len(sample[key])] = sample[key]
            batch[key] = out
        for key in LABEL_KEYS.values():
            if key in samples[0]:
                batch[key] = torch.stack([s[key] for s in samples])  # (B,)
        return batch
