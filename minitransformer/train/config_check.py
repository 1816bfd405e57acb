"""Resuming a run with the settings it was started with.

``compare_config(saved, current, allow)`` compares the configuration stored in a checkpoint
(``BaseRecipe.config()``: the preset and every setting, the seed included; the recipe's name
too when the dict holds it) with the one of the recipe about to resume it, and raises
``ConfigMismatch`` listing EVERY setting whose value differs, old and new, unless each of them
is named in ``allow``. Values are compared after a JSON round trip (a checkpoint's sidecar turns
tuples into lists), numbers by value, so ``(0.9, 0.999)`` equals ``[0.9, 0.999]``.

Which settings may change when a run is resumed (``SAFE_CHANGES``, named in ``allow``, i.e.
``--allow-changes`` on the command line):

- ``steps``: extends (or shortens) the run. The schedules (learning rate, DINO's teacher
  momentum and weight decay) are cosines over ``steps``, so from the resumed step on they
  follow the new horizon; the steps already done are not redone.
- ``eval_size``: how many evaluation examples ``evaluate`` uses; training never sees them.
- ``n_eval_train``, ``n_test``: the sizes of the labelled and test sets of the image recipes,
  drawn from other seeds than the training images; training never sees them.

Everything else is never safe, and ``allow`` naming it is an error: the seed and the data
settings (``n_train``, ``dataset``, ``holdout``, ``background``, ``max_vocab``, ...) redraw the
data and its train/test split halfway (test examples would leak into training); the model
sizes change the shapes of the saved weights; the preset, the optimisation and the objective's
settings make the resumed steps those of no run that could be reproduced from one
configuration. To change them, start over (``--overwrite``, or another ``--out``). The logging,
evaluation and checkpoint cadence (``eval_every``, ``save_every``, ``log_every``) are arguments
of ``train``, not settings: they are not stored in the configuration and may differ freely.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import Any

__all__ = ["SAFE_CHANGES", "ConfigMismatch", "compare_config"]

SAFE_CHANGES: tuple[str, ...] = ("steps", "eval_size", "n_eval_train", "n_test")

_MISSING = object()


class ConfigMismatch(ValueError):
    """A resumed run's settings differ from its checkpoint's. ``changes`` maps each differing
    setting to ``(saved, current)`` (``None`` when one side lacks the setting)."""

    def __init__(self, message: str, changes: dict[str, tuple[Any, Any]] | None = None):
        super().__init__(message)
        self.changes = dict(changes or {})


def _normalise(value: Any) -> Any:
    """The value as it reads back from JSON (tuples become lists, NumPy scalars numbers)."""
    try:
        return json.loads(json.dumps(value, default=_to_builtin))
    except (TypeError, ValueError):
        return repr(value)


def _to_builtin(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON-able: {value!r}")


def _same(a: Any, b: Any) -> bool:
    """Equality of normalised values: bools only equal bools, numbers by value (NaN equals
    NaN), lists and dicts element by element."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
            return True
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def _show(value: Any) -> str:
    return "(not set)" if value is _MISSING else json.dumps(value)


def compare_config(saved: dict[str, Any], current: dict[str, Any],
                   allow: Iterable[str] = ()) -> None:
    """Raise ``ConfigMismatch`` naming each setting that differs between ``saved`` (the
    checkpoint's configuration) and ``current`` (the resuming recipe's), old and new values,
    except those in ``allow``.

    ``allow`` may name only settings of ``SAFE_CHANGES`` that exist in either configuration;
    an unknown name or a setting that is never safe to change raises ``ValueError`` (whether or
    not it differs), so a typo in ``--allow-changes`` is never silently ignored.
    """
    if isinstance(allow, str):
        allow = allow.split(",")
    allowed = [a.strip() for a in allow if a.strip()]
    known = list(dict.fromkeys([*saved, *current]))
    unknown = [a for a in allowed if a not in known]
    if unknown:
        raise ValueError(
            f"allow_changes names unknown setting(s) {', '.join(map(repr, unknown))}; the "
            f"run's settings are: {', '.join(known)}")
    unsafe = [a for a in allowed if a not in SAFE_CHANGES]
    if unsafe:
        raise ValueError(
            f"allow_changes: {', '.join(unsafe)} can never change when a run is resumed (the "
            "seed and the data settings redraw the train/test split, the sizes change the "
            "weights' shapes, the rest would make a run no single configuration reproduces); "
            f"only {', '.join(SAFE_CHANGES)} may. To change them, start over (--overwrite)")

    changes: dict[str, tuple[Any, Any]] = {}
    for key in known:
        old = _normalise(saved[key]) if key in saved else _MISSING
        new = _normalise(current[key]) if key in current else _MISSING
        if old is _MISSING or new is _MISSING or not _same(old, new):
            changes[key] = (old, new)
    refused = {k: v for k, v in changes.items() if k not in allowed}
    if not refused:
        return
    listed = ", ".join(f"{k} {_show(o)} -> {_show(n)}" for k, (o, n) in refused.items())
    safe = [k for k in refused if k in SAFE_CHANGES]
    never = [k for k in refused if k not in SAFE_CHANGES]
    hints = []
    if safe:
        hints.append(f"to change {', '.join(safe)} on purpose, resume with --allow-changes "
                     f"{','.join(safe)} (train(..., allow_changes={tuple(safe)!r}))")
    if never:
        hints.append(f"{', '.join(never)} cannot change in a resumed run (only "
                     f"{', '.join(SAFE_CHANGES)} can, e.g. --allow-changes steps to extend "
                     "it): resume with the checkpoint's values, or start over with "
                     "--overwrite (or another --out)")
    raise ConfigMismatch(
        f"cannot resume: {len(refused)} setting(s) differ from the checkpoint's "
        f"(saved -> now): {listed}; " + "; ".join(hints),
        {k: (None if o is _MISSING else o, None if n is _MISSING else n)
         for k, (o, n) in refused.items()})
