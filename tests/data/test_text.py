"""Corpus, tokenizer, sequences and CLIP-style caption tokens."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minitransformer.data import (
    SPECIAL_TOKENS,
    Tokenizer,
    caption_tokens,
    eot_positions,
    load_corpus,
    make_sequences,
    tokenize,
)


@pytest.fixture(scope="module")
def corpus() -> str:
    return load_corpus()


@pytest.fixture(scope="module")
def tok(corpus) -> Tokenizer:
    return Tokenizer.fit(corpus)


@pytest.fixture(scope="module")
def corpus_words(corpus, tok) -> list[str]:
    """Distinct word tokens of the corpus (no ## pieces, no specials), in vocabulary order."""
    special = set(SPECIAL_TOKENS)
    return [t for t in tok.id_to_token if t not in special and not t.startswith("##")]


def test_corpus_is_real_english_text(corpus):
    from pydoc_data.topics import topics

    assert isinstance(corpus, str) and len(corpus) > 100_000
    assert corpus == load_corpus()  # same text every call
    assert corpus.startswith(topics[sorted(topics)[0]])
    assert "assert" in corpus and " the " in corpus
    tokens = tokenize(corpus)
    # on CPython 3.11.7 this gives 119,863 tokens and 3,292 distinct ones (the counts vary a
    # little with the Python version that ships the corpus)
    assert 100_000 < len(tokens) < 150_000
    assert 2_800 < len(set(tokens)) < 3_800


def test_tokenize_splits_words_numbers_and_punctuation():
    assert tokenize("x = f(10).") == ["x", "=", "f", "(", "10", ")", "."]
    assert tokenize("The __init__ Method, 2x") == [
        "the", "_", "_", "init", "_", "_", "method", ",", "2", "x",
    ]  # fmt: skip
    assert tokenize("  \n\t ") == []


def test_special_tokens_have_fixed_ids(tok):
    assert SPECIAL_TOKENS == ("[PAD]", "[UNK]", "[CLS]", "[MASK]", "[EOT]")
    assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.mask_id, tok.eot_id) == (0, 1, 2, 3, 4)
    assert tok.special_ids == (0, 1, 2, 3, 4)
    assert tok.id_to_token[:5] == list(SPECIAL_TOKENS)
    for i, name in enumerate(SPECIAL_TOKENS):
        assert tok.token_to_id[name] == i
    assert len(tok) == tok.vocab_size == len(tok.id_to_token)


def test_vocab_holds_every_corpus_token(corpus, tok):
    distinct = set(tokenize(corpus))
    assert distinct <= set(tok.token_to_id)
    ids = tok.encode(corpus)
    assert len(ids) == len(tokenize(corpus))  # one id per token: no fallback, no UNK
    assert tok.unk_id not in ids
    # words come by decreasing frequency after the special and character tokens
    assert tok.id_to_token[tok.encode("the")[0]] == "the"


@given(data=st.data())
def test_round_trip_on_corpus_words(tok, corpus_words, data):
    words = data.draw(st.lists(st.sampled_from(corpus_words), min_size=1, max_size=30))
    ids = [tok.token_to_id[w] for w in words]
    text = tok.decode(ids)
    assert tok.encode(text) == ids
    assert tokenize(text) == words


def test_round_trip_on_corpus_text(corpus, tok):
    chunk = corpus[20_000:30_000]
    assert tokenize(tok.decode(tok.encode(chunk))) == tokenize(chunk)


def test_decode_spacing_and_specials(tok):
    ids = [tok.cls_id] + tok.encode("print(x, y).") + [tok.eot_id, tok.pad_id]
    assert tok.decode(ids) == "[CLS] print (x, y). [EOT] [PAD]"
    assert tok.decode(ids, skip_special=True) == "print (x, y)."
    with pytest.raises(ValueError, match="outside"):
        tok.decode([tok.vocab_size])


