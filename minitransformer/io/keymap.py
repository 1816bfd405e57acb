"""Rename tables for checkpoint converters: ``(source key, our key, transform)`` rows.

A row's keys may hold ``{i}`` (a block index, the same number on both sides). The table maps a
checkpoint key to ours (``target``) and back (``source``, for error messages that name the key
a missing parameter should have come from). The transforms change orientation only:

=========  =========================================================================
transform  what it does (torch layout -> ours)
=========  =========================================================================
``copy``   nothing
``linear`` a torch ``Linear`` weight (out, in) -> (in, out), applied as ``x @ W``
``conv``   a stride-p ``Conv2d`` kernel (D, C, p, p) -> (C*p*p, D): the Linear on patches
           flattened in (channel, row, col) order, ``nn.PatchEmbed``'s order
``token``  a (D,) vector -> (1, 1, D) (CLIP's ``class_embedding`` -> ``cls_token``)
``table``  a (T, D) table -> (1, T, D) (CLIP's / BERT's position tables -> ``pos_embed``)
=========  =========================================================================
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Converted", "KeyMap", "transform"]


def _linear(key: str, w: np.ndarray) -> np.ndarray:
    if w.ndim != 2:
        raise ValueError(f"{key}: a Linear weight should be 2-D (out, in), got shape {w.shape}")
    return w.T  # (out, in) -> (in, out)


def _conv(key: str, w: np.ndarray) -> np.ndarray:
    if w.ndim != 4 or w.shape[2] != w.shape[3]:
        raise ValueError(f"{key}: a patch kernel should be (D, C, p, p), got shape {w.shape}")
    return w.reshape(w.shape[0], -1).T  # (D, C, p, p) -> (D, C*p*p) -> (C*p*p, D)


def _token(key: str, w: np.ndarray) -> np.ndarray:
    if w.ndim != 1:
        raise ValueError(f"{key}: expected a (D,) vector, got shape {w.shape}")
    return w.reshape(1, 1, -1)  # (D,) -> (1, 1, D)


def _table(key: str, w: np.ndarray) -> np.ndarray:
    if w.ndim != 2:
        raise ValueError(f"{key}: expected a (T, D) table, got shape {w.shape}")
    return w[None]  # (T, D) -> (1, T, D)


_TRANSFORMS: dict[str, Callable[[str, np.ndarray], np.ndarray]] = {
    "copy": lambda key, w: w, "linear": _linear, "conv": _conv, "token": _token,
    "table": _table,
}


def transform(how: str, key: str, w: np.ndarray) -> np.ndarray:
    """Apply the named transform to the checkpoint array ``w`` stored under ``key``."""
    return np.array(_TRANSFORMS[how](key, w), order="C")  # a contiguous copy


def _pattern(template: str) -> re.Pattern[str]:
    return re.compile("^" + re.escape(template).replace(r"\{i\}", r"(\d+)") + "$")


@dataclass
class Converted:
    """A converter's result: ``arrays`` (our key -> array, our layout), ``origin`` (our key ->
    the checkpoint key(s) it came from), ``unknown`` (checkpoint keys with no place in the
    model), ``dropped`` (checkpoint key -> why it was knowingly left out) and ``source_of``
    (our key -> the checkpoint key it should come from, for naming missing keys)."""

    arrays: dict[str, np.ndarray]
    origin: dict[str, str]
    unknown: list[str]
    dropped: dict[str, str]
    source_of: Callable[[str], str | None]


@dataclass(frozen=True)
class _Row:
    src: str
    dst: str
    how: str


class KeyMap:
    """A rename table. ``rows``: ``(source template, our template, transform)``."""

    def __init__(self, rows: Sequence[tuple[str, str, str]]):
        self.rows = [_Row(*r) for r in rows]
        for r in self.rows:
            if r.how not in _TRANSFORMS:
                raise ValueError(f"KeyMap: unknown transform {r.how!r} for {r.src}")
        self._src = [(_pattern(r.src), r) for r in self.rows]
        self._dst = [(_pattern(r.dst), r) for r in self.rows]

    def target(self, key: str) -> tuple[str, str] | None:
        """``(our key, transform)`` for a checkpoint key, or None when no row matches."""
        for pat, r in self._src:
            m = pat.match(key)
            if m:
                return (r.dst.replace("{i}", m.group(1)) if m.groups() else r.dst), r.how
        return None

    def source(self, ours: str) -> str | None:
        """The checkpoint key one of our keys comes from, or None."""
        for pat, r in self._dst:
            m = pat.match(ours)
            if m:
                return r.src.replace("{i}", m.group(1)) if m.groups() else r.src
        return None

    def convert(self, sd: dict[str, np.ndarray]) -> Converted:
        """Rename and re-orient every key a row matches; the others are ``unknown``."""
        out = Converted({}, {}, [], {}, self.source)
        for key, w in sd.items():
            hit = self.target(key)
            if hit is None:
                out.unknown.append(key)
                continue
            ours, how = hit
            out.arrays[ours] = transform(how, key, np.asarray(w))
            out.origin[ours] = key
        return out

    def table(self) -> list[tuple[str, str, str]]:
        """The rows, for documentation: ``(source, ours, transform)``."""
        return [(r.src, r.dst, r.how) for r in self.rows]
