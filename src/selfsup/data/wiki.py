"""``wiki``: the shortened English Wikipedia dump gensim ships, as plain-text documents.

The file (``enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2``) is streamed
from the bz2 XML: main-namespace pages that are not redirects, wiki markup stripped to plain text
by :func:`strip_wiki_markup`, articles of fewer than 50 words skipped (gensim's
``ARTICLE_MIN_WORDS``); one document per article, paragraphs joined by newlines. Articles number
9, 19, 29, ... (every 10th, counting from 0) form the test split. Nothing is downloaded.
"""

from __future__ import annotations

import bz2
import functools
import html
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from typing import Any

from selfsup.data.builtin import gensim_data_file
from selfsup.data.registry import register_dataset, reject_arg
from selfsup.data.source import DataSource
from selfsup.data.streaming import PartitionedStream

__all__ = ["DocumentStream", "strip_wiki_markup", "wiki_articles", "wiki_page_split", "wiki_pages"]


class DocumentStream(PartitionedStream[str]):
    """Streams an in-memory list of documents as ``{"text": str}``, split by rank and worker.

    Args:
        documents: The documents, in order.
        shuffle: Shuffle the documents each epoch (train split).
        buffer_size: Shuffle buffer capacity (a buffer at least as large as the list shuffles it
            completely).
        seed: Base seed of the shuffling.
    """

    def __init__(
        self,
        documents: Sequence[str],
        *,
        shuffle: bool = False,
        buffer_size: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__(["documents"], shuffle=shuffle, buffer_size=buffer_size, seed=seed)
        self.documents = documents

    def read_part(self, part: str) -> Iterator[str]:
        """Yield every document (the one part is the whole list)."""
        yield from self.documents

    def decode(self, raw: str) -> dict[str, Any]:
        """Wrap a document as a sample."""
        return {"text": raw}


WIKI_FILE = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
WIKI_MIN_WORDS = 50  # gensim's ARTICLE_MIN_WORDS
WIKI_TEST_EVERY = 10

_COMMENT = re.compile(r"<!--.*?(-->|$)", re.S)
_REF = re.compile(r"<ref\b[^>]*/>|<ref\b[^>]*>.*?(</ref\s*>|$)", re.S | re.I)
# Elements whose content is not running text.
_NON_TEXT = re.compile(
    r"<(math|chem|gallery|timeline|imagemap|score|source|syntaxhighlight|pre|nowiki)\b[^>]*>"
    r".*?(</\1\s*>|$)",
    re.S | re.I,
)
_TEMPLATE = re.compile(r"\{\{[^{}]*\}\}")  # innermost {{...}}: removed repeatedly, so nesting works
_TABLE = re.compile(r"\{\|(?:(?!\{\|).)*?\|\}", re.S)  # innermost {| ... |}
# innermost [[target|label]]: no [[ or ]] inside, single brackets allowed ("Bicyclo[1.1.0]")
_LINK = re.compile(r"\[\[((?:[^\[\]]|\[(?!\[)|\](?!\]))*)\]\]")
_FILE_LINK = re.compile(r"^:?\s*(file|image|media|category)\s*:", re.I)
_INTERWIKI = re.compile(r"^:?[a-z][a-z-]*:")  # [[de:Foo]], [[wikt:foo]]: other wikis
_EXTERNAL = re.compile(r"\[(?:[a-z]+:)?//[^\s\]]*\s*([^\]]*)\]", re.I)
_TAG = re.compile(r"</?[a-z][^>]*>", re.I)
_EMPHASIS = re.compile(r"'{2,}")
_MAGIC = re.compile(r"__[A-Z]+__")
_LEFTOVER = re.compile(r"\{\{|\}\}|\[\[|\]\]|\{\||\|\}")  # unbalanced markup of a cut article
_HEADING = re.compile(r"^(=+)\s*(.*?)\s*\1$")
# Sections after which an article holds lists of links and citations, not prose.
_TAIL_SECTIONS = {
    "see also",
    "references",
    "notes",
    "footnotes",
    "citations",
    "notes and references",
    "sources",
    "bibliography",
    "further reading",
    "external links",
}


def _repeat(pattern: re.Pattern[str], text: str, repl: Any) -> str:  # noqa: ANN401
    """Apply ``pattern.sub`` until nothing matches (innermost-first removal of nested markup)."""
    while True:
        text, count = pattern.subn(repl, text)
        if count == 0:
            return text


def _link_text(match: re.Match[str]) -> str:
    """``[[target|label]]`` -> label, ``[[target]]`` -> target; files, categories and unlabelled
    links to other wikis -> nothing."""
    inner = match.group(1)
    target, bar, _ = inner.partition("|")
    if _FILE_LINK.match(target):
        return ""
    if bar:
        return inner.rsplit("|", 1)[-1] or target
    return "" if _INTERWIKI.match(target) else target


def strip_wiki_markup(wikitext: str) -> str:
    """Plain running text of a MediaWiki article.

    Removes comments, references, templates (nested ones too), tables, math and other non-text
    elements, file/image/category and interlanguage links, HTML tags, bold/italic quotes and
    headings; internal links keep their label, external links their description. Everything
    from a trailing "See also" / "References" / "External links" (and similar) section on is
    dropped. List markers are stripped and whitespace collapsed; paragraphs (non-empty lines)
    are joined with ``"\\n"``.

    Args:
        wikitext: The article's wiki source (XML entities already decoded by the parser).

    Returns:
        The text, possibly empty.
    """
    text = _COMMENT.sub("", wikitext)
    text = _REF.sub("", text)
    text = _NON_TEXT.sub("", text)
    text = _repeat(_TEMPLATE, text, "")
    text = _repeat(_TABLE, text, "")
    text = _EXTERNAL.sub(r"\1", text)  # before links: a file caption may hold one
    text = _repeat(_LINK, text, _link_text)
    text = _TAG.sub("", text)
    text = _EMPHASIS.sub("", text)
    text = _MAGIC.sub("", text)
    text = _LEFTOVER.sub("", text)
    text = html.unescape(text)  # &nbsp; &ndash; ... after tags are gone, so &lt; cannot make one
    lines = []
    for raw in text.split("\n"):
        line = raw.strip()
        heading = _HEADING.match(line)
        if heading:
            if heading.group(2).lower() in _TAIL_SECTIONS:
                break
            continue
        if line.startswith(("|", "!")):  # a table row left by a cut-off table
            continue
        line = " ".join(line.lstrip("*#:;").split())
        if any(c.isalpha() for c in line):
            lines.append(line)
    return "\n".join(lines)


def _local(tag: str) -> str:
    """``{namespace}page`` -> ``page``."""
    return tag.rsplit("}", 1)[-1]


def wiki_articles(min_words: int = WIKI_MIN_WORDS) -> Iterator[str]:
    """Stream the plain-text articles of gensim's English Wikipedia sample, in file order.

    Main-namespace pages only; redirects and articles of fewer than ``min_words`` words (after
    :func:`strip_wiki_markup`) are skipped. Nothing is cached or written to disk.

    Args:
        min_words: Shortest article kept, in whitespace-separated words.

    Yields:
        One plain-text document per article.

    Raises:
        DataError: gensim or its bundled file is missing.
    """
    for _, text in wiki_pages(min_words):
        yield text


def wiki_pages(min_words: int = WIKI_MIN_WORDS) -> Iterator[tuple[str, str]]:
    """``(title, plain text)`` of the articles :func:`wiki_articles` streams, in the same order."""
    path = gensim_data_file(WIKI_FILE)
    with bz2.open(path, "rb") as f:
        for _, elem in ET.iterparse(f, events=("end",)):
            if _local(elem.tag) != "page":
                continue
            fields = {_local(child.tag): child for child in elem.iter()}
            namespace = fields["ns"].text if "ns" in fields else "0"
            source = fields["text"].text if "text" in fields else None
            title = fields["title"].text if "title" in fields else None
            redirect = "redirect" in fields or (source or "").lstrip()[:9].upper() == "#REDIRECT"
            elem.clear()  # keep memory flat while streaming
            if namespace != "0" or redirect or not source:
                continue
            text = strip_wiki_markup(source)
            if len(text.split()) >= min_words:
                yield title or "", text


@functools.lru_cache(maxsize=1)
def wiki_page_split() -> tuple[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]]:
    """(train, test) ``(title, text)`` pages of ``wiki``: every ``WIKI_TEST_EVERY``-th article
    (9, 19, ...) is test. Parsed once per process (``wiki`` and ``wiki-topics`` share it)."""
    train, test = [], []
    for index, page in enumerate(wiki_pages()):
        (test if index % WIKI_TEST_EVERY == WIKI_TEST_EVERY - 1 else train).append(page)
    return tuple(train), tuple(test)


def _wiki_split() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(train, test) article texts of :func:`wiki_page_split`."""
    train, test = wiki_page_split()
    return tuple(text for _, text in train), tuple(text for _, text in test)


@register_dataset(
    "wiki",
    description="English Wikipedia sample bundled with gensim: 106 articles of plain text "
    "(~0.44M words), every 10th held out",
)
def build_wiki(arg: str | None, *, image_size: int, seed: int, shuffle_buffer: int) -> DataSource:
    """Build ``wiki`` (see the module docstring)."""
    reject_arg("wiki", arg)
    train, test = _wiki_split()
    return DataSource(
        name="wiki",
        kind="text",
        train=DocumentStream(
            train, shuffle=shuffle_buffer > 0, buffer_size=shuffle_buffer, seed=seed
        ),
        test=DocumentStream(test),
        classes=None,
        num_samples=len(train),
        description=f"gensim's English Wikipedia sample: {len(train)} train, {len(test)} test "
        "articles",
    )
