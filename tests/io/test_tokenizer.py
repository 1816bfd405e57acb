"""minitransformer.io.tokenizer: load a model folder's tokenizer.json (HF ``tokenizers``) and
frame its output as BERT's ``[CLS] a [SEP] (b [SEP])`` and CLIP's ``<sot> text <eot>``
inputs, padded with 0 to a length.

The tokenizers here are tiny ones built with ``tokenizers`` itself and saved as
tokenizer.json in a temporary folder: a BERT-style WordPiece (its normaliser lower-cases,
its post-processor is BERT's template) and a CLIP-style BPE trained on a few captions, with
the start and end of text added last (the end of text has the largest id, as in CLIP). The
expected rows are built in plain Python from the vocabulary, independently of the wrapper.
When the interop fixtures are in the checkout, their tokenizer.json files are read as well.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minitransformer.io import tokenizer as T

tokenizers = pytest.importorskip("tokenizers")

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "interop"
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = ["the", "a", "cat", "dog", "sat", "on", "mat", "red", "big", "runs"]
BERT_VOCAB = {t: i for i, t in enumerate(SPECIALS + WORDS + ["##s"])}
CLS, SEP = BERT_VOCAB["[CLS]"], BERT_VOCAB["[SEP]"]
CAPTIONS = ["a photo of a temple", "a photo of a flower", "a red flower in a garden",
            "an old temple roof", "a photo of a cat on a mat"]


def _bert_tokenizer():
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    tok = Tokenizer(models.WordPiece(BERT_VOCAB, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", CLS), ("[SEP]", SEP)])
    tok.add_special_tokens(SPECIALS)
    return tok


def _clip_tokenizer():
    """A fresh copy of one trained BPE (training twice may break ties differently)."""
    return tokenizers.Tokenizer.from_str(_clip_tokenizer_json())


@functools.cache
def _clip_tokenizer_json() -> str:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token=None, end_of_word_suffix="</w>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(CAPTIONS, trainers.BpeTrainer(
        vocab_size=80, end_of_word_suffix="</w>", show_progress=False))
    tok.add_special_tokens(["<|startoftext|>", "<|endoftext|>"])  # the two largest ids
    return tok.to_str()


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bert")
    _bert_tokenizer().save(str(folder / "tokenizer.json"))
    return folder


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clip")
    _clip_tokenizer().save(str(folder / "tokenizer.json"))
    return folder


# ----------------------------------------------------------------------------- loading
def test_load_tokenizer_from_a_folder_or_its_file(bert_dir):
    a = T.load_tokenizer(bert_dir)
    b = T.load_tokenizer(bert_dir / "tokenizer.json")
    assert isinstance(a, tokenizers.Tokenizer)
    assert a.get_vocab() == b.get_vocab() == BERT_VOCAB


def test_load_tokenizer_names_a_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        T.load_tokenizer(tmp_path)
    with pytest.raises(FileNotFoundError, match="nope.json"):
        T.load_tokenizer(tmp_path / "nope.json")


def test_without_tokenizers_the_error_names_the_extra(bert_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "tokenizers", None)  # `import tokenizers` raises
    with pytest.raises(ImportError, match=r"minitransformer\[tokenizers\]"):
        T.load_tokenizer(bert_dir)


# ----------------------------------------------------------------------------- BERT
def test_encode_bert_one_text():
    ids, mask, types = T.encode_bert(_bert_tokenizer(), "The cats sat on the [MASK]", 10)
    want = ["[CLS]", "the", "cat", "##s", "sat", "on", "the", "[MASK]", "[SEP]"]
    assert ids.tolist() == [[BERT_VOCAB[t] for t in want] + [0]]
    assert mask.tolist() == [[True] * 9 + [False]]
    assert types.tolist() == [[0] * 10]
    assert ids.dtype == np.int64 and mask.dtype == bool and types.dtype == np.int64


@settings(max_examples=40, deadline=None)
@given(sentences=st.lists(st.lists(st.sampled_from(WORDS), min_size=0, max_size=9),
                          min_size=1, max_size=4),
       length=st.one_of(st.none(), st.integers(2, 12)))
def test_encode_bert_rows_match_plain_python(sentences, length):
    """[CLS] + the words' ids (the first length - 2) + [SEP], then pads of 0, mask False."""
    tok = _bert_tokenizer()
    ids, mask, types = T.encode_bert(tok, [" ".join(s).upper() for s in sentences], length)
    rows = [[CLS] + [BERT_VOCAB[w] for w in s][:None if length is None else length - 2]
            + [SEP] for s in sentences]
    L = max(map(len, rows)) if length is None else length
    assert ids.shape == mask.shape == types.shape == (len(sentences), L)
    for b, row in enumerate(rows):
        assert ids[b].tolist() == row + [0] * (L - len(row))
        assert mask[b].tolist() == [True] * len(row) + [False] * (L - len(row))
    assert not types.any()


