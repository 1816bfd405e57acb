"""Tokenizers of the real models: a thin wrapper over Hugging Face ``tokenizers``.

A real checkpoint was trained with one exact tokenizer: BERT with a WordPiece vocabulary of
30,522 pieces (lower-cased for ``bert-base-uncased``), CLIP with a byte-level BPE of 49,408
tokens. Both ship as a ``tokenizer.json`` beside the weights, which the Rust library
``tokenizers`` reads and runs. This module does not re-implement WordPiece or BPE: it loads
that file and turns its output into the padded NumPy arrays the models take.

- ``load_tokenizer(folder)``: the ``tokenizers.Tokenizer`` of a model folder's
  ``tokenizer.json`` (or of that file itself).
- ``encode_bert(tok, texts, length)`` -> ``(ids, attention_mask, token_type_ids)``, each
  (B, L): ``[CLS] text [SEP]`` (or ``[CLS] a [SEP] b [SEP]`` for pairs, token type 0 then 1),
  as HF ``BertTokenizerFast`` builds them with the tokenizer's own post-processor (the
  ``TemplateProcessing`` in ``tokenizer.json``), truncated by the tokenizer to ``length``
  (longest first for pairs) and padded on the right with id 0 (``[PAD]`` in BERT's
  vocabulary), ``attention_mask`` False there. ``models.BERT.forward_tokens`` takes the three.
- ``encode_clip(tok, texts, context_length=77)`` -> ``(ids, attention_mask)``, each (B, 77):
  ``<|startoftext|> text <|endoftext|>`` padded with 0, as open_clip's ``tokenize``
  (mlfoundations/open_clip, src/open_clip/tokenizer.py, ``SimpleTokenizer.__call__``): a
  text too long keeps its first ``context_length - 2`` tokens and still ends with
  ``<|endoftext|>``.
  The end-of-text token (EOT) is the vocabulary's largest id (49407), so the EOT position of
  each row is ``ids.argmax(-1)``, where CLIP's text tower pools (``TextConfig(pool="eot")``);
  padding with 0 cannot move it. CLIP's text tower is causal: no token attends to the padding
  after it, so the mask is not needed there; it is returned for other uses.

``tokenizers`` is an optional extra: ``pip install "minitransformer[tokenizers]"``. It is
imported inside the functions, so ``import minitransformer`` never needs it.

A ``Tokenizer``'s truncation and padding settings are state (a tokenizer.json may switch
padding on): both functions turn padding off and set the truncation they need for the call,
then restore the previous settings (not thread-safe; use one tokenizer per thread).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["encode_bert", "encode_clip", "load_tokenizer"]

_EXTRA = 'pip install "minitransformer[tokenizers]"'


def _tokenizers() -> Any:
    """The ``tokenizers`` module, or an ImportError that names the extra to install."""
    try:
        import tokenizers
    except ImportError as err:
        raise ImportError(
            "minitransformer.io.tokenizer needs Hugging Face `tokenizers` to read a model's "
            f"tokenizer.json; install it with: {_EXTRA}"
        ) from err
    return tokenizers


def load_tokenizer(source: str | Path) -> Any:
    """The ``tokenizers.Tokenizer`` saved in ``source``: a model folder holding
    ``tokenizer.json`` (as on the Hugging Face Hub), or the path of such a file.

    Raises FileNotFoundError naming the path when there is no ``tokenizer.json``, and
    ImportError naming the extra when ``tokenizers`` is not installed.
    """
    tokenizers = _tokenizers()
    path = Path(source)
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"load_tokenizer: no tokenizer file at {path}; a model folder should hold the "
            "tokenizer.json published with the weights (e.g. on the Hugging Face Hub)"
        )
    return tokenizers.Tokenizer.from_file(str(path))


def _as_list(texts: str | Sequence[str], name: str) -> list[str]:
    items = [texts] if isinstance(texts, str) else list(texts)
    if not items:
        raise ValueError(f"{name}: no texts to encode (got an empty sequence)")
    bad = [type(t).__name__ for t in items if not isinstance(t, str)]
    if bad:
        raise TypeError(f"{name}: texts must be str, got {bad[:3]}")
    return items


def _token_id(tokenizer: Any, token: str, name: str) -> int:
    i = tokenizer.token_to_id(token)
    if i is None:
        raise ValueError(f"{name}: the tokenizer has no {token!r} token; is this the "
                         "tokenizer.json of the right model?")
    return int(i)


def _check_length(length: int | None, least: int, name: str) -> None:
    if length is not None and (not isinstance(length, (int, np.integer)) or length < least):
        raise ValueError(f"{name}: the length must be an integer >= {least} (room for the "
                         f"special tokens), got {length!r}")


@contextmanager
def _settings(tokenizer: Any, max_length: int | None) -> Iterator[None]:
    """No padding and truncation to ``max_length`` (None: none) for the ``with`` block; the
    tokenizer's own settings (saved in its tokenizer.json, or set by the caller) after it."""
    saved_trunc, saved_pad = tokenizer.truncation, tokenizer.padding
    try:
        tokenizer.no_padding()  # padded by the caller, in NumPy, to one known value
        if max_length is None:
            tokenizer.no_truncation()
        else:
            tokenizer.enable_truncation(max_length=int(max_length))
        yield
    finally:
        if saved_trunc is None:
            tokenizer.no_truncation()
        else:
            tokenizer.enable_truncation(**saved_trunc)
        if saved_pad is not None:
            tokenizer.enable_padding(**saved_pad)


