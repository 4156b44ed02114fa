"""word2vec's files on disk: the vectors in the C tool's text and binary formats (which
``gensim.models.KeyedVectors.load_word2vec_format`` reads) and its ``-save-vocab`` count list."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from selfsup.data.tokenizer import save_tokenizer


def ranked_vectors(
    tokenizer: Any,  # noqa: ANN401
    vocabulary: Tensor,
    counts: Tensor,
    weight: Tensor,
) -> tuple[list[str], Tensor, Tensor]:
    """The words where ``vocabulary (V,)`` is True, by descending count (ties: id), as the C tool
    sorts them.

    Returns:
        ``(words, vectors (K, D) float32 on the CPU, counts (K,))``.
    """
    ids = vocabulary.nonzero()[:, 0].cpu()
    counts = counts.cpu()[ids]
    order = torch.from_numpy(np.lexsort((ids.numpy(), -counts.numpy())))
    ids, counts = ids[order], counts[order]
    words = tokenizer.convert_ids_to_tokens(ids.tolist())
    return words, weight.detach().float().cpu()[ids], counts


def write_word2vec(path: Path, words: Sequence[str], vectors: Tensor, binary: bool) -> None:
    """Write ``vectors (K, D)`` in word2vec.c's format: a ``"K D"`` header line, then per word
    ``word v_1 ... v_D`` as text, or ``word`` + space + D little-endian float32 + newline."""
    array = vectors.float().numpy().astype("<f4")
    with open(path, "wb") as f:
        f.write(f"{array.shape[0]} {array.shape[1]}\n".encode())
        if binary:
            for word, row in zip(words, array, strict=True):
                f.write(word.encode("utf-8") + b" " + row.tobytes() + b"\n")
        else:
            fmt = " ".join(["%.9g"] * array.shape[1])
            for word, row in zip(words, array, strict=True):
                f.write(f"{word} {fmt % tuple(row)}\n".encode())


def write_vocabulary(path: Path, words: Sequence[str], counts: Sequence[int]) -> None:
    """Write ``"word count"`` lines, the C tool's ``-save-vocab`` format."""
    lines = "".join(f"{w} {c}\n" for w, c in zip(words, counts, strict=True))
    Path(path).write_text(lines, encoding="utf-8")


def write_export(
    path: Path,
    words: Sequence[str],
    vectors: Tensor,
    counts: Sequence[int],
    config: dict[str, Any],
    tokenizer: Any,  # noqa: ANN401
) -> None:
    """Write a word2vec export folder: ``vectors.txt`` and ``vectors.bin``, ``vocab.txt``,
    ``config.json`` and the tokenizer."""
    path.mkdir(parents=True, exist_ok=True)
    write_word2vec(path / "vectors.txt", words, vectors, binary=False)
    write_word2vec(path / "vectors.bin", words, vectors, binary=True)
    write_vocabulary(path / "vocab.txt", words, counts)
    (path / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    save_tokenizer(tokenizer, path / "tokenizer")