def test_character_fallback(tok):
    word = "zebraquux"
    assert word not in tok.token_to_id
    ids = tok.encode(word)
    pieces = ["z"] + ["##" + c for c in word[1:]]
    assert ids == [tok.token_to_id[p] for p in pieces]
    assert tok.decode(ids) == word
    assert tok.decode(tok.encode(f"the {word} is 12345678987654321")) == (
        f"the {word} is 12345678987654321"
    )
    # a character never seen in the corpus: the whole word is [UNK], known words are not
    assert "\u0436" not in tok.token_to_id
    assert tok.encode("the \u0436ook") == [tok.token_to_id["the"], tok.unk_id, *tok.encode("ook")]
    assert tok.encode("in") == [tok.token_to_id["in"]]  # a known word is one token


def test_fit_options():
    text = "b a a c c c d d d d " * 3 + "rare"
    full = Tokenizer.fit(text)
    words = [t for t in full.id_to_token[5:] if len(t) > 1 and not t.startswith("##")]
    assert words == ["rare"]  # single letters are character tokens already
    text = "aa bb bb cc cc cc dd dd dd dd rare"
    full = Tokenizer.fit(text)
    n_base = 5 + len(set(text.replace(" ", ""))) * 2  # specials, chars and ## pieces
    assert full.id_to_token[n_base:] == ["dd", "cc", "bb", "aa", "rare"]  # by frequency
    assert Tokenizer.fit(text, min_freq=2).id_to_token[n_base:] == ["dd", "cc", "bb"]
    small = Tokenizer.fit(text, max_vocab=n_base + 2)
    assert small.vocab_size == n_base + 2 and small.id_to_token[n_base:] == ["dd", "cc"]
    assert small.decode(small.encode("aa rare")) == "aa rare"  # spelled out, still exact
    with pytest.raises(ValueError, match="max_vocab"):
        Tokenizer.fit(text, max_vocab=8)


def test_json_round_trip(tok):
    again = Tokenizer.from_dict(json.loads(json.dumps(tok.to_dict())))
    assert again.id_to_token == tok.id_to_token
    text = "Lambda expressions are zzzyx 42."
    assert again.encode(text) == tok.encode(text)


def test_vocabulary_validation():
    with pytest.raises(ValueError, match="must start with"):
        Tokenizer(["a", "b"])
    with pytest.raises(ValueError, match="duplicate"):
        Tokenizer([*SPECIAL_TOKENS, "a", "a"])


def test_make_sequences_shapes_and_content():
    ids = np.arange(100, 200)  # 100 ids
    seqs = make_sequences(ids, seq_len=16)
    assert seqs.shape == (100 // 15, 16) and seqs.dtype == np.int64
    assert (seqs[:, 0] == Tokenizer.cls_id).all()
    np.testing.assert_array_equal(seqs[:, 1:].reshape(-1), ids[: 6 * 15])  # contiguous chunks
    plain = make_sequences(list(ids), seq_len=16, add_cls=False)
    assert plain.shape == (6, 16)
    np.testing.assert_array_equal(plain.reshape(-1), ids[:96])
    assert make_sequences(ids[:10], seq_len=16).shape == (0, 16)
    with pytest.raises(ValueError, match="seq_len"):
        make_sequences(ids, seq_len=1)


def test_caption_tokens_layout():
    captions = ["a small red circle on the left", "a large blue square at the top"]
    tok = Tokenizer.fit(" ".join(captions))
    out = caption_tokens(captions, tok, context_length=12)
    assert out.shape == (2, 12) and out.dtype == np.int64
    for row, text in zip(out, captions):
        words = tok.encode(text)
        n = len(words)
        assert row[0] == tok.cls_id
        assert list(row[1 : 1 + n]) == words
        assert row[1 + n] == tok.eot_id
        assert (row[2 + n :] == tok.pad_id).all()
    np.testing.assert_array_equal(eot_positions(out, tok.eot_id), [8, 8])
    assert tok.decode(out[0], skip_special=True) == captions[0]

    no_cls = caption_tokens(captions, tok, context_length=12, add_cls=False)
    assert no_cls[0, 0] == tok.encode("a")[0] and eot_positions(no_cls)[0] == 7

    short = caption_tokens(captions, tok, context_length=5)  # truncated: still ends in EOT
    assert (short[:, -1] == tok.eot_id).all() and (eot_positions(short) == 4).all()
    with pytest.raises(ValueError, match="context_length"):
        caption_tokens(captions, tok, context_length=2)
