"""``wiki-topics``: which article a sentence comes from, over the articles ``wiki`` holds out.

A labelled text set large enough to tell text encoders apart (``polarity`` has 50 test sentences,
so one standard deviation of its accuracy is about 7 points), built from the same file gensim
ships as ``wiki`` and disjoint from what ``wiki`` pretrains on:

- the articles of ``wiki``'s test split (every 10th) with at least :data:`MIN_SENTENCES`
  sentences (8 of the 10; a short stub and a bare list of names are left out);
- each article's sentences (:func:`selfsup.data.text.split_sentences`) of :data:`MIN_WORDS`
  words or more;
- class = the article's title; a fixed stratified split, 1/4 of the sentences of every article
  in the test split (``random_state=0``).

About 1,500 sentences in 8 unbalanced classes (the largest holds about a fifth); the majority
class is the chance level to beat. Pretraining on ``wiki`` and evaluating on ``wiki-topics`` is
a transfer to unseen articles of the same encyclopaedia.
"""

from __future__ import annotations

import functools

from selfsup.data.builtin import stratified_text_source
from selfsup.data.registry import register_dataset, reject_arg
from selfsup.data.source import DataSource
from selfsup.data.text import split_sentences
from selfsup.data.wiki import wiki_page_split

MIN_SENTENCES = 40
MIN_WORDS = 8
TEST_FRACTION = 0.25


@functools.lru_cache(maxsize=1)
def load_wiki_topics() -> tuple[list[str], list[str], list[int]]:
    """``(classes, sentences, labels)`` of ``wiki-topics`` (see the module docstring)."""
    classes: list[str] = []
    texts: list[str] = []
    labels: list[int] = []
    for title, article in wiki_page_split()[1]:  # the articles ``wiki`` holds out
        kept = split_sentences(article, MIN_WORDS)
        if len(kept) < MIN_SENTENCES:
            continue
        labels += [len(classes)] * len(kept)
        texts += kept
        classes.append(title)
    return classes, texts, labels


@register_dataset(
    "wiki-topics",
    description="sentences of the 8 articles wiki holds out, labelled by article (3:1 split)",
)
def build_wiki_topics(
    arg: str | None, *, image_size: int, seed: int, shuffle_buffer: int
) -> DataSource:
    """Build ``wiki-topics`` (see the module docstring)."""
    reject_arg("wiki-topics", arg)
    classes, texts, labels = load_wiki_topics()
    test = round(len(texts) * TEST_FRACTION)
    return stratified_text_source(
        "wiki-topics", texts, labels, list(classes), TEST_FRACTION,
        f"wiki's held-out articles cut into sentences, {len(classes)} classes, stratified "
        f"{len(texts) - test}/{test} split",
    )  # fmt: skip
