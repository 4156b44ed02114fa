"""``text:PATH`` — plain-text corpora, streamed as raw ``str`` documents.

PATH is a file, a directory (every ``*.txt`` below it, sorted), or a glob. How a file splits
into documents is decided per file:

- if the file has a blank (whitespace-only) line between two non-blank lines, documents are the
  blocks separated by blank lines, their lines joined with ``"\\n"`` (a block is cut after
  :data:`MAX_LINE_CHARS` characters);
- otherwise every non-blank line is one document.

Surrounding whitespace is stripped and empty documents are skipped. Files are read as UTF-8; an
invalid byte becomes U+FFFD rather than stopping a long run. A line longer than
:data:`MAX_LINE_CHARS` characters is read in pieces of that length, each a line, so memory stays
bounded. A file with a NUL byte in its first 8 KiB is binary, not text: it raises
:class:`DataError`, or while training is skipped and counted (see :mod:`selfsup.data.faults`); a
source whose files are all binary or empty is an error.

Test split: within each file, documents number 19, 39, 59, ... (every 20th, counting from 0) are
held out; the train split is the rest. This depends only on the file's content, not on how the
stream is split across workers.

For objectives trained on sentences (SimCSE), :func:`split_sentences` cuts documents into
sentences, :class:`SentenceStream` streams the sentences of any document dataset, shuffled and
split by rank and worker, and :class:`SentenceCollate` tokenises them into padded batches.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Iterator, Sequence
from typing import Any

from torch import Tensor
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from selfsup.data.registry import register_dataset, require_arg
from selfsup.data.source import DataError, DataSource
from selfsup.data.streaming import PartitionedStream, seeded_rng, shuffle_buffer

__all__ = [
    "HOLDOUT_EVERY",
    "MAX_LINE_CHARS",
    "SentenceCollate",
    "SentenceStream",
    "TextDataset",
    "find_text_files",
    "is_binary",
    "iter_documents",
    "split_sentences",
    "uses_blank_lines",
]

HOLDOUT_EVERY = 20
MAX_LINE_CHARS = 1_000_000  # longer lines are read in pieces of this many characters
_SNIFF_BYTES = 8192  # a NUL byte in these first bytes marks a binary file
_COUNT_LIMIT_BYTES = 16 * 2**20  # count documents up front only for corpora this small
_SPLITS = ("train", "test", "all")


def _lines(f: Any) -> Iterator[str]:  # noqa: ANN401
    """The lines of an open text file, a line longer than :data:`MAX_LINE_CHARS` in pieces."""
    while line := f.readline(MAX_LINE_CHARS):
        yield line


def is_binary(path: str) -> bool:
    """True when the file has a NUL byte in its first 8 KiB (text files have none)."""
    with open(path, "rb") as f:
        return b"\0" in f.read(_SNIFF_BYTES)


def _without_bom(encoding: str) -> str:
    """UTF-8 read as ``utf-8-sig``: a byte-order mark (Windows editors write one) is dropped,
    not kept as the first document's first character; files without one read the same."""
    return "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding


def uses_blank_lines(path: str, encoding: str = "utf-8") -> bool:
    """True when the file separates documents by blank lines (see the module docstring)."""
    seen_text = pending_blank = False
    with open(path, encoding=_without_bom(encoding), errors="replace") as f:
        for line in _lines(f):
            if line.strip():
                if pending_blank:
                    return True
                seen_text = True
            elif seen_text:
                pending_blank = True
    return False


def iter_documents(path: str, encoding: str = "utf-8") -> Iterator[str]:
    """Yield the non-empty documents of one text file, in order.

    Args:
        path: Text file.
        encoding: Its encoding; undecodable bytes become U+FFFD.

    Yields:
        Documents, stripped.

    Raises:
        DataError: The file is binary (see :func:`is_binary`).
    """
    if is_binary(path):
        raise DataError(f"text file {path} is binary (a NUL byte in its first 8 KiB), not text")
    paragraphs = uses_blank_lines(path, encoding)
    with open(path, encoding=_without_bom(encoding), errors="replace") as f:
        if not paragraphs:
            for line in _lines(f):
                if line.strip():
                    yield line.strip()
            return
        block: list[str] = []
        size = 0
        for line in _lines(f):
            if line.strip():
                block.append(line.strip())
                size += len(block[-1])
            if block and (not line.strip() or size >= MAX_LINE_CHARS):  # bounded documents
                yield "\n".join(block)
                block, size = [], 0
        if block:
            yield "\n".join(block)


