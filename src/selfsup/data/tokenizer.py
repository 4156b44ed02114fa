"""Train a subword (or word) tokenizer on the user's corpus and wrap it for ``transformers``.

Four kinds, each trained with the Rust ``tokenizers`` library (a few MB of text take seconds):

* ``"wordpiece"``: BERT (Devlin et al. 2019). BERT normaliser (clean-up, CJK spacing, optional
  lower-casing and accent stripping), BERT pre-tokeniser, ``##`` continuation prefix, special tokens
  ``[PAD] [UNK] [CLS] [SEP] [MASK]`` (ids 0-4) and the templates ``[CLS] A [SEP]`` and
  ``[CLS] A [SEP] B [SEP]`` (token type 1 for ``B``).
* ``"bpe"``: byte-level BPE as in GPT-2 / RoBERTa (Liu et al. 2019): no unknown tokens, special
  tokens ``<s> <pad> </s> <unk> <mask>`` (ids 0-4, RoBERTa's order) and the templates
  ``<s> A </s>`` and ``<s> A </s> </s> B </s>``.
* ``"unigram"``: the unigram language model of SentencePiece (Kudo 2018) with a ``▁`` word-boundary
  marker, NFKC normalisation and BERT's special tokens and templates.
* ``"wordlevel"``: whole words, for word2vec (Mikolov et al. 2013). Text is lower-cased and cut
  into maximal runs of letters, as gensim's ``simple_preprocess`` / ``utils.tokenize`` do: digits,
  punctuation and white space separate words and are dropped. The ``vocab_size - 5`` most frequent
  words are kept (ties broken by the word), every other word is ``[UNK]``; BERT's special tokens
  (same ids 0-4) and templates.

The result is a ``transformers.PreTrainedTokenizerFast`` whose pad/unk/cls/sep/mask tokens are set,
so ``save_pretrained(dir)`` followed by ``transformers.AutoTokenizer.from_pretrained(dir)`` gives
the same tokenizer back, with no selfsup needed.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Iterator
from pathlib import Path

from tokenizers import (
    AddedToken,
    Regex,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    trainers,
)
from tokenizers.processors import TemplateProcessing
from transformers import AutoTokenizer, PreTrainedTokenizerFast

KINDS = ("wordpiece", "bpe", "unigram")  # subword kinds
WORD_KINDS = ("wordlevel",)  # whole-word vocabularies (word2vec)

# Role -> token. The order of each dict is the order of the ids (0, 1, ...).
_BERT_SPECIALS = {
    "pad_token": "[PAD]",
    "unk_token": "[UNK]",
    "cls_token": "[CLS]",
    "sep_token": "[SEP]",
    "mask_token": "[MASK]",
}
_ROBERTA_SPECIALS = {
    "bos_token": "<s>",
    "pad_token": "<pad>",
    "eos_token": "</s>",
    "unk_token": "<unk>",
    "mask_token": "<mask>",
}


def _batches(texts: Iterable[str], size: int = 1000) -> Iterator[list[str]]:
    """Lists of ``size`` texts: the trainer's Python <-> Rust crossing is cheaper in batches."""
    batch: list[str] = []
    for text in texts:
        batch.append(text)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _pipeline(
    kind: str, vocab_size: int, lowercase: bool
) -> tuple[Tokenizer, trainers.Trainer, dict[str, str]]:
    """An untrained tokenizer, its trainer and its special tokens (role -> token)."""
    if kind == "wordpiece":
        specials = _BERT_SPECIALS
        tok = Tokenizer(models.WordPiece(unk_token=specials["unk_token"]))
        tok.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece(prefix="##")
        # WordPiece's vocabulary is BPE's with "##" continuations, trained on marked words (see
        # _train_wordpiece): no alphabet, so that every character is in the vocabulary
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            show_progress=False,  # library code never prints
            special_tokens=list(specials.values()),
        )
    elif kind == "bpe":
        specials = _ROBERTA_SPECIALS
        tok = Tokenizer(models.BPE())
        if lowercase:
            tok.normalizer = normalizers.Lowercase()
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            show_progress=False,  # library code never prints
            special_tokens=list(specials.values()),
            # every byte is in the vocabulary, so no text is ever unknown
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        )
    elif kind == "unigram":
        specials = _BERT_SPECIALS
        tok = Tokenizer(models.Unigram())
        norms = [normalizers.NFKC()] + ([normalizers.Lowercase()] if lowercase else [])
        tok.normalizer = normalizers.Sequence(norms)
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
        trainer = trainers.UnigramTrainer(
            vocab_size=vocab_size,
            show_progress=False,  # library code never prints
            special_tokens=list(specials.values()),
            unk_token=specials["unk_token"],
        )
    elif kind == "wordlevel":
        specials = _BERT_SPECIALS
        tok = Tokenizer(models.WordLevel(unk_token=specials["unk_token"]))
        if lowercase:
            tok.normalizer = normalizers.Lowercase()
        # a word is a maximal run of letters (gensim's PAT_ALPHABETIC, "(?![\d])\w"): split on
        # runs of anything else (white space, punctuation, digits) and drop those runs
        tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\W\d]+"), behavior="removed")
        trainer = trainers.WordLevelTrainer(
            vocab_size=vocab_size,
            min_frequency=1,  # word2vec applies its own min_count to the counts it takes
            show_progress=False,  # library code never prints
            special_tokens=list(specials.values()),
        )
    else:
        valid = ", ".join((*KINDS, *WORD_KINDS))
        raise ValueError(f"unknown tokenizer kind {kind!r}; valid: {valid}")
    return tok, trainer, specials