@settings(max_examples=40, deadline=None)
@given(a=st.lists(st.sampled_from(WORDS), min_size=0, max_size=8),
       b=st.lists(st.sampled_from(WORDS), min_size=0, max_size=8),
       length=st.integers(3, 20))
def test_encode_bert_pairs_truncate_longest_first(a, b, length):
    """[CLS] a' [SEP] b' [SEP], token types 0 then 1; a', b' prefixes of a, b; when cut, the
    total is the length and the shorter segment loses nothing until the two are within one."""
    tok = _bert_tokenizer()
    ids, mask, types = T.encode_bert(tok, [" ".join(a)], length, pairs=[" ".join(b)])
    n = int(mask.sum())
    row, typ = ids[0, :n].tolist(), types[0, :n].tolist()
    assert row[0] == CLS and row[-1] == SEP and row.count(SEP) == 2
    s = row.index(SEP)
    a2, b2 = row[1:s], row[s + 1:-1]
    ids_a, ids_b = [BERT_VOCAB[w] for w in a], [BERT_VOCAB[w] for w in b]
    assert a2 == ids_a[:len(a2)] and b2 == ids_b[:len(b2)]
    assert typ == [0] * (s + 1) + [1] * (n - s - 1)
    assert n == min(length, len(a) + len(b) + 3)
    if n < len(a) + len(b) + 3:  # truncated: longest first
        short, short2 = min((len(a), len(a2)), (len(b), len(b2)))
        assert short2 == short or abs(len(a2) - len(b2)) <= 1
    assert ids[0, n:].tolist() == [0] * (length - n) and not types[0, n:].any()


def test_encode_bert_restores_the_tokenizers_settings():
    tok = _bert_tokenizer()
    tok.enable_truncation(max_length=7)
    tok.enable_padding(length=9, pad_id=0, pad_token="[PAD]")
    before = (tok.truncation, tok.padding)
    T.encode_bert(tok, ["the cat sat on the mat"] * 2, 5)
    T.encode_bert(tok, ["a dog"], None)
    assert (tok.truncation, tok.padding) == before
    plain = _bert_tokenizer()
    T.encode_bert(plain, "a dog", 4)
    assert plain.truncation is None and plain.padding is None


def test_encode_bert_errors_name_the_problem():
    tok = _bert_tokenizer()
    with pytest.raises(ValueError, match="no texts"):
        T.encode_bert(tok, [])
    with pytest.raises(TypeError, match="must be str"):
        T.encode_bert(tok, ["a", 3])
    with pytest.raises(ValueError, match="2 texts but 1 pairs"):
        T.encode_bert(tok, ["a", "b"], pairs=["c"])
    with pytest.raises(ValueError, match=r">= 2 .* got 1"):
        T.encode_bert(tok, "a", 1)
    with pytest.raises(ValueError, match=r">= 3 .* got 2"):
        T.encode_bert(tok, "a", 2, pairs="b")
    with pytest.raises(ValueError, match=r"no '\[CLS\]' token"):
        T.encode_bert(_clip_tokenizer(), "a")
    bare = _bert_tokenizer()
    bare.post_processor = None
    with pytest.raises(ValueError, match="no BERT post-processor"):
        T.encode_bert(bare, "a cat")


# ----------------------------------------------------------------------------- CLIP
@settings(max_examples=40, deadline=None)
@given(picks=st.lists(st.sampled_from(CAPTIONS + ["", "temple temple flower flower photo"]),
                      min_size=1, max_size=4),
       context_length=st.integers(2, 16))
def test_encode_clip_rows_match_open_clips_framing(picks, context_length):
    """sot + the text's tokens (the first context_length - 2) + eot, padded with 0; the eot
    position is ids.argmax(-1), where CLIP's text tower pools."""
    tok = _clip_tokenizer()
    sot, eot = tok.token_to_id("<|startoftext|>"), tok.token_to_id("<|endoftext|>")
    ids, mask = T.encode_clip(tok, picks, context_length)
    assert ids.shape == mask.shape == (len(picks), context_length)
    for b, text in enumerate(picks):
        body = tok.encode(text, add_special_tokens=False).ids[:context_length - 2]
        row = [sot, *body, eot]
        assert ids[b].tolist() == row + [0] * (context_length - len(row))
        assert mask[b].tolist() == [True] * len(row) + [False] * (context_length - len(row))
        assert ids[b].argmax() == len(row) - 1
    assert ids.dtype == np.int64 and mask.dtype == bool


