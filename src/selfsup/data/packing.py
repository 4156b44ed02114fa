"""Token blocks for language-model pretraining, and a collate function for image-caption pairs.

``PackedBlocks`` follows BERT's pretraining input (Devlin et al. 2019, and RoBERTa's "full
sentences" format, Liu et al. 2019): documents are tokenised, joined into one stream with a
separator between consecutive documents, and cut into blocks of exactly ``seq_len`` tokens

    [CLS] t_1 ... t_{seq_len-2} [SEP]

so no position is padding. A document may continue from one block into the next. The tokens left
over at the end of the stream (fewer than ``seq_len - 2``) are dropped rather than padded.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import islice
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset, IterableDataset, get_worker_info


def text_of(sample: Any, key: str) -> str:  # noqa: ANN401
    """The text of a sample: the sample itself when it is a string, else ``sample[key]``."""
    return sample if isinstance(sample, str) else sample[key]


def separator_id(tokenizer: Any) -> int:
    """[SEP] for BERT-style tokenizers, the end-of-sequence token (``</s>``) otherwise."""
    sep = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    if sep is None:
        raise ValueError("the tokenizer has neither a sep_token nor an eos_token")
    return sep


def shard_documents(
    dataset: Any,  # noqa: ANN401
    text_key: str,
    rank: int = 0,
    world_size: int = 1,
) -> Iterator[str]:
    """The texts of this process's and DataLoader worker's share of ``dataset``.

    An iterable dataset shards itself by worker and rank (selfsup's streams do); a map-style one
    is cut into ``world_size x workers`` contiguous shares here.
    """
    if isinstance(dataset, IterableDataset):
        for sample in dataset:
            yield text_of(sample, text_key)
        return
    info = get_worker_info()
    workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
    shards, shard = world_size * workers, rank * workers + worker
    n = len(dataset)
    for i in range(n * shard // shards, n * (shard + 1) // shards):
        yield text_of(dataset[i], text_key)


class PackedBlocks(IterableDataset):
    """Fixed-length token blocks packed from a text dataset, with no padding.

    Each item is ``{"input_ids": int64 (L,), "attention_mask": int64 (L,) all ones,
    "special_tokens_mask": bool (L,)}`` with ``L = seq_len``; ``special_tokens_mask`` is True at
    special tokens (the block's [CLS] and [SEP], the separators between documents, and any special
    token written literally in the text), which masking must leave alone.

    Documents are separated by the tokenizer's [SEP] (BERT-style) or ``eos`` (byte-level BPE,
    where [CLS]/[SEP] are ``<s>``/``</s>``); no separator is inserted where a document starts a new
    block, since the [SEP] closing the previous block already marks the boundary. Empty documents
    are skipped. The final partial block of every shard is dropped.

    Iteration is deterministic: the same documents in the same order give the same blocks.
    Sharding across DataLoader workers (and processes) is left to the inner dataset when it is
    iterable; a map-style dataset is split here into contiguous index ranges, one per
    ``(rank, worker)``.

    Args:
        dataset: a map-style or iterable dataset of ``{"text": str}`` samples (or of strings).
        tokenizer: a fast ``transformers`` tokenizer with cls/sep (or bos/eos) tokens.
        seq_len: block length including [CLS] and [SEP]; at least 3.
        text_key: key of the text in each sample.
        batch_size: documents tokenised per call to the tokenizer.
        rank: this process's rank, used only to shard a map-style dataset.
        world_size: number of processes, used only to shard a map-style dataset.
        separator: put the separator between documents; False concatenates them with nothing
            between (T5's packing).
    """

    def __init__(
        self,
        dataset: Dataset | IterableDataset | Sequence[Any],
        tokenizer: Any,
        seq_len: int = 128,
        *,
        text_key: str = "text",
        batch_size: int = 256,
        rank: int = 0,
        world_size: int = 1,
        separator: bool = True,
    ) -> None:
        if seq_len < 3:
            raise ValueError(f"seq_len must be at least 3 ([CLS] token [SEP]), got {seq_len}")
        if not 0 <= rank < world_size:
            raise ValueError(
                f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}"
            )
        self.dataset = dataset
        self.tokenizer = tokenizer
        self.seq_len = seq_len
        self.text_key = text_key
        self.batch_size = batch_size
        self.rank = rank
        self.world_size = world_size
        self.separator = separator
        cls = (
            tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
        )
        if cls is None:
            raise ValueError("the tokenizer has neither a cls_token nor a bos_token")
        self.cls_id = cls
        self.sep_id = separator_id(tokenizer)
        self.special_ids = torch.tensor(sorted(set(tokenizer.all_special_ids)), dtype=torch.long)

    @property
    def resample(self) -> bool:
        """Whether the inner stream draws its parts with replacement, endlessly."""
        return bool(getattr(self.dataset, "resample", False))

    @resample.setter
    def resample(self, value: bool) -> None:
        self.dataset.resample = value

    def set_epoch(self, epoch: int) -> None:
        """Forwarded to the inner dataset (which may reshuffle its documents per epoch)."""
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def _documents(self) -> Iterator[str]:
        return shard_documents(self.dataset, self.text_key, self.rank, self.world_size)

    def _token_lists(self) -> Iterator[list[int]]:
        """Token ids of each non-empty document, tokenised ``batch_size`` documents at a time."""
        docs = self._documents()
        while True:
            batch = list(islice(docs, self.batch_size))
            if not batch:
                return
            encoded = self.tokenizer(
                batch,
                add_special_tokens=False,
                return_attention_mask=False,
                return_token_type_ids=False,
                verbose=False,  # long documents are the point here, not an error
            )["input_ids"]
            yield from (ids for ids in encoded if ids)

    def _block(self, content: list[int]) -> dict[str, Tensor]:
        ids = torch.tensor([self.cls_id, *content, self.sep_id], dtype=torch.long)  # (L,)
        return {
            "input_ids": ids,
            "attention_mask": torch.ones_like(ids),
            "special_tokens_mask": torch.isin(ids, self.special_ids),  # True = special, keep
        }

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        size = self.seq_len - 2
        stream: list[int] = []  # tokens not yet emitted, fewer than `size` between documents
        for ids in self._token_lists():
            if stream and self.separator:
                stream.append(self.sep_id)
            stream.extend(ids)
            start = 0  # cut with an offset: a long document must not cost O(len^2) list shifts
            while len(stream) - start >= size:
                yield self._block(stream[start : start + size])
                start += size
            del stream[:start]


class CaptionCollate:
    """Collate image-caption samples into one batch, tokenising the captions.

    Samples are ``{"image": uint8 (3, S, S), "text": str, "label": int}``; the batch is
    ``{"image": uint8 (B, 3, S, S), "input_ids": int64 (B, T), "attention_mask": int64 (B, T),
    "label": int64 (B,), "text": list[str]}`` where ``T`` is the longest tokenised caption of the batch, capped at
    ``max_len`` (longer captions are truncated, keeping their final [SEP]). ``attention_mask`` is
    1 at real tokens and 0 at padding. ``label`` is present only when the samples carry one.

    Args:
        tokenizer: a ``transformers`` tokenizer with a pad token.
        max_len: the most tokens per caption, special tokens included.
    """

    def __init__(self, tokenizer: Any, max_len: int = 77) -> None:
        if tokenizer.pad_token_id is None:
            raise ValueError("CaptionCollate needs a tokenizer with a pad token")
        self.tokenizer = tokenizer
        self.max_len = max_len

    def __call__(self, samples: Sequence[dict[str, Any]]) -> dict[str, Tensor]:
        images = torch.stack([torch.as_tensor(s["image"]) for s in samples])  # (B, 3, S, S)
        enc = self.tokenizer(
            [s["text"] for s in samples],
            padding="longest",
            truncation=True,
            max_length=self.max_len,
            return_token_type_ids=False,
            return_tensors="pt",
        )
        batch = {
            "image": images,
            "input_ids": enc["input_ids"].long(),  # (B, T)
            "attention_mask": enc["attention_mask"].long(),  # (B, T)
        }
        if "label" in samples[0]:
            batch["label"] = torch.tensor([int(s["label"]) for s in samples], dtype=torch.long)
        batch["text"] = [s["text"] for s in samples]  # kept for retrieval and reports
        return batch


class RawBlocks(IterableDataset):
    """:class:`PackedBlocks` of ``length + 2`` without their [CLS] and final [SEP]: ``length``
    raw tokens per block, no padding (the blocks T5's span corruption cuts into inputs and
    targets; T5 builds them with ``separator=False``)."""

    def __init__(self, blocks: PackedBlocks) -> None:
        self.blocks = blocks

    def set_epoch(self, epoch: int) -> None:
        self.blocks.set_epoch(epoch)

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        for block in self.blocks:
            ids = block["input_ids"][1:-1]  # (n,)
            yield {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