# A word's continuing characters, shifted into the supplementary private use planes (15 and 16)
# while the WordPiece vocabulary is trained: "word" becomes "w" + the marks of "o", "r", "d".
_MARK = 0xF0000
_MARKABLE = 0x1FFFE  # planes 0 and 1 (the last two code points of plane 16 are non-characters)


class _Marks(dict):
    """``str.translate``'s table: the Basic Multilingual Plane's marks looked up, plane 1's
    computed."""

    def __missing__(self, code: int) -> int:
        return _MARK + code


@functools.cache
def _marks() -> _Marks:
    return _Marks((code, _MARK + code) for code in range(0x10000))


def _marked(word: str) -> str | None:
    """``word`` with its continuing characters marked; None for a word holding a character
    that cannot be marked (beyond plane 1) past its first, or a mark already (planes 15-16)."""
    if not word.isascii() and (
        max(word) >= chr(_MARK) or (len(word) > 1 and max(word[1:]) >= chr(_MARKABLE))
    ):
        return None
    return word[0] + word[1:].translate(_marks())


def _unmarked(token: str) -> str:
    """A trained token's WordPiece form: marked characters back, "##" before a continuation."""
    plain = "".join(chr(ord(c) - _MARK) if ord(c) >= _MARK else c for c in token)
    return "##" + plain if ord(token[0]) >= _MARK else plain


def _train_wordpiece(
    tok: Tokenizer, trainer: trainers.Trainer, texts: Iterable[str], unk: str, vocab_size: int
) -> Tokenizer:
    """Train BERT's WordPiece vocabulary deterministically.

    The ``tokenizers`` WordPiece trainer is a BPE trainer that writes a ``##`` prefix before a
    word's continuing characters. It numbers those ``##`` characters in hash-map order, and a
    merge between pairs of equal count goes to the pair of lower ids: the same corpus gave a
    different vocabulary on each training (70 of 8,000 tokens on ``lee``). Here the normaliser
    and pre-tokeniser run first, each word's continuing characters are shifted into the
    private use planes (:func:`_marked`), and a plain BPE trainer learns the merges: its
    alphabet is sorted, so every choice is the same each time. The tokens are then unshifted,
    with ``##`` before continuations. The algorithm is the same as the ``##`` trainer's; only
    ties are broken in a fixed order. Each character seen only inside words also gets its
    plain token (as the ``##`` trainer's alphabet does), in place of the last merges learnt.
    Words holding a character beyond plane 1 past their first, or a plane 15-16 private use
    character, are left out of the training (their characters stay unknown).
    """
    normalizer, pre_tokenizer = tok.normalizer, tok.pre_tokenizer

    def marked_texts() -> Iterator[str]:
        for text in texts:
            words = pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text))
            marked = (_marked(word) for word, _ in words)
            yield " ".join(m for m in marked if m is not None)

    learner = Tokenizer(models.BPE())
    learner.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    learner.train_from_iterator(_batches(marked_texts()), trainer=trainer)
    learnt = learner.get_vocab()  # specials, the sorted alphabet, then the merges in order
    tokens = [_unmarked(t) for t in sorted(learnt, key=learnt.get)]
    alphabet = {t for t in tokens if len(t) == 1 or (t.startswith("##") and len(t) == 3)}
    missing = sorted({t[2:] for t in alphabet if t.startswith("##")} - set(tokens))
    merges = len(tokens) - len(alphabet) - len(trainer.special_tokens)
    over = len(tokens) + len(missing) - vocab_size  # the plain tokens replace the last merges
    tokens = tokens[: len(tokens) - min(max(over, 0), merges)] + missing
    vocab = {token: i for i, token in enumerate(tokens)}
    trained = Tokenizer(models.WordPiece(vocab, unk_token=unk, continuing_subword_prefix="##"))
    trained.normalizer, trained.pre_tokenizer, trained.decoder = (
        normalizer, pre_tokenizer, tok.decoder)  # fmt: skip
    return trained


