"""Text: a real English corpus that ships with Python, a word-level tokenizer, and batching.

The corpus is CPython's ``pydoc_data.topics``: the help text of the language reference
(~120k tokens, ~3.3k distinct words once lower-cased). The tokenizer lower-cases and splits
into words (runs of ASCII letters), numbers (runs of digits) and single punctuation or other
characters, so ``"x = f(10)."`` becomes ``["x", "=", "f", "(", "10", ")", "."]``.

Special tokens come first with fixed ids::

    [PAD] = 0   [UNK] = 1   [CLS] = 2   [MASK] = 3   [EOT] = 4

Character fallback: a word that is not in the vocabulary is spelled out, WordPiece style, as its
first character followed by continuation pieces ``##c`` for the rest (``"zebra"`` ->
``z ##e ##b ##r ##a``). ``fit`` adds every character and its ``##`` piece to the vocabulary, so
only words with characters never seen in training become ``[UNK]``. The ``##`` marks let
``decode`` glue the pieces back into the word.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

__all__ = [
    "SPECIAL_TOKENS",
    "Tokenizer",
    "caption_tokens",
    "eot_positions",
    "load_corpus",
    "make_sequences",
    "tokenize",
]

SPECIAL_TOKENS: tuple[str, ...] = ("[PAD]", "[UNK]", "[CLS]", "[MASK]", "[EOT]")
_CONTINUATION = "##"
# words (ASCII letters), numbers, or any other single non-space character
_TOKEN_RE = re.compile(r"[a-z]+|[0-9]+|[^\sa-z0-9]")
_NO_SPACE_BEFORE = set(".,;:!?)]}")
_NO_SPACE_AFTER = set("([{")


def load_corpus() -> str:
    """The English text of CPython's ``pydoc_data.topics``: its values joined by blank lines,
    in sorted key order (so the text is the same on every run)."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[key] for key in sorted(topics))


def tokenize(text: str) -> list[str]:
    """Lower-case and split into words, numbers and single punctuation characters."""
    return _TOKEN_RE.findall(text.lower())


