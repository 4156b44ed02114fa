"""Word-vector protocols: word similarity and word analogies (word2vec runs).

* ``wordsim``: Spearman correlation between the cosine similarity of two words' vectors and
  human similarity judgements, on WordSim-353 (Finkelstein et al. 2002; relatedness) and
  SimLex-999 (Hill, Reichart, Korhonen 2015; similarity proper), as the files gensim ships give
  them. Pairs with a word outside the vocabulary are skipped; ``coverage`` is the percentage of
  pairs scored.
* ``analogy``: the word2vec analogy questions (Mikolov et al. 2013, ``questions-words.txt``):
  "a is to b as c is to ?" answered by 3CosAdd, the word whose unit vector is most cosine-similar
  to ``b/|b| + c/|c| - a/|a|`` excluding a, b and c. Accuracy over the questions whose four
  words are in the vocabulary (``coverage`` = their percentage), for the semantic sections, the
  syntactic ("gram*") sections and all.

Both follow gensim's ``KeyedVectors.evaluate_word_pairs`` / ``evaluate_word_analogies`` (and the
C tool's compute-accuracy): only the ``restrict_vocab`` most frequent words count as known
(default 300,000) and words match case-insensitively, the most frequent case variant standing for
a word. The tests check the figures against gensim's on the same vectors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from selfsup.config import ConfigError
from selfsup.evaluate.protocols import EvalOptions, register_protocol

SIMILARITY_FILES = {"wordsim353": "wordsim353.tsv", "simlex999": "simlex999.txt"}
ANALOGY_FILE = "questions-words.txt"
RESTRICT_VOCAB = 300_000


@dataclass(frozen=True)
class Analogy:
    """One question "a : b :: c : d" of section ``section``."""

    section: str
    a: str
    b: str
    c: str
    d: str


def read_word_pairs(path: str | Path) -> list[tuple[str, str, float]]:
    """``(word1, word2, human score)`` of a tab-separated file; ``#`` lines are comments.

    Lines that are not three tab-separated fields ending in a number are skipped, as gensim does.
    """
    pairs = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip() or line.startswith("#"):
                continue
            fields = line.rstrip("\n").split("\t")
            if len(fields) != 3:
                continue
            try:
                pairs.append((fields[0].strip(), fields[1].strip(), float(fields[2])))
            except ValueError:
                continue
    if not pairs:
        raise ConfigError(f"{path}: no word pairs found (expected 'word<TAB>word<TAB>score' lines)")
    return pairs


def read_analogies(path: str | Path) -> list[Analogy]:
    """The questions of a word2vec analogy file: ``: section`` headers, then 4 words per line.

    Lines without exactly four words are skipped, as gensim does.
    """
    questions, section = [], None
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if line.startswith(": "):
                section = line[2:].strip()
                continue
            words = line.split()
            if len(words) != 4:
                continue
            if section is None:
                raise ConfigError(f"{path}:{number}: a question before the first ': section' line")
            questions.append(Analogy(section, *words))
    if not questions:
        raise ConfigError(f"{path}: no analogy questions found")
    return questions


def _lookup(words: Sequence[str], restrict_vocab: int, case_insensitive: bool) -> dict[str, int]:
    """Word (upper-cased when case-insensitive) -> row, over the first ``restrict_vocab`` words;
    the first (most frequent) case variant wins."""
    table: dict[str, int] = {}
    for i, word in enumerate(words[:restrict_vocab]):
        table.setdefault(word.upper() if case_insensitive else word, i)
    return table


def _unit(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1)


def word_similarity(
    words: Sequence[str],
    vectors: np.ndarray,
    pairs: Sequence[tuple[str, str, float]],
    restrict_vocab: int = RESTRICT_VOCAB,
    case_insensitive: bool = True,
) -> dict[str, float]:
    """Spearman (and Pearson) correlation of cosine similarities with human scores.

    Args:
        words: the vocabulary, most frequent first.
        vectors: ``(K, D)`` their vectors.
        pairs: ``(word1, word2, score)`` judgements.
        restrict_vocab: only the first N words are known.
        case_insensitive: match words whatever their case.

    Returns:
        ``spearman`` and ``pearson`` (NaN when fewer than 2 pairs are covered), ``pairs`` scored
        and ``coverage`` (percentage of ``pairs`` scored).
    """
    table = _lookup(words, restrict_vocab, case_insensitive)
    key = str.upper if case_insensitive else str
    # float64: float32 cosines of different pairs can round to the same value (a false tie)
    unit = _unit(np.asarray(vectors, dtype=np.float64))
    model, human = [], []
    for a, b, score in pairs:
        i, j = table.get(key(a)), table.get(key(b))
        if i is not None and j is not None:
            model.append(float(unit[i] @ unit[j]))
            human.append(score)
    nan = float("nan")
    enough = len(model) >= 2
    return {
        "spearman": float(stats.spearmanr(human, model)[0]) if enough else nan,
        "pearson": float(stats.pearsonr(human, model)[0]) if enough else nan,
        "pairs": len(model),
        "coverage": 100.0 * len(model) / max(len(pairs), 1),
    }


def analogy_accuracy(
    words: Sequence[str],
    vectors: np.ndarray,
    questions: Sequence[Analogy],
    restrict_vocab: int = RESTRICT_VOCAB,
    case_insensitive: bool = True,
    chunk: int = 512,
) -> dict[str, float]:
    """3CosAdd accuracy on analogy questions, per group (semantic, syntactic) and overall.

    Args:
        words: the vocabulary, most frequent first.
        vectors: ``(K, D)`` their vectors.
        questions: the analogy questions; sections named ``gram*`` are syntactic.
        restrict_vocab: only the first N words are known and answer.
        case_insensitive: match words whatever their case.
        chunk: questions scored per matrix product (fewer for a large vocabulary).

    Returns:
        ``{group}_accuracy`` (percentage of covered questions answered right; NaN if none),
        ``{group}_questions`` (covered) and ``{group}_coverage`` (percentage covered) for
        group in ``semantic``, ``syntactic``, ``total``.
    """
    table = _lookup(words, restrict_vocab, case_insensitive)
    key = str.upper if case_insensitive else str
    known = np.asarray(vectors, dtype=np.float32)[: len(words[:restrict_vocab])]
    unit = _unit(known)
    norms = np.linalg.norm(known, axis=1)
    norms = np.where(norms > 0, norms, 1).astype(np.float32)
    # rows that are case variants of one another answer as one word
    canonical = np.array([table[key(w)] for w in words[:restrict_vocab]], dtype=np.int64)
    rows, groups = [], []
    for q in questions:
        index = [table.get(key(w)) for w in (q.a, q.b, q.c, q.d)]
        groups.append("syntactic" if q.section.startswith("gram") else "semantic")
        rows.append(index if None not in index else None)
    covered = [i for i, r in enumerate(rows) if r is not None]
    right = np.zeros(len(questions), dtype=bool)
    variants = np.nonzero(canonical != np.arange(len(canonical)))[0]  # rows that are not first
    chunk = max(1, min(chunk, 2**24 // max(len(known), 1)))  # (chunk, K) scores: at most 64 MB
    for start in range(0, len(covered), chunk):
        part = np.array([rows[i] for i in covered[start : start + chunk]], dtype=np.int64)  # (Q, 4)
        a, b, c, d = part.T
        query = _unit((unit[b] + unit[c] - unit[a]) / 3)  # (Q, D)
        scores = (query @ known.T) / norms  # (Q, K) cosine similarity
        every = np.arange(len(part))
        for column in (a, b, c):  # the question's words and their case variants never answer
            scores[every, column] = -np.inf
            q, v = np.nonzero(canonical[variants][None, :] == column[:, None])  # (Q, variants)
            scores[q, variants[v]] = -np.inf
        right[covered[start : start + chunk]] = canonical[scores.argmax(axis=1)] == d
    result: dict[str, float] = {}
    for group in ("semantic", "syntactic", "total"):
        members = [i for i in range(len(questions)) if group == "total" or groups[i] == group]
        scored = [i for i in members if rows[i] is not None]
        result[f"{group}_accuracy"] = (
            100.0 * float(right[scored].mean()) if scored else float("nan")
        )
        result[f"{group}_questions"] = len(scored)
        result[f"{group}_coverage"] = 100.0 * len(scored) / max(len(members), 1)
    return result


def _options(options: EvalOptions, protocol: str) -> dict[str, Any]:
    valid = {"restrict_vocab": int, "case_insensitive": lambda v: v.lower() in ("1", "true")}
    unknown = set(options.extra) - set(valid)
    if unknown:
        raise ConfigError(
            f"protocol {protocol}: unknown --arg {', '.join(sorted(unknown))}. "
            f"Valid: {', '.join(valid)}"
        )
    parsed: dict[str, Any] = {"restrict_vocab": RESTRICT_VOCAB, "case_insensitive": True}
    for name, value in options.extra.items():
        try:
            parsed[name] = valid[name](value)
        except ValueError:
            raise ConfigError(f"protocol {protocol}: --arg {name}={value!r} is invalid") from None
    return parsed


def _run_vectors(run: Any, protocol: str) -> tuple[list[str], np.ndarray]:  # noqa: ANN401
    if not hasattr(run.method, "word_vectors"):
        raise ConfigError(f"protocol {protocol} needs word vectors (a word2vec run)")
    words, vectors, _ = run.method.word_vectors()
    if not words:
        raise ConfigError(f"{run.path}: the run has no trained vocabulary")
    return words, vectors.numpy()


@register_protocol("wordsim", "word2vec: Spearman correlation on WordSim-353 and SimLex-999")
def wordsim(run: Any, source: Any, options: EvalOptions) -> dict[str, Any]:  # noqa: ANN401
    """WordSim-353 and SimLex-999 Spearman correlation and coverage of a word2vec run."""
    from selfsup.data.builtin import gensim_data_file

    settings = _options(options, "wordsim")
    words, vectors = _run_vectors(run, "wordsim")
    figures: dict[str, Any] = {"vocabulary": len(words), **settings}
    for name, file in SIMILARITY_FILES.items():
        pairs = read_word_pairs(gensim_data_file(file))
        for figure, value in word_similarity(words, vectors, pairs, **settings).items():
            figures[f"{name}_{figure}"] = value
    return figures


@register_protocol("analogy", "word2vec: 3CosAdd accuracy on the word2vec analogy questions")
def analogy(run: Any, source: Any, options: EvalOptions) -> dict[str, Any]:  # noqa: ANN401
    """Analogy accuracy and coverage (semantic, syntactic, total) of a word2vec run."""
    from selfsup.data.builtin import gensim_data_file

    settings = _options(options, "analogy")
    words, vectors = _run_vectors(run, "analogy")
    questions = read_analogies(gensim_data_file(ANALOGY_FILE))
    return {
        "vocabulary": len(words),
        **settings,
        **analogy_accuracy(words, vectors, questions, **settings),
    }
