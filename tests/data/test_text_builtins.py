"""The text built-ins made from files gensim ships: ``wiki`` and the labelled ``polarity``."""

import collections
import importlib.util
import itertools

import pytest
import torch

from selfsup.data import build_source, list_datasets
from selfsup.data.builtin import load_polarity
from selfsup.data.wiki import WIKI_TEST_EVERY, strip_wiki_markup, wiki_articles
from selfsup.evaluate.features import TextCollate, extract

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("gensim") is None, reason="gensim ships these corpora"
)

MARKUP = ("{{", "}}", "[[", "]]", "{|", "|}", "<ref", "</", "'''", "&nbsp;", "&amp;", "__TOC__")


def test_both_are_listed_with_a_description():
    listed = list_datasets()
    assert "wiki" in listed and "Wikipedia" in listed["wiki"]
    assert "polarity" in listed and "neg/pos" in listed["polarity"]


def test_polarity_is_a_fixed_stratified_labelled_split():
    source = build_source("polarity", seed=3)
    assert source.kind == "text" and source.classes == ["neg", "pos"]
    assert len(source.train) == source.num_samples == 150 and len(source.test) == 50
    assert collections.Counter(source.train.labels) == {0: 75, 1: 75}
    assert collections.Counter(source.test.labels) == {0: 25, 1: 25}
    train = [s["text"] for s in source.train]
    test = [s["text"] for s in source.test]
    assert not set(train) & set(test) and len(set(train) | set(test)) == 200
    again = build_source("polarity", seed=0)  # the split ignores the run's seed
    assert [s["text"] for s in again.test] == test and again.test.labels == source.test.labels
    texts, labels = load_polarity()
    by_text = dict(zip(texts, labels, strict=True))
    assert by_text["simplistic , silly and tedious ."] == 0  # the file's first line
    assert all(by_text[s["text"]] == s["label"] for s in source.test)
    assert any("clich\u00e9s" in t for t in texts)  # cp1252 accents decode


def test_text_evaluation_batches_carry_the_labels(tiny_tokenizer):
    source = build_source("polarity")
    collate = TextCollate(tiny_tokenizer, 16)
    batch = collate([source.test[0], source.test[1]])
    assert batch["label"].dtype == torch.long and batch["input_ids"].shape[1] <= 16
    feats, labels, texts = extract(
        lambda b: b["attention_mask"].sum(1, keepdim=True), source.test, 16, None, collate
    )
    assert labels.tolist() == source.test.labels and feats.shape == (50, 1)
    assert texts == [s["text"] for s in source.test]


def test_strip_wiki_markup_keeps_only_running_text():
    source = """{{Infobox person|name={{nowrap|Ada}}|born=1815}}
'''Ada Lovelace''' was an [[England|English]] [[mathematician]].<ref name="a">{{cite book|\
title=X}}</ref> She wrote<ref name=b/> notes&nbsp;on the [[Analytical Engine]].
[[File:Ada.jpg|thumb|A portrait of [[Ada Lovelace|Ada]]]]
[[Image:C4.png|thumb|Bicyclo[1.1.0]butane [below] and [http://x.org a link]]]
<math>x^2</math>
<!-- a hidden comment -->
== Life ==
* Her father was [http://example.org Lord Byron].
{| class="wikitable"
| cell || other
|}
[[Category:Mathematicians]]
[[de:Ada Lovelace]]
== References ==
* Some book, 1999.
"""
    text = strip_wiki_markup(source)
    assert text.splitlines() == [
        "Ada Lovelace was an English mathematician. She wrote notes on the Analytical Engine.",
        "Her father was Lord Byron.",
    ]


@pytest.fixture(scope="module")
def wiki():
    return build_source("wiki", shuffle_buffer=0)


def test_wiki_split_is_by_article_disjoint_and_deterministic(wiki):
    train = [s["text"] for s in wiki.train]
    test = [s["text"] for s in wiki.test]
    assert wiki.kind == "text" and wiki.classes is None and wiki.num_samples == len(train)
    total = len(train) + len(test)
    assert total == 106 and len(test) == total // WIKI_TEST_EVERY == 10
    assert not set(train) & set(test)
    words = sum(len(t.split()) for t in train + test)
    assert 400_000 < words < 500_000  # 0.72 M words of XML source, 0.44 M of plain text
    # file order: test articles are numbers 9, 19, ...; the first train article is Anarchism
    assert train[0].startswith("Anarchism is a political philosophy")
    shuffled = build_source("wiki", seed=1)
    assert sorted(s["text"] for s in shuffled.train) == sorted(train)


def test_wiki_articles_stream_plain_text(wiki):
    first = list(itertools.islice(wiki_articles(), WIKI_TEST_EVERY))
    assert first[: WIKI_TEST_EVERY - 1] == [s["text"] for s in wiki.train][: WIKI_TEST_EVERY - 1]
    assert first[-1] == next(iter(wiki.test))["text"]
    for article in [s["text"] for s in wiki.train] + first:
        assert all(m not in article for m in MARKUP), [m for m in MARKUP if m in article]
        assert not any(line.startswith(("==", "*", "#", "|")) for line in article.splitlines())
        assert len(article.split()) >= 50


def test_wiki_topics_labels_sentences_of_the_held_out_articles_only(wiki):
    from selfsup.data.text import split_sentences
    from selfsup.data.wiki import wiki_pages
    from selfsup.data.wiki_topics import MIN_SENTENCES, MIN_WORDS

    topics = build_source("wiki-topics", seed=5)
    assert topics.kind == "text" and topics.name == "wiki-topics"
    assert "wiki-topics" in dict(list_datasets())
    train, test = list(topics.train), list(topics.test)
    assert topics.num_samples == len(train) and 1000 < len(train) + len(test) < 2000
    assert len(test) == pytest.approx((len(train) + len(test)) / 4, abs=1)
    held_out = [s["text"] for s in wiki.test]
    # every class is a held-out article with enough sentences; the others are left out
    titles = dict(wiki_pages())
    assert (
        len(topics.classes)
        == sum(len(split_sentences(t, MIN_WORDS)) >= MIN_SENTENCES for t in held_out)
        == 8
    )
    assert all(titles[c] in held_out for c in topics.classes)
    training_text = " ".join(s["text"] for s in wiki.train)
    for sample in train[:50] + test[:50]:
        assert len(sample["text"].split()) >= MIN_WORDS
        assert sample["text"] in " ".join(titles[topics.classes[sample["label"]]].split())
    assert not any(s["text"] in training_text for s in test[:20])
    # stratified and fixed: every class in both splits, the same split for any seed
    assert {s["label"] for s in test} == set(range(8)) == {s["label"] for s in train}
    again = build_source("wiki-topics", seed=0)
    assert [s["text"] for s in again.test] == [s["text"] for s in test]