class Tokenizer:
    """A word-level tokenizer with special tokens and character fallback.

    Build one with ``Tokenizer.fit(text)``; save it with ``to_dict()`` (plain JSON-able data)
    and restore it with ``Tokenizer.from_dict(d)``.
    """

    pad_id = 0
    unk_id = 1
    cls_id = 2
    mask_id = 3
    eot_id = 4
    special_ids: tuple[int, ...] = (0, 1, 2, 3, 4)

    def __init__(self, tokens: Sequence[str]):
        tokens = list(tokens)
        if tuple(tokens[: len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
            raise ValueError(
                f"Tokenizer: the vocabulary must start with {SPECIAL_TOKENS}, "
                f"got {tuple(tokens[: len(SPECIAL_TOKENS)])}"
            )
        if len(set(tokens)) != len(tokens):
            dup = sorted(t for t, c in Counter(tokens).items() if c > 1)
            raise ValueError(f"Tokenizer: duplicate tokens in the vocabulary: {dup[:10]}")
        self.id_to_token: list[str] = tokens
        self.token_to_id: dict[str, int] = {t: i for i, t in enumerate(tokens)}

    # ---- building ------------------------------------------------------------------------
    @classmethod
    def fit(cls, text: str, max_vocab: int | None = None, min_freq: int = 1) -> Tokenizer:
        """Build the vocabulary of ``text``.

        Order: the 5 special tokens, then every character seen (as a token and as a ``##``
        piece, always kept so the fallback works), then words by decreasing frequency (ties
        alphabetical) that occur at least ``min_freq`` times, until ``max_vocab`` tokens.
        """
        counts = Counter(tokenize(text))
        chars = sorted({ch for tok in counts for ch in tok})
        base = list(SPECIAL_TOKENS)
        base += chars
        # continuation pieces for the characters words and numbers are made of
        base += [_CONTINUATION + ch for ch in chars if ch.isascii() and ch.isalnum()]
        if max_vocab is not None and max_vocab < len(base):
            raise ValueError(
                f"Tokenizer.fit: max_vocab={max_vocab} is smaller than the {len(base)} special "
                "and character tokens that the fallback needs"
            )
        seen = set(base)
        words = sorted(
            (w for w, c in counts.items() if c >= min_freq and w not in seen),
            key=lambda w: (-counts[w], w),
        )
        if max_vocab is not None:
            words = words[: max_vocab - len(base)]
        return cls(base + words)

    # ---- properties ----------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return len(self.id_to_token)

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return f"Tokenizer(vocab_size={self.vocab_size})"

    # ---- encoding ------------------------------------------------------------------------
    def _encode_word(self, word: str) -> list[int]:
        ids = self.token_to_id
        if word in ids:
            return [ids[word]]
        pieces = [word[0]] + [_CONTINUATION + ch for ch in word[1:]]
        if all(p in ids for p in pieces):
            return [ids[p] for p in pieces]
        return [self.unk_id]

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (no special tokens added)."""
        out: list[int] = []
        for word in tokenize(text):
            out.extend(self._encode_word(word))
        return out

    def decode(self, ids: Iterable[int], skip_special: bool = False) -> str:
        """Text from ids: tokens joined by spaces, ``##`` pieces glued to the token before them,
        no space before closing punctuation or after opening brackets. ``skip_special`` drops
        the special tokens."""
        parts: list[str] = []
        prev = ""
        for i in ids:
            i = int(i)
            if not 0 <= i < self.vocab_size:
                raise ValueError(f"Tokenizer.decode: id {i} is outside [0, {self.vocab_size})")
            if skip_special and i in self.special_ids:
                continue
            tok = self.id_to_token[i]
            if tok.startswith(_CONTINUATION) and len(tok) > len(_CONTINUATION):
                parts.append(tok[len(_CONTINUATION) :])
            elif parts and tok not in _NO_SPACE_BEFORE and prev not in _NO_SPACE_AFTER:
                parts.append(" " + tok)
            else:
                parts.append(tok)
            prev = tok
        return "".join(parts)

    # ---- saving --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-able description: ``{"kind": "word", "tokens": [...]}``."""
        return {"kind": "word", "tokens": list(self.id_to_token)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Tokenizer:
        if d.get("kind", "word") != "word":
            raise ValueError(f"Tokenizer.from_dict: unknown tokenizer kind {d.get('kind')!r}")
        return cls(d["tokens"])


def make_sequences(
    ids: Sequence[int] | np.ndarray, seq_len: int, add_cls: bool = True, cls_id: int = 2
) -> np.ndarray:
    """Cut a token stream into contiguous, non-overlapping training sequences.

    With ``add_cls`` each row is ``[CLS]`` followed by ``seq_len - 1`` consecutive ids; the tail
    that does not fill a row is dropped.

    Shapes: ``ids (L,)`` -> ``(L // (seq_len - add_cls), seq_len)`` int64.
    """
    body = seq_len - int(add_cls)
    if body < 1:
        raise ValueError(f"make_sequences: seq_len={seq_len} leaves no room for tokens")
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    n = len(ids) // body
    rows = ids[: n * body].reshape(n, body)  # (num_seq, body)
    if add_cls:
        rows = np.concatenate([np.full((n, 1), cls_id, dtype=np.int64), rows], axis=1)
    return rows


def caption_tokens(
    captions: Sequence[str], tokenizer: Tokenizer, context_length: int, add_cls: bool = True
) -> np.ndarray:
    """Encode captions CLIP-style: ``[CLS]? words... [EOT]``, padded with ``[PAD]`` (id 0).

    ``[CLS]`` plays the role of CLIP's start-of-text token. Too-long captions are truncated and
    still end in ``[EOT]``. CLIP's text tower pools the feature at the EOT position; OpenAI CLIP
    finds it with ``argmax(ids)`` because its EOT has the largest id, which ours (4) does not, so
    find it as the position of ``eot_id`` instead: ``eot_positions(tokens, tokenizer.eot_id)``.

    Shapes: ``n`` captions -> ``(n, context_length)`` int64.
    """
    min_len = 1 + int(add_cls)
    if context_length < min_len + 1:
        raise ValueError(f"caption_tokens: context_length={context_length} is too short")
    out = np.full((len(captions), context_length), tokenizer.pad_id, dtype=np.int64)
    for row, text in enumerate(captions):
        ids = tokenizer.encode(text)[: context_length - min_len]
        seq = ([tokenizer.cls_id] if add_cls else []) + ids + [tokenizer.eot_id]
        out[row, : len(seq)] = seq
    return out


def eot_positions(tokens: Any, eot_id: int = Tokenizer.eot_id) -> Any:
    """Index of the first ``eot_id`` in each row (the position CLIP pools), on the array module
    of ``tokens``. Shapes: ``(n, T)`` -> ``(n,)``."""
    return (tokens == eot_id).argmax(axis=-1)
