import json

import pytest
from transformers import AutoTokenizer

from selfsup.data.tokenizer import KINDS, load_tokenizer, save_tokenizer, train_tokenizer

SPECIALS = {
    "wordpiece": ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"),
    "bpe": ("<pad>", "<unk>", "<s>", "</s>", "<mask>"),
    "unigram": ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"),
}


@pytest.fixture(scope="module")
def trained(text_corpus):
    return {kind: train_tokenizer(text_corpus, kind=kind, vocab_size=500) for kind in KINDS}


@pytest.mark.parametrize("kind", KINDS)
def test_special_tokens_are_set_and_distinct(trained, kind):
    tok = trained[kind]
    pad, unk, cls, sep, mask = SPECIALS[kind]
    assert (tok.pad_token, tok.unk_token, tok.cls_token, tok.sep_token, tok.mask_token) == (
        pad,
        unk,
        cls,
        sep,
        mask,
    )
    ids = [tok.convert_tokens_to_ids(t) for t in SPECIALS[kind]]
    assert ids == [
        tok.pad_token_id,
        tok.unk_token_id,
        tok.cls_token_id,
        tok.sep_token_id,
        tok.mask_token_id,
    ]
    assert len(set(ids)) == 5 and max(ids) < 5  # reserved at the start of the vocabulary
    assert 5 < len(tok) <= 500


@pytest.mark.parametrize("kind", KINDS)
def test_templates_single_and_pair(trained, kind):
    tok = trained[kind]
    single = tok("Anan elpo")["input_ids"]
    assert single[0] == tok.cls_token_id and single[-1] == tok.sep_token_id
    assert tok.sep_token_id not in single[1:-1]
    pair = tok("Anan elpo", "orveel")["input_ids"]
    assert pair[0] == tok.cls_token_id and pair[-1] == tok.sep_token_id
    assert pair.count(tok.sep_token_id) == (3 if kind == "bpe" else 2)  # RoBERTa: </s></s>
    plain = tok("Anan elpo", add_special_tokens=False)["input_ids"]
    assert single[1:-1] == plain and tok.unk_token_id not in plain


@pytest.mark.parametrize("kind", KINDS)
def test_round_trip_through_auto_tokenizer(trained, kind, tmp_path, text_corpus):
    tok = trained[kind]
    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    for text in text_corpus[:20] + ["Some UNSEEN words, with punctuation! <mask> [MASK]"]:
        assert loaded(text)["input_ids"] == tok(text)["input_ids"]
    assert loaded("ka lo", "mi")["input_ids"] == tok("ka lo", "mi")["input_ids"]
    assert loaded.all_special_ids == tok.all_special_ids
    for role in ("pad_token", "unk_token", "cls_token", "sep_token", "mask_token"):
        assert getattr(loaded, role) == getattr(tok, role)
    assert (
        loaded.decode(tok("anan elpo")["input_ids"], skip_special_tokens=True).strip()
        == "anan elpo"
    )


def test_save_tokenizer_writes_a_class_name_both_major_versions_know(trained, tmp_path):
    tok = trained["wordpiece"]
    save_tokenizer(tok, tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast"
    loaded = load_tokenizer(tmp_path)
    assert loaded("ka lo mi")["input_ids"] == tok("ka lo mi")["input_ids"]
    assert loaded.mask_token_id == tok.mask_token_id


@pytest.mark.parametrize("kind", ["wordpiece", "bpe"])
def test_training_is_deterministic(text_corpus, kind):
    # the raw WordPiece trainer numbers its "##" alphabet in hash-map order, different every time
    runs = {
        train_tokenizer(text_corpus, kind=kind, vocab_size=500).backend_tokenizer.to_str()
        for _ in range(3)
    }
    assert len(runs) == 1


def test_wordpiece_training_on_real_text_is_deterministic():
    # On real text many merges tie; the raw "##" trainer broke ties in hash-map order and gave
    # another vocabulary each time (70 of 8,000 tokens on lee), so runs could not be repeated.
    from selfsup.data import build_source

    texts = [sample["text"] for sample in build_source("lee").train]
    runs = {
        train_tokenizer(texts, kind="wordpiece", vocab_size=3000).backend_tokenizer.to_str()
        for _ in range(3)
    }
    assert len(runs) == 1


def test_wordpiece_vocabulary_has_every_character_plain_and_continuing():
    # "q" starts no word: it still gets its plain token ("qa" would otherwise be unknown), in
    # place of the last merge, as the "##" trainer's alphabet gives it
    texts = ["aq aqua baq caq"] * 10 + ["a b c"]
    tok = train_tokenizer(texts, kind="wordpiece", vocab_size=16)
    vocab = tok.get_vocab()
    assert {"a", "b", "c", "q", "##q", "##u", "##a"} <= set(vocab) and len(vocab) == 16
    assert tok.tokenize("qa") == ["q", "##a"]
    assert tok.tokenize("aqua") != ["[UNK]"]


def test_wordpiece_training_skips_words_it_cannot_mark():
    # a character beyond plane 1 inside a word, or a private use mark of planes 15-16
    texts = ["ab\U00020000c ab abc", "\U000f0061b ab"] * 5
    tok = train_tokenizer(texts, kind="wordpiece", vocab_size=40)
    assert tok.tokenize("abc") == ["abc"]
    assert not any(ord(c) >= 0xF0000 for token in tok.get_vocab() for c in token)


def test_lowercase_switch(text_corpus):
    lower = train_tokenizer(text_corpus, kind="wordpiece", vocab_size=500)
    assert lower.tokenize("ANAN Elpo") == lower.tokenize("anan elpo")
    cased = train_tokenizer(text_corpus, kind="wordpiece", vocab_size=500, lowercase=False)
    assert cased.tokenize("ANAN") != cased.tokenize("anan")


def test_bpe_mask_token_absorbs_the_space_before_it(trained):
    tok = trained["bpe"]
    ids = tok("anan <mask> elpo", add_special_tokens=False)["input_ids"]
    plain = tok("anan elpo", add_special_tokens=False)["input_ids"]
    assert tok.mask_token_id in ids
    assert [i for i in ids if i != tok.mask_token_id] == plain  # no stray space token


def test_unknown_kind_lists_the_valid_ones():
    with pytest.raises(ValueError, match="wordpiece"):
        train_tokenizer(["a b"], kind="sentencepiece")


def test_extra_special_tokens_are_never_split_and_survive_a_save(tmp_path):
    from selfsup.data.tokenizer import load_tokenizer, save_tokenizer, train_tokenizer

    texts = ["the cat sat on the mat", "a dog ran in the park"] * 20
    extras = ["<extra_id_0>", "<extra_id_1>"]
    tok = train_tokenizer(texts, kind="wordpiece", vocab_size=100, extra_special_tokens=extras)
    ids = tok.convert_tokens_to_ids(extras)
    assert ids == [len(tok) - 2, len(tok) - 1]  # appended after the trained vocabulary
    assert set(ids) <= set(tok.all_special_ids)
    assert ids[0] in tok("the <extra_id_0> sat")["input_ids"]
    save_tokenizer(tok, tmp_path / "tok")
    again = load_tokenizer(tmp_path / "tok")
    assert again.convert_tokens_to_ids(extras) == ids and set(ids) <= set(again.all_special_ids)