def _has_text(path: str) -> bool:
    if is_binary(path):
        return False
    with open(path, encoding="utf-8", errors="replace") as f:
        return any(line.strip() for line in _lines(f))


def find_text_files(path: str) -> list[str]:
    """Resolve a text PATH (file, directory of ``*.txt``, or glob) to sorted files.

    Raises:
        DataError: Nothing exists at ``path`` or it matches no files.
    """
    expanded = os.path.expanduser(path)
    if glob.has_magic(expanded):
        files = sorted(p for p in glob.glob(expanded, recursive=True) if os.path.isfile(p))
        if not files:
            raise DataError(f"no text files match {path!r}")
        return files
    if os.path.isdir(expanded):
        files = sorted(
            p
            for p in glob.glob(os.path.join(expanded, "**", "*"), recursive=True)
            if p.lower().endswith(".txt") and os.path.isfile(p)
        )
        if not files:
            raise DataError(f"text directory {path!r} holds no *.txt files")
        return files
    if os.path.isfile(expanded):
        return [expanded]
    raise DataError(f"text path {path!r} does not exist")


class TextDataset(PartitionedStream[str]):
    """Streams documents of text files as ``{"text": str}``.

    Args:
        files: Text files, in order.
        split: ``"train"`` (all but every 20th document of each file), ``"test"`` (every 20th)
            or ``"all"``.
        shuffle: Shuffle file order per epoch and documents through a buffer.
        buffer_size: Shuffle buffer capacity.
        seed: Base seed of the shuffling.
        encoding: File encoding.
    """

    def __init__(
        self,
        files: list[str],
        *,
        split: str = "all",
        shuffle: bool = False,
        buffer_size: int = 1000,
        seed: int = 0,
        encoding: str = "utf-8",
    ) -> None:
        if split not in _SPLITS:
            raise ValueError(f"split must be one of {_SPLITS}, got {split!r}")
        super().__init__(files, shuffle=shuffle, buffer_size=buffer_size, seed=seed)
        self.split = split
        self.encoding = encoding

    def _in_split(self, index: int) -> bool:
        if self.split == "all":
            return True
        held_out = index % HOLDOUT_EVERY == HOLDOUT_EVERY - 1
        return held_out == (self.split == "test")

    def read_part(self, part: str) -> Iterator[str]:
        """Yield the documents of one file that belong to this split."""
        try:
            for index, document in enumerate(iter_documents(part, self.encoding)):
                if self._in_split(index):
                    yield document
        except OSError as exc:
            raise DataError(f"cannot read text file {part}: {exc.strerror or exc}") from exc

    def decode(self, raw: str) -> dict[str, Any]:
        """Wrap a document as a sample."""
        return {"text": raw}

    def count(self) -> int:
        """Number of documents in this split (reads every file)."""
        return sum(1 for part in self.parts if not is_binary(part) for _ in self.read_part(part))


@register_dataset(
    "text",
    usage="text:PATH",
    description="plain-text corpus (file, directory of .txt, or glob); line or blank-line documents",
)
def build_text(arg: str | None, *, image_size: int, seed: int, shuffle_buffer: int) -> DataSource:
    """Build ``text:PATH`` (see the module docstring)."""
    path = require_arg("text", arg)
    files = find_text_files(path)
    if not any(_has_text(f) for f in files):
        raise DataError(
            f"text source {path!r} holds no non-empty documents (its files are empty or binary)"
        )
    train = TextDataset(
        files, split="train", shuffle=shuffle_buffer > 0, buffer_size=shuffle_buffer, seed=seed
    )
    test: TextDataset | None = TextDataset(files, split="test")
    num_samples = None
    if sum(os.path.getsize(f) for f in files) <= _COUNT_LIMIT_BYTES:
        num_samples = train.count()
        if test is not None and test.count() == 0:
            test = None
    return DataSource(
        name=f"text:{path}",
        kind="text",
        train=train,
        test=test,
        classes=None,
        num_samples=num_samples,
        description=f"text corpus {path} ({len(files)} files)",
    )


# ---- sentences -----------------------------------------------------------------------------

MIN_SENTENCE_WORDS = 3  # shorter pieces are headings, list items or splitter mistakes
SENTENCE_BUFFER = 10_000  # sentences in the shuffle buffer of each data consumer
# Words that end in a full stop without ending a sentence.
_ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof st jr sr vs etc no nos vol fig figs inc ltd co corp gen col lt sgt capt "
    "rev gov sen rep approx ca cf al jan feb mar apr jun jul aug sep sept oct nov dec".split()
)
_INITIALS = re.compile(r"(?:[A-Za-z]\.)+")  # U.S.  e.g.  J.
_CLOSERS = "\"')]}\u201d\u2019"


