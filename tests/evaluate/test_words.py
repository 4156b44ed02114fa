"""Word similarity and analogy figures agree with gensim's on the same vectors."""

import math

import numpy as np
import pytest

from selfsup.config import ConfigError
from selfsup.data.builtin import gensim_data_file
from selfsup.evaluate.protocols.words import (
    analogy_accuracy,
    read_analogies,
    read_word_pairs,
    word_similarity,
)


@pytest.fixture(scope="module")
def questions_file(tmp_path_factory):
    """Every 8th question of each section of gensim's questions-words.txt (about 2,400)."""
    lines, kept = open(gensim_data_file("questions-words.txt"), encoding="utf-8").readlines(), []
    index = 0
    for line in lines:
        if line.startswith(": "):
            kept.append(line)
            index = 0
            continue
        if index % 8 == 0:
            kept.append(line)
        index += 1
    path = tmp_path_factory.mktemp("analogy") / "questions.txt"
    path.write_text("".join(kept), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def vectors(questions_file):
    """Random vectors over the words of the three files: lower-case words, with a few words
    also in a second case (earlier and later in the vocabulary), and a few words left out."""
    from gensim.models import KeyedVectors

    words = set()
    for name in ("wordsim353.tsv", "simlex999.txt"):
        for a, b, _ in read_word_pairs(gensim_data_file(name)):
            words |= {a.lower(), b.lower()}
    for q in read_analogies(questions_file):
        words |= {q.a.lower(), q.b.lower(), q.c.lower(), q.d.lower()}
    words = sorted(words)
    rng = np.random.default_rng(0)
    rng.shuffle(words)
    words = words[: int(0.9 * len(words))]  # coverage below 100 %
    variants = [w.capitalize() for w in words[::15]]
    words = variants[: len(variants) // 2] + words + variants[len(variants) // 2 :]
    kv = KeyedVectors(vector_size=24)
    kv.add_vectors(words, rng.standard_normal((len(words), 24)).astype(np.float32))
    return kv


@pytest.mark.parametrize("name", ["wordsim353.tsv", "simlex999.txt"])
@pytest.mark.parametrize("restrict", [300_000, 700])
def test_word_similarity_matches_gensim(vectors, name, restrict):
    path = gensim_data_file(name)
    pearson, spearman, oov = vectors.evaluate_word_pairs(path, restrict_vocab=restrict)
    ours = word_similarity(vectors.index_to_key, vectors.vectors, read_word_pairs(path), restrict)
    # gensim's cosines are float32, ours float64: two pairs whose similarities differ by less than
    # float32's resolution may tie on one side only, moving rho by about 1e-5
    assert ours["spearman"] == pytest.approx(spearman.statistic, abs=1e-4)
    assert ours["pearson"] == pytest.approx(pearson.statistic, abs=1e-6)
    assert ours["coverage"] == pytest.approx(100 - oov)
    assert 0 < ours["coverage"] < 100


@pytest.mark.parametrize("restrict", [300_000, 1500])
def test_analogy_accuracy_matches_gensim(vectors, questions_file, restrict):
    score, sections = vectors.evaluate_word_analogies(str(questions_file), restrict_vocab=restrict)
    ours = analogy_accuracy(
        vectors.index_to_key, vectors.vectors, read_analogies(questions_file), restrict
    )
    total = sections[-1]
    n = len(total["correct"]) + len(total["incorrect"])
    assert ours["total_questions"] == n
    assert ours["total_accuracy"] == pytest.approx(100 * score)
    semantic = [s for s in sections[:-1] if not s["section"].startswith("gram")]
    right = sum(len(s["correct"]) for s in semantic)
    asked = sum(len(s["correct"]) + len(s["incorrect"]) for s in semantic)
    assert ours["semantic_questions"] == asked
    assert ours["semantic_accuracy"] == pytest.approx(100 * right / asked)
    all_questions = len(read_analogies(questions_file))
    assert ours["total_coverage"] == pytest.approx(100 * n / all_questions)
    assert 0 < ours["syntactic_coverage"] < 100


def test_analogy_solves_a_planted_offset(tmp_path):
    # queen = king - man + woman on unit vectors; "Queen", a rarer case variant of it, points the
    # same way and counts as the same answer; the question's own words never answer.
    rng = np.random.default_rng(0)
    words = ["man", "woman", "king", "queen", "apple", "Queen", "pear"]
    vectors = rng.standard_normal((len(words), 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    vectors[3] = vectors[2] - vectors[0] + vectors[1]
    vectors[5] = 2 * vectors[3]
    path = tmp_path / "q.txt"
    path.write_text(": family\nman woman king queen\nMAN KING woman Queen\nman man king king\n")
    result = analogy_accuracy(words, vectors, read_analogies(path))
    assert result["semantic_accuracy"] == pytest.approx(200 / 3)  # the third asks for a, excluded
    assert result["semantic_questions"] == 3 and result["total_coverage"] == 100.0
    assert math.isnan(result["syntactic_accuracy"]) and result["syntactic_questions"] == 0


def test_bad_files_are_named_in_the_error(tmp_path):
    empty = tmp_path / "pairs.tsv"
    empty.write_text("# only a comment\nnot a pair\n")
    with pytest.raises(ConfigError, match="pairs.tsv"):
        read_word_pairs(empty)
    orphan = tmp_path / "q.txt"
    orphan.write_text("a b c d\n")
    with pytest.raises(ConfigError, match="q.txt:1"):
        read_analogies(orphan)
