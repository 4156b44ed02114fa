"""Word-level training data for word2vec: corpus-wide word counts and blocks of trained word ids.

The C tool and gensim read a corpus in order every epoch and drop the words below min_count
before they form windows; :func:`count_words` counts every id over the whole split (every process
reads all of it, so that the counts agree) and :class:`WordBlocks` streams the trained words in
blocks of ``seq_len``, each (rank, DataLoader worker) its own contiguous share of the documents.
:func:`context_windows` gives every centre word of a block its context positions within its
dynamic window and sentence.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import IterableDataset, get_worker_info

from selfsup.data.packing import text_of
from selfsup.data.streaming import seeded_rng

__all__ = [
    "WordBlocks",
    "all_documents",
    "context_windows",
    "count_words",
    "one_example_per_pair",
]


def all_documents(dataset: Any) -> Iterator[str]:  # noqa: ANN401
    """Every document of ``dataset``, whatever this process's rank (for counts that agree)."""
    if hasattr(dataset, "parts") and hasattr(dataset, "records"):  # a PartitionedStream
        for part in dataset.parts:
            for raw in dataset.records(part):  # a binary "text" file is skipped while training
                yield text_of(dataset.decode(raw), "text")
    elif isinstance(dataset, IterableDataset):
        yield from (text_of(s, "text") for s in dataset)
    else:
        yield from (text_of(dataset[i], "text") for i in range(len(dataset)))


def _token_chunks(
    texts: Iterable[str], tokenizer: Any, batch: int = 256
) -> Iterator[list[np.ndarray]]:  # noqa: ANN401, E501
    """Word ids of each text, ``batch`` texts per call to the tokenizer (and per item)."""
    texts = iter(texts)
    while chunk := [t for _, t in zip(range(batch), texts, strict=False)]:
        encoded = tokenizer(chunk, add_special_tokens=False, return_attention_mask=False,
                            return_token_type_ids=False, verbose=False)["input_ids"]  # fmt: skip
        yield [np.asarray(ids, dtype=np.int64) for ids in encoded]


def count_words(
    dataset: Any,  # noqa: ANN401
    tokenizer: Any,  # noqa: ANN401
    max_cached_words: int = 0,
) -> tuple[Tensor, list[np.ndarray] | None]:
    """Occurrences of every token id over the whole of ``dataset``, and its documents' ids.

    Returns:
        ``(counts (V,) int64, documents)``: ``documents`` is every document's int32 ids in order
        when the split has at most ``max_cached_words`` words, else None.
    """
    counts = np.zeros(len(tokenizer), dtype=np.int64)
    documents: list[np.ndarray] | None = []
    total = 0
    for arrays in _token_chunks(all_documents(dataset), tokenizer):
        flat = np.concatenate(arrays)
        counts += np.bincount(flat, minlength=len(counts))
        total += len(flat)
        if documents is not None:
            documents += [ids.astype(np.int32) for ids in arrays]
            if total > max_cached_words:
                documents = None
    return torch.from_numpy(counts), documents