def split_sentences(text: str, min_words: int = MIN_SENTENCE_WORDS) -> list[str]:
    """Split text into sentences: a simple rule-based splitter.

    A sentence ends at a line break or after a word ending in ``.``, ``!`` or ``?`` (closing
    quotes and brackets may follow), except a full stop after a known abbreviation ("Dr.",
    "etc.") or initials ("U.S.", "e.g.", "J."). Whitespace inside a sentence is collapsed.

    Args:
        text: A document.
        min_words: Drop pieces of fewer words than this.

    Returns:
        The sentences, in order.
    """
    sentences = []
    for line in text.splitlines():
        words: list[str] = []
        for word in line.split():
            words.append(word)
            core = word.rstrip(_CLOSERS)
            if not core or core[-1] not in ".!?":
                continue
            stem = core[:-1]
            if core[-1] == "." and (stem.lower() in _ABBREVIATIONS or _INITIALS.fullmatch(core)):
                continue
            sentences.append(" ".join(words))
            words = []
        if words:
            sentences.append(" ".join(words))
    return [s for s in sentences if len(s.split()) >= min_words]


class SentenceStream(IterableDataset):
    """The sentences of a document dataset as ``{"text": str}``, shuffled through a buffer.

    An iterable document dataset (a streamed source) splits itself by rank and DataLoader
    worker; a map-style one (or a list) is split here, document ``i`` going to consumer
    ``i % (world_size * workers)``, after a per-epoch shuffle of the document order that is the
    same on every consumer. Sentences then pass through a shuffle buffer seeded by
    ``(seed, epoch, rank, worker)`` so that a batch mixes many documents.

    Args:
        documents: Dataset (or sequence) of ``{"text": str}`` samples or strings.
        rank: This process's rank.
        world_size: Number of processes.
        seed: Base seed of the shuffling.
        buffer_size: Shuffle buffer capacity in sentences (``<= 1``: document order).
        min_words: Shortest sentence kept.
    """

    def __init__(
        self,
        documents: Dataset | Sequence[Any],
        *,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        buffer_size: int = SENTENCE_BUFFER,
        min_words: int = MIN_SENTENCE_WORDS,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got {rank} and {world_size}")
        self.documents = documents
        self.rank, self.world_size = rank, world_size
        self.seed, self.buffer_size, self.min_words = seed, buffer_size, min_words
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle for ``epoch`` (forwarded to a streamed source)."""
        self.epoch = int(epoch)
        if hasattr(self.documents, "set_epoch"):
            self.documents.set_epoch(epoch)

    def _texts(self, worker: int, workers: int) -> Iterator[str]:
        if isinstance(self.documents, IterableDataset):
            samples = iter(self.documents)
        else:
            order = list(range(len(self.documents)))  # type: ignore[arg-type]
            seeded_rng(self.seed, self.epoch).shuffle(order)
            consumers, me = self.world_size * workers, self.rank * workers + worker
            samples = (self.documents[i] for i in order[me::consumers])
        for sample in samples:
            yield sample if isinstance(sample, str) else sample["text"]

    def __iter__(self) -> Iterator[dict[str, str]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        sentences = (
            s
            for text in self._texts(worker, workers)
            for s in split_sentences(text, self.min_words)
        )
        rng = seeded_rng(self.seed, self.epoch, self.rank, worker)
        for sentence in shuffle_buffer(sentences, self.buffer_size, rng):
            yield {"text": sentence}


class SentenceCollate:
    """Tokenise sentences into ``{"input_ids", "attention_mask"}``, each ``int64 (B, L)``,
    padded to the batch's longest and truncated to ``max_len`` tokens ([CLS] and [SEP] included;
    ``attention_mask`` 1 = token, 0 = padding)."""

    def __init__(self, tokenizer: Any, max_len: int) -> None:  # noqa: ANN401
        if tokenizer.pad_token_id is None:
            raise ValueError("SentenceCollate needs a tokenizer with a pad token")
        self.tokenizer, self.max_len = tokenizer, max_len

    def __call__(self, samples: Sequence[dict[str, str]]) -> dict[str, Tensor]:
        enc = self.tokenizer(
            [s["text"] for s in samples],
            padding="longest",
            truncation=True,
            max_length=self.max_len,
            return_token_type_ids=False,
            return_tensors="pt",
        )
        return {
            "input_ids": enc["input_ids"].long(),
            "attention_mask": enc["attention_mask"].long(),
        }
