"""The machinery behind the exercises: a registry, and a check that compares a learner's
function with the library on random inputs and explains a mismatch in plain words.

An exercise is registered with the ``@exercise`` decorator on its reference solution::

    @exercise(
        "softmax",
        title="the softmax of each row: exp(x - max) / sum exp(x - max)",
        signature="softmax(x) -> array, x (..., K)",
        equation="eq. 2 (the softmax inside attention)",
        library="F.softmax",
        notebook="01_self_attention",
        hint="subtract the row's max before exp, and sum over the last axis only",
        cases=lambda rng: [Case("a (3, 4) matrix", (rng.standard_normal((3, 4)),)), ...],
        expected=lambda x: F.softmax(mt.tensor(x)).numpy(),
    )
    def softmax(x):
        e = np.exp(x - x.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)

``check(name, fn)`` draws the cases from a fixed seed, calls ``fn`` on a copy of each case's
inputs, and compares what comes back with ``expected`` (the library, computed in float64):
structure and shapes first, then values. Exercises whose answer is random (BERT's 80/10/10
masking, MAE's random masking) give a ``verify`` function instead, which checks the
properties the answer must have over many draws.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import backend

__all__ = [
    "Case",
    "Exercise",
    "Mismatch",
    "check",
    "compare",
    "default_rng_untouched",
    "exercise",
    "get",
    "names",
    "print_solution",
    "solution",
]

SEED = 20241206  # the cases of every check are drawn from this seed: the same every run


@dataclass(frozen=True)
class Case:
    """One input of a check: a label a learner can read (what is special about it), the
    positional arguments, and keyword arguments."""

    label: str
    args: tuple
    kwargs: dict = field(default_factory=dict)

    def describe(self) -> str:
        shapes = ", ".join(_describe_value(a) for a in self.args)
        if self.kwargs:
            shapes += ", " + ", ".join(f"{k}={_describe_value(v)}" for k, v in self.kwargs.items())
        return f"{self.label}: inputs ({shapes})"


class Mismatch(Exception):
    """Raised inside a comparison or a ``verify`` function: the reason, in plain words."""


@dataclass(frozen=True)
class Exercise:
    """A registered exercise. ``solution`` is the reference answer, written as a learner
    would (plain NumPy); ``expected`` computes the answer with the library (defaults to
    ``solution``); ``verify(fn, rng)`` replaces the case-by-case comparison for answers that
    are random."""

    name: str
    title: str
    signature: str
    equation: str
    library: str
    notebook: str
    hint: str
    solution: Callable
    cases: Callable[[np.random.Generator], Sequence[Case]] | None = None
    expected: Callable | None = None
    verify: Callable[[Callable, np.random.Generator], None] | None = None
    rtol: float = 1e-6
    atol: float = 1e-8


_REGISTRY: dict[str, Exercise] = {}


def exercise(name: str, *, title: str, signature: str, equation: str, library: str,
             notebook: str, hint: str, cases: Callable | None = None,
             expected: Callable | None = None, verify: Callable | None = None,
             rtol: float = 1e-6, atol: float = 1e-8) -> Callable[[Callable], Callable]:
    """Register the decorated function as the reference solution of exercise ``name``."""
    if (cases is None) == (verify is None):
        raise TypeError(f"exercise {name!r}: give either cases (compared with expected) or "
                        "verify (a property check), not both or neither")

    def register(fn: Callable) -> Callable:
        if name in _REGISTRY:
            raise ValueError(f"exercise {name!r} is registered twice")
        _REGISTRY[name] = Exercise(name, title, signature, equation, library, notebook, hint,
                                   fn, cases, expected, verify, rtol, atol)
        return fn

    return register


TOPICS = ("autograd", "attention", "encoder", "vit", "mlm", "mim", "clip", "dino", "dinov2")


def _load_all() -> None:
    """Import the topic modules (one per notebook group); importing one registers its
    exercises."""
    import importlib

    for topic in TOPICS:
        importlib.import_module(f"{__package__}.{topic}")


def names() -> list[str]:
    """The names of all exercises, in the order of the notebooks."""
    _load_all()
    return sorted(_REGISTRY, key=lambda n: (_REGISTRY[n].notebook, _order(n)))


def _order(name: str) -> int:
    return list(_REGISTRY).index(name)


def get(name: str) -> Exercise:
    """The exercise called ``name`` (title, signature, equation, notebook, hint, ...)."""
    _load_all()
    if name not in _REGISTRY:
        close = [n for n in _REGISTRY if name.lower() in n or n in name.lower()]
        more = f"; did you mean {close}?" if close else ""
        raise KeyError(f"no exercise called {name!r}{more} exercises.names() lists all "
                       f"{len(_REGISTRY)}")
    return _REGISTRY[name]


def solution(name: str) -> Callable:
    """The reference solution of exercise ``name`` (a function; ``print_solution`` shows
    its source). For instructors and tests: try the exercise first."""
    return get(name).solution


def print_solution(name: str) -> None:
    """Print the source of the reference solution of exercise ``name``."""
    print(inspect.getsource(get(name).solution))


@contextmanager
def default_rng_untouched() -> Iterator[None]:
    """Building a module draws its initial weights from the library's default CPU generator;
    put the generator's state back afterwards, so that running a check in a notebook does not
    change what the later cells draw."""
    gen = backend.default_rng("cpu")
    state = gen.bit_generator.state
    try:
        yield
    finally:
        gen.bit_generator.state = state


def check(name: str, fn: Callable) -> bool:
    """Check the learner's ``fn`` against exercise ``name``.

    Returns True and prints one line when every case agrees. Raises ``AssertionError`` with
    the failing case (its shapes), what was expected and what came back (shapes first, then
    values), the worst element and its index, and a hint. A function that still raises
    ``NotImplementedError`` has not been attempted: that prints a reminder and returns False.
    """
    ex = get(name)
    with default_rng_untouched():
        passed = _run_check(ex, fn)
    if passed:
        print(f"exercise {name!r}: correct. You wrote {ex.title}: {ex.equation}, as "
              f"{ex.library} computes it.")
    return passed


def _run_check(ex: Exercise, fn: Callable) -> bool:
    """True when every case agrees, False when ``fn`` is not attempted; else AssertionError."""
    rng = np.random.default_rng(SEED)
    try:
        if ex.verify is not None:
            try:
                ex.verify(fn, rng)
            except Mismatch as e:
                _fail(ex, str(e))
        else:
            cases = list(ex.cases(rng))
            expected_fn = ex.expected or ex.solution
            for i, case in enumerate(cases):
                want = expected_fn(*copy.deepcopy(case.args), **copy.deepcopy(case.kwargs))
                try:
                    got = fn(*copy.deepcopy(case.args), **copy.deepcopy(case.kwargs))
                except NotImplementedError:
                    raise
                except Exception as e:
                    _fail(ex, f"case {i + 1} of {len(cases)}, {case.describe()}\n"
                              f"your function raised {type(e).__name__}: {e}")
                try:
                    compare(want, got, ex.rtol, ex.atol)
                except Mismatch as e:
                    _fail(ex, f"case {i + 1} of {len(cases)}, {case.describe()}\n{e}")
    except NotImplementedError:
        print(f"exercise {ex.name!r}: not attempted yet (your function raises "
              f"NotImplementedError). Write it, then run this cell again.")
        return False
    return True


def _fail(ex: Exercise, detail: str) -> None:
    raise AssertionError(f"exercise {ex.name!r} ({ex.signature}) failed on {detail}\n"
                         f"hint: {ex.hint}") from None


# --------------------------------------------------------------------------------------------
# Comparing an answer with the expected one
# --------------------------------------------------------------------------------------------
def _describe_value(v: Any) -> str:
    if hasattr(v, "shape") and hasattr(v, "dtype"):
        return f"array {tuple(v.shape)} {v.dtype}"
    if isinstance(v, (tuple, list)):
        inner = ", ".join(_describe_value(x) for x in v[:4])
        return f"{type(v).__name__} of {len(v)}: ({inner}{', ...' if len(v) > 4 else ''})"
    if isinstance(v, np.random.Generator):
        return "rng"
    return repr(v) if len(repr(v)) < 40 else type(v).__name__


def compare(want: Any, got: Any, rtol: float = 1e-6, atol: float = 1e-8,
            where: str = "the output") -> None:
    """Raise ``Mismatch`` saying how ``got`` differs from ``want``: structure, shape, dtype
    kind, then values (the worst element, its index and both values)."""
    if isinstance(want, (tuple, list)):
        if not isinstance(got, (tuple, list)) or len(got) != len(want):
            raise Mismatch(f"{where}: expected a tuple of {len(want)} "
                           f"({_describe_value(want)}), got {_describe_value(got)}")
        for i, (w, g) in enumerate(zip(want, got)):
            compare(w, g, rtol, atol, f"{where}[{i}]")
        return
    if hasattr(got, "data") and hasattr(got, "requires_grad"):  # a Tensor: compare its array
        got = got.numpy()
    if not isinstance(got, (np.ndarray, np.generic, int, float, bool)):
        raise Mismatch(f"{where}: expected {_describe_value(want)}, got "
                       f"{type(got).__name__} {_describe_value(got)}")
    w, g = np.asarray(want), np.asarray(got)
    if w.shape != g.shape:
        raise Mismatch(f"{where}: expected shape {w.shape}, got shape {g.shape}"
                       + _transposed_note(w, g))
    if w.dtype.kind == "b" or w.dtype.kind in "iu":
        if g.dtype.kind not in "biu":
            raise Mismatch(f"{where}: expected {w.dtype} values, got {g.dtype}")
        wrong = w != g
        if wrong.any():
            idx = tuple(int(i) for i in np.argwhere(wrong)[0])
            raise Mismatch(f"{where}: {int(wrong.sum())} of {w.size} elements differ; the "
                           f"first at index {idx}: expected {w[idx].item()!r}, "
                           f"got {g[idx].item()!r}")
        return
    g = g.astype(np.float64)
    w = w.astype(np.float64)
    bad_nan = np.isnan(g) & ~np.isnan(w)
    if bad_nan.any():
        idx = tuple(int(i) for i in np.argwhere(bad_nan)[0])
        raise Mismatch(f"{where}: {int(bad_nan.sum())} NaN value(s) where numbers were "
                       f"expected; the first at index {idx} (expected {w[idx]:.6g})")
    with np.errstate(invalid="ignore"):  # inf - inf: matching infinities are set to 0 below
        err = np.abs(g - w)
        err = np.where(np.isnan(w) & np.isnan(g), 0.0, err)
        err = np.where(np.isinf(w) & (g == w), 0.0, err)
        excess = err - (atol + rtol * np.abs(np.where(np.isinf(w), 0.0, w)))
    if (excess > 0).any() or np.isnan(excess).any():
        flat = int(np.nanargmax(np.where(np.isnan(excess), np.inf, excess)))
        idx = np.unravel_index(flat, w.shape) if w.ndim else ()
        idx = tuple(int(i) for i in idx)
        n_bad = int(((excess > 0) | np.isnan(excess)).sum())
        ratio = _ratio_note(w, g)
        raise Mismatch(
            f"{where}: shape {w.shape} is right, but {n_bad} of {max(w.size, 1)} values are "
            f"off (tolerance rtol={rtol:g}, atol={atol:g}).\n"
            f"worst element at index {idx}: expected {w[idx]:.6g}, got {g[idx]:.6g} "
            f"(error {err[idx]:.3g}){ratio}")


def _transposed_note(w: np.ndarray, g: np.ndarray) -> str:
    if sorted(w.shape) == sorted(g.shape):
        return " (the same sizes in another order: a transpose or a wrong axis?)"
    if w.size == g.size:
        return " (the same number of elements: a reshape that went wrong?)"
    return ""


def _ratio_note(w: np.ndarray, g: np.ndarray) -> str:
    """Say so when the answer is the expected one times a constant (a missing scale)."""
    nz = np.abs(w) > 1e-12
    if nz.sum() < 2 or not np.isfinite(g).all():
        return ""
    r = g[nz] / w[nz]
    if np.allclose(r, r[0], rtol=1e-6) and not np.isclose(r[0], 1.0):
        return f"\nevery value is {r[0]:.6g} times the expected one: a missing or extra scale?"
    return ""
