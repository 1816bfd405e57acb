"""Every exercise: its reference solution passes its check, at least two wrong answers (in
``tests/exercises/test_<topic>.py``'s ``WRONG_ANSWERS``) fail it, and the check's own
behaviour (success line, not-attempted reminder, unknown names) holds."""

from __future__ import annotations

import importlib

import pytest

from minitransformer import exercises
from minitransformer.exercises._core import TOPICS

NAMES = exercises.names()


def _wrong_answers() -> dict[str, list]:
    found: dict[str, list] = {}
    for topic in TOPICS:
        try:
            module = importlib.import_module(f"tests.exercises.test_{topic}")
        except ModuleNotFoundError:
            continue
        for name, fns in getattr(module, "WRONG_ANSWERS", {}).items():
            found.setdefault(name, []).extend(fns)
    return found


def test_there_are_thirty_exercises_or_more():
    assert len(NAMES) >= 30, f"only {len(NAMES)} exercises: {NAMES}"


@pytest.mark.parametrize("name", NAMES)
def test_the_solution_passes(name, capsys):
    assert exercises.check(name, exercises.solution(name)) is True
    assert f"exercise {name!r}: correct" in capsys.readouterr().out


@pytest.mark.parametrize("name", NAMES)
def test_each_exercise_has_two_wrong_answers_that_fail(name):
    wrong = _wrong_answers().get(name, [])
    assert len(wrong) >= 2, (f"exercise {name!r} has {len(wrong)} wrong answers in "
                             f"tests/exercises/test_*.py; it needs at least 2")


@pytest.mark.parametrize("name", NAMES)
def test_each_exercise_says_what_to_write(name):
    ex = exercises.get(name)
    for field in ("title", "signature", "equation", "library", "notebook", "hint"):
        assert getattr(ex, field).strip(), f"{name}: empty {field}"


def test_an_unattempted_exercise_is_reported_not_raised(capsys):
    def todo(*args, **kwargs):
        raise NotImplementedError

    assert exercises.check(NAMES[0], todo) is False
    assert "not attempted yet" in capsys.readouterr().out


def test_an_exception_in_the_answer_is_reported_with_the_case():
    def broken(*args, **kwargs):
        raise IndexError("index 9 is out of bounds")

    with pytest.raises(AssertionError, match="raised IndexError: index 9"):
        exercises.check(NAMES[0], broken)


def test_an_unknown_name_lists_where_to_look():
    with pytest.raises(KeyError, match="exercises.names"):
        exercises.get("no-such-exercise")


def test_print_solution_shows_the_source(capsys):
    exercises.print_solution(NAMES[0])
    assert "def " in capsys.readouterr().out


def test_compare_explains_structure_shape_and_values():
    import numpy as np

    from minitransformer.exercises import Mismatch, compare

    with pytest.raises(Mismatch, match="expected a tuple of 2"):
        compare((np.zeros(2), np.zeros(2)), np.zeros(2))
    with pytest.raises(Mismatch, match=r"expected shape \(2, 3\), got shape \(3, 2\)"):
        compare(np.zeros((2, 3)), np.zeros((3, 2)))
    with pytest.raises(Mismatch, match=r"worst element at index \(1,\)"):
        compare(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.5, 3.1]))
    with pytest.raises(Mismatch, match="NaN"):
        compare(np.array([1.0]), np.array([np.nan]))
    with pytest.raises(Mismatch, match="elements differ"):
        compare(np.array([True, False]), np.array([True, True]))
    compare(np.array([1.0, -np.inf]), np.array([1.0 + 1e-12, -np.inf]))  # equal enough