def test_encode_clip_default_context_is_77_and_a_long_text_still_ends_with_eot(clip_dir):
    tok = T.load_tokenizer(clip_dir)
    eot = tok.token_to_id("<|endoftext|>")
    ids, mask = T.encode_clip(tok, ["a photo of a temple " * 40, "a flower"])
    assert ids.shape == (2, 77)
    assert ids[0, -1] == eot and mask[0].all()
    assert (ids.argmax(-1) == mask.sum(-1) - 1).all()


def test_encode_clip_ignores_and_restores_the_tokenizers_own_padding():
    """A tokenizer.json may switch padding on (HF's CLIP pads with <|endoftext|>): the rows
    are the same as without it, and the setting is back afterwards."""
    plain = _clip_tokenizer()
    padded = _clip_tokenizer()
    eot = padded.token_to_id("<|endoftext|>")
    padded.enable_padding(length=12, pad_id=eot, pad_token="<|endoftext|>")
    padded.enable_truncation(max_length=3)
    before = (padded.truncation, padded.padding)
    texts = ["a flower", "a photo of a cat on a mat"]
    for got, want in zip(T.encode_clip(padded, texts, 16), T.encode_clip(plain, texts, 16)):
        np.testing.assert_array_equal(got, want)
    assert (padded.truncation, padded.padding) == before


def test_encode_clip_refuses_an_end_of_text_that_is_not_the_largest_id():
    tok = _clip_tokenizer()
    tok.add_tokens(["zebra"])  # now the largest id is not <|endoftext|>
    with pytest.raises(ValueError, match="not the vocabulary's largest id"):
        T.encode_clip(tok, "a cat")
    with pytest.raises(ValueError, match=r"no '<\|startoftext\|>' token"):
        T.encode_clip(_bert_tokenizer(), "a cat")
    with pytest.raises(ValueError, match=r">= 2 .* got 1"):
        T.encode_clip(_clip_tokenizer(), "a cat", 1)


# ----------------------------------------------------------------------------- fixtures
# The interop fixtures' tokenizer.json files, and the ids the generator fed the reference
# models (tests/interop/make_fixtures.py builds each row with the tokenizer's own encode and
# post-processor, truncated as open_clip's tokenizer for CLIP, in its own loop).
def _fixture(name):
    folder = FIXTURES / name
    if not (folder / "tokenizer.json").exists():
        pytest.skip("no interop fixtures in this checkout")
    return folder, json.loads((folder / "meta.json").read_text()), np.load(folder / "io.npz")


def test_the_bert_fixtures_inputs_are_what_encode_bert_gives():
    folder, meta, arrays = _fixture("hf-bert")
    texts, pairs = zip(*meta["tokenizer"]["pairs"])
    tok = T.load_tokenizer(folder)
    assert all(p is None for p in pairs[2:]) and all(pairs[:2])
    ids, mask, types = T.encode_bert(tok, list(texts[:2]), pairs=list(pairs[:2]))
    ids1, mask1, types1 = T.encode_bert(tok, [texts[2]], ids.shape[1])  # no second segment
    np.testing.assert_array_equal(np.concatenate([ids, ids1]), arrays["input_ids"])
    np.testing.assert_array_equal(np.concatenate([mask, mask1]), arrays["attention_mask"] == 1)
    np.testing.assert_array_equal(np.concatenate([types, types1]), arrays["token_type_ids"])


def test_the_clip_fixtures_text_is_what_encode_clip_gives():
    folder, meta, arrays = _fixture("open_clip")
    tok = T.load_tokenizer(folder)
    want = arrays["text"]  # (3, 16), the last row truncated keeping the end of text last
    ids, mask = T.encode_clip(tok, meta["tokenizer"]["captions"], want.shape[1])
    np.testing.assert_array_equal(ids, want)
    assert (ids.argmax(-1) == mask.sum(-1) - 1).all()
    assert ids[0, 0] == meta["tokenizer"]["sot_id"] and ids.max() == meta["tokenizer"]["eot_id"]