def _share(n: int, rank: int, world_size: int) -> range:
    """The contiguous range of ``n`` items that this (rank, DataLoader worker) reads."""
    info = get_worker_info()
    workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
    shards, shard = world_size * workers, rank * workers + worker
    return range(n * shard // shards, n * (shard + 1) // shards)


class WordBlocks(IterableDataset):
    """Blocks of ``seq_len`` word ids: the words the method trains on.

    Words outside the trained vocabulary (``vocabulary[id]`` False: below min_count, [UNK]) are
    removed first, as word2vec.c removes them before it forms windows. Consecutive documents are
    separated by one [SEP]; the last block (of each (rank, worker) share, in order) is padded
    with [PAD]. Items are ``{"input_ids": int64 (L,)}``. ``documents`` (the ids of every
    document, from :func:`count_words`) are read instead of tokenising the dataset again.

    Order: with ``shuffle`` (cached ``documents`` only) the blocks of the whole text come in a
    random order every epoch, a function of ``(seed, epoch)`` (:meth:`set_epoch`) that every
    process and worker shares, each taking its own contiguous part of it. Otherwise documents
    come in their order every epoch, as word2vec.c and gensim read a corpus: cached documents
    (or those of a map-style dataset) split here into contiguous ranges, one per (rank, worker);
    an iterable dataset splits itself.
    """

    def __init__(
        self,
        dataset: Any,  # noqa: ANN401
        tokenizer: Any,  # noqa: ANN401
        seq_len: int,
        vocabulary: Tensor,
        rank: int = 0,
        world_size: int = 1,
        documents: list[np.ndarray] | None = None,
        *,
        shuffle: bool = False,
        seed: int = 0,
    ) -> None:
        if seq_len < 2:
            raise ValueError(f"seq_len must be at least 2 words, got {seq_len}")
        self.dataset, self.tokenizer, self.seq_len = dataset, tokenizer, seq_len
        self.vocabulary = vocabulary.numpy()
        self.rank, self.world_size = rank, world_size
        self.sep_id, self.pad_id = tokenizer.sep_token_id, tokenizer.pad_token_id
        self.shuffle, self.seed, self.epoch = shuffle and documents is not None, seed, 0
        self.documents = self.text = None  # in order: the documents; shuffled: one joined text
        if documents is not None:
            kept = [ids for ids in (ids[self.vocabulary[ids]] for ids in documents) if len(ids)]
            if self.shuffle:  # joined by [SEP], in the cache's int32
                sep = np.array([self.sep_id], dtype=kept[0].dtype if kept else np.int32)
                parts = [p for ids in kept for p in (sep, ids)][1:]
                self.text = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32)
            else:
                self.documents = [ids.astype(np.int64) for ids in kept]

    def set_epoch(self, epoch: int) -> None:
        """The epoch of the next pass: the block order when shuffled; also forwarded to the
        inner dataset (which may reshuffle its documents per epoch)."""
        self.epoch = epoch
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def _id_arrays(self) -> Iterator[np.ndarray]:
        """This share's documents as arrays of trained word ids."""
        if self.documents is not None:
            share = _share(len(self.documents), self.rank, self.world_size)
            yield from self.documents[share.start : share.stop]
            return
        if isinstance(self.dataset, IterableDataset):
            texts: Iterable[str] = (text_of(s, "text") for s in self.dataset)
        else:
            share = _share(len(self.dataset), self.rank, self.world_size)
            texts = (text_of(self.dataset[i], "text") for i in share)
        for arrays in _token_chunks(texts, self.tokenizer):
            yield from (ids[self.vocabulary[ids]] for ids in arrays)

    def _shuffled(self) -> Iterator[dict[str, Tensor]]:
        """This share of the epoch's random order of every block of the joined text."""
        size = self.seq_len
        order = list(range(-(-len(self.text) // size)))
        seeded_rng(self.seed, self.epoch).shuffle(order)
        share = _share(len(order), self.rank, self.world_size)
        for i in order[share.start : share.stop]:
            block = np.full(size, self.pad_id, dtype=np.int64)
            piece = self.text[i * size : (i + 1) * size]
            block[: len(piece)] = piece
            yield {"input_ids": torch.from_numpy(block)}

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        if self.shuffle:
            yield from self._shuffled()
            return
        size, sep = self.seq_len, np.array([self.sep_id])
        stream, first = np.zeros(0, dtype=np.int64), True  # fewer than `size` words kept
        for ids in self._id_arrays():
            if not len(ids):
                continue
            stream = np.concatenate([stream, ids] if first else [stream, sep, ids])
            first = False
            whole = len(stream) // size * size
            for start in range(0, whole, size):
                yield {"input_ids": torch.from_numpy(stream[start : start + size].copy())}
            stream = stream[whole:]
        if len(stream):
            tail = np.full(size, self.pad_id, dtype=np.int64)
            tail[: len(stream)] = stream
            yield {"input_ids": torch.from_numpy(tail)}


# ---- windows: which words a centre is trained with ---------------------------------------------


def context_windows(segment: Tensor, radius: Tensor, window: int) -> tuple[Tensor, Tensor]:
    """Context positions of every centre word of a flat word stream.

    Args:
        segment: ``(M,)`` sentence id of each word, non-decreasing; windows stay inside one.
        radius: ``(M,)`` each centre's window b in 1..window.
        window: the largest window.

    Returns:
        ``(context (M, 2W), valid (M, 2W))``: positions ``i-W..i-1, i+1..i+W`` (clamped into the
        stream) and True where that position is within ``radius[i]`` of i in the same sentence.
    """
    m = segment.shape[0]
    offsets = torch.cat([torch.arange(-window, 0), torch.arange(1, window + 1)]).to(segment.device)
    position = torch.arange(m, device=segment.device)[:, None] + offsets  # (M, 2W)
    valid = (position >= 0) & (position < m) & (offsets.abs() <= radius[:, None])
    position = position.clamp(0, max(m - 1, 0))
    return position, valid & (segment[position] == segment[:, None])


def one_example_per_pair(bags: Tensor, valid: Tensor, targets: Tensor) -> tuple[Tensor, ...]:
    """Skip-gram's (context, centre) pairs as examples of one slot each: ``(bags (N, 1), valid
    (N, 1) all True, targets (N,))`` for the N valid slots of ``valid (M, S)``, row by row."""
    centre, slot = valid.nonzero(as_tuple=True)  # (N,)
    pairs = bags[centre, slot][:, None]
    return pairs, valid.new_ones(pairs.shape), targets[centre]


def draw_examples(
    ids: Tensor, keep: Tensor, sep_id: int, window: int, cbow: bool
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """word2vec's random part of a step: subsample the words, draw every centre's window.

    Args:
        ids: ``(B, L)`` word blocks; ``sep_id`` ends a document.
        keep: ``(V,)`` probability of keeping each occurrence of a word (0: never trained on,
            as special ids and words below min_count).
        sep_id: the document separator's id.
        window: largest window; each centre draws its own from 1..window.
        cbow: only centres with a context word are examples.

    Returns:
        ``(bags (M, 2W), valid (M, 2W), targets (M,), words)``: example m predicts the
        centre word ``targets[m]`` from the context words ``bags[m]`` where ``valid[m]``
        (True = in the centre's window and sentence; skip-gram: one pair per valid slot;
        CBOW: only centres with a context word are examples); ``words`` is the subsampled
        stream the centres come from.
    """
    b, length = ids.shape
    rows = torch.arange(b, device=ids.device)[:, None]
    segment = torch.cumsum(ids == sep_id, dim=1) + length * rows  # (B, L) sentence id
    kept = torch.rand(ids.shape, device=ids.device) < keep[ids]  # (B, L) True = trained on
    words, segment = ids[kept], segment[kept]  # (M,) the subsampled stream, in order
    radius = torch.randint(1, window + 1, words.shape, device=ids.device)  # (M,)
    context, valid = context_windows(segment, radius, window)  # (M, 2W)
    bags = words[context]  # (M, 2W) context word ids (any id where not valid)
    if cbow:
        has = valid.any(dim=1)
        return bags[has], valid[has], words[has], words
    return bags, valid, words, words