def _pad(rows: Sequence[Sequence[int]], length: int, value: int) -> np.ndarray:
    """Rows of ids, each at most ``length`` long, as one (B, length) int64 array."""
    out = np.full((len(rows), length), value, dtype=np.int64)  # (B, L)
    for b, row in enumerate(rows):
        out[b, :len(row)] = row
    return out


def encode_bert(tokenizer: Any, texts: str | Sequence[str], length: int | None = None, *,
                pairs: str | Sequence[str] | None = None, pad_id: int = 0
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """BERT's inputs for ``texts`` (and second segments ``pairs``): ``(ids, attention_mask,
    token_type_ids)``.

    Each row is ``[CLS] a [SEP]`` or ``[CLS] a [SEP] b [SEP]``, built by the tokenizer's own
    post-processor (token type 0 for ``[CLS] a [SEP]``, 1 for ``b [SEP]``), truncated by the
    tokenizer to ``length`` when given (for pairs, the longer segment loses a token at a time,
    HF's "longest_first"), then padded on the right to ``length`` (or to the longest row when
    ``length`` is None) with ``pad_id`` (BERT's ``[PAD]`` is 0), type 0 and mask False.

    Args:
        tokenizer: a ``tokenizers.Tokenizer`` (``load_tokenizer``) of a BERT-style model.
        texts: one text or B texts.
        length: L, the padded length (BERT-base reads at most 512 positions); None: the
            longest row of the batch.
        pairs: None, or one second segment per text.
        pad_id: the id written into padded positions.

    Returns:
        ids (B, L) int64, attention_mask (B, L) bool (True = real token, HF's
        ``attention_mask`` as booleans), token_type_ids (B, L) int64.
    """
    name = "encode_bert"
    items = _as_list(texts, name)
    seconds = None if pairs is None else _as_list(pairs, name)
    if seconds is not None and len(seconds) != len(items):
        raise ValueError(f"{name}: {len(items)} texts but {len(seconds)} pairs; give one "
                         "second segment per text")
    _check_length(length, 3 if seconds is not None else 2, name)
    cls_id = _token_id(tokenizer, "[CLS]", name)
    sep_id = _token_id(tokenizer, "[SEP]", name)

    batch = items if seconds is None else list(zip(items, seconds))
    with _settings(tokenizer, length):
        encodings = tokenizer.encode_batch(batch, add_special_tokens=True)

    rows = [e.ids for e in encodings]
    for b, row in enumerate(rows):
        if not row or row[0] != cls_id or row[-1] != sep_id:
            raise ValueError(
                f"{name}: row {b} is not [CLS] ... [SEP] (starts {row[:1]}, ends {row[-1:]}; "
                f"[CLS]={cls_id}, [SEP]={sep_id}): this tokenizer.json has no BERT "
                "post-processor adding them"
            )
    L = max(len(r) for r in rows) if length is None else int(length)
    ids = _pad(rows, L, pad_id)  # (B, L)
    types = _pad([e.type_ids for e in encodings], L, 0)  # (B, L)
    mask = _pad([[1] * len(r) for r in rows], L, 0).astype(bool)  # (B, L)
    return ids, mask, types


def encode_clip(tokenizer: Any, texts: str | Sequence[str], context_length: int = 77, *,
                start: str = "<|startoftext|>", end: str = "<|endoftext|>", pad_id: int = 0
                ) -> tuple[np.ndarray, np.ndarray]:
    """CLIP's text inputs: ``(ids, attention_mask)``, each (B, context_length).

    Each row is ``[start] + tokens[:context_length - 2] + [end]``, padded on the right with
    ``pad_id``: open_clip's ``tokenize`` (src/open_clip/tokenizer.py), which truncates to
    ``context_length`` and writes the end-of-text token into the last place. The tokens come
    from the tokenizer without its own special tokens (``add_special_tokens=False``), so a
    ``tokenizer.json`` with or without a post-processor gives the same rows.

    The end-of-text id must be the vocabulary's largest (49407 in CLIP's 49,408): CLIP's text
    tower pools at ``ids.argmax(-1)`` (openai/CLIP, clip/model.py ``encode_text``;
    ``TextConfig`` with ``pool="eot"`` and ``eot_id=None``), which is the end-of-text position
    only then. A
    tokenizer where it is not raises ValueError (set ``TextConfig.eot_id`` for such a model).

    Returns:
        ids (B, context_length) int64, attention_mask (B, context_length) bool (True = real
        token, start and end included).
    """
    name = "encode_clip"
    items = _as_list(texts, name)
    _check_length(context_length, 2, name)
    sot = _token_id(tokenizer, start, name)
    eot = _token_id(tokenizer, end, name)
    top = tokenizer.get_vocab_size(with_added_tokens=True) - 1
    if eot != top:
        raise ValueError(
            f"{name}: the end-of-text token {end!r} has id {eot}, not the vocabulary's largest "
            f"id {top}; CLIP pools at ids.argmax(-1), which would not find it"
        )
    with _settings(tokenizer, None):  # the tokenizer's own padding would add tokens
        encodings = tokenizer.encode_batch(items, add_special_tokens=False)
    keep = context_length - 2
    rows = [[sot, *e.ids[:keep], eot] for e in encodings]
    ids = _pad(rows, context_length, pad_id)  # (B, context_length)
    mask = _pad([[1] * len(r) for r in rows], context_length, 0).astype(bool)
    return ids, mask