def _canonical_ids(tok: Tokenizer, kind: str, n_special: int) -> Tokenizer:
    """Renumber the trained vocabulary in a fixed order, so the same corpus gives the same ids.

    Ids do not affect how WordPiece or Unigram split text, so their regular tokens are
    renumbered: sorted by string (WordPiece, whose trainer numbers its alphabet in the order the
    words come) or by descending score, then string (Unigram, whose trainer numbers pieces of
    equal score in hash-map order). The special tokens keep ids ``0 .. n_special - 1``.
    Byte-level BPE's trainer is already deterministic.
    Unigram is only nearly deterministic: the scores of the few characters the trainer adds back
    at the end (rare characters pruned from the pieces) are still handed out in hash-map order.
    """
    if kind not in ("wordpiece", "unigram"):
        return tok
    state = json.loads(tok.to_str())
    model = state["model"]
    if kind == "wordpiece":
        tokens = sorted(model["vocab"], key=model["vocab"].get)
        tokens = tokens[:n_special] + sorted(tokens[n_special:])
        model["vocab"] = {token: i for i, token in enumerate(tokens)}
    else:  # a list of [piece, log-probability]; unk_id points into the unchanged special head
        # multi-threaded EM leaves the last bits of a score to summation order: round them off
        pieces = [[piece, round(score, 9)] for piece, score in model["vocab"]]
        model["vocab"] = pieces[:n_special] + sorted(
            pieces[n_special:], key=lambda p: (-p[1], p[0])
        )
    return Tokenizer.from_str(json.dumps(state))


def _post_processor(kind: str, tok: Tokenizer, specials: dict[str, str]) -> TemplateProcessing:
    if kind == "bpe":
        cls, sep = specials["bos_token"], specials["eos_token"]
        pair = f"{cls} $A:0 {sep} {sep} $B:0 {sep}"  # RoBERTa: no token types
    else:
        cls, sep = specials["cls_token"], specials["sep_token"]
        pair = f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1"
    return TemplateProcessing(
        single=f"{cls} $A {sep}",
        pair=pair,
        special_tokens=[(cls, tok.token_to_id(cls)), (sep, tok.token_to_id(sep))],
    )


def train_tokenizer(
    texts: Iterable[str],
    kind: str = "wordpiece",
    vocab_size: int = 8000,
    lowercase: bool = True,
    extra_special_tokens: Iterable[str] = (),
) -> PreTrainedTokenizerFast:
    """Train a subword tokenizer on ``texts``.

    Args:
        texts: the training corpus, one document (or line) per item; read once, as a stream.
        kind: ``"wordpiece"`` (BERT), ``"bpe"`` (byte-level, GPT-2 / RoBERTa), ``"unigram"`` or
            ``"wordlevel"`` (whole words, word2vec).
        vocab_size: target vocabulary size, special tokens included. A small corpus may yield fewer.
        lowercase: lower-case the text before tokenising (BERT "uncased").
        extra_special_tokens: further special tokens a method needs (T5's sentinels), appended
            after the trained vocabulary in the given order; never split, never masked.

    Returns:
        A fast tokenizer with ``pad/unk/mask`` tokens and ``cls/sep`` (WordPiece, unigram, word) or
        ``bos/eos`` with ``cls = bos`` and ``sep = eos`` (BPE) set; calling it adds the template's
        special tokens.
    """
    tok, trainer, specials = _pipeline(kind, vocab_size, lowercase)
    if kind == "wordpiece":
        tok = _train_wordpiece(tok, trainer, texts, specials["unk_token"], vocab_size)
    else:
        tok.train_from_iterator(_batches(texts), trainer=trainer)
    tok = _canonical_ids(tok, kind, len(specials))
    tok.post_processor = _post_processor(kind, tok, specials)
    roles = dict(specials)
    if kind == "bpe":
        roles["cls_token"], roles["sep_token"] = specials["bos_token"], specials["eos_token"]
        # RoBERTa's "<mask>" absorbs the space before it, so in "a <mask> c" it stands for the
        # word " b" of "a b c" (the byte-level pre-tokeniser attaches spaces to the next word)
        mask = AddedToken(specials["mask_token"], lstrip=True, special=True, normalized=False)
        tok.add_special_tokens([mask])  # updates the trained token in place: same id
    extras = list(dict.fromkeys(extra_special_tokens))
    if extras:
        tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in extras])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **roles)
    if extras:
        fast.add_special_tokens({"additional_special_tokens": extras})
    return fast


def save_tokenizer(
    tokenizer: PreTrainedTokenizerFast, path: str | Path, *, segment_ids: bool = False
) -> None:
    """``tokenizer.save_pretrained(path)``, readable by transformers 4.x and 5.x alike.

    transformers 5 names the class of a plain fast tokenizer ``TokenizersBackend`` in
    ``tokenizer_config.json``, a name transformers 4 does not know; both versions load the
    ``tokenizer.json`` of a ``PreTrainedTokenizerFast``, so that name is written instead.
    With ``segment_ids`` the loaded tokenizer also returns ``token_type_ids`` (1 on a pair's
    second segment), as BERT's own tokenizer does; a plain fast tokenizer returns only
    ``input_ids`` and ``attention_mask``.
    """
    tokenizer.save_pretrained(str(path))
    config_file = Path(path) / "tokenizer_config.json"
    config = json.loads(config_file.read_text(encoding="utf-8"))
    if config.get("tokenizer_class") == "TokenizersBackend":
        config["tokenizer_class"] = "PreTrainedTokenizerFast"
    if segment_ids:
        config["model_input_names"] = ["input_ids", "token_type_ids", "attention_mask"]
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", "utf-8")


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerFast:
    """Load a tokenizer written by ``save_pretrained`` (a directory) without network access."""
    return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
