"""Shared by the exercise tests: a wrong answer must fail its check with the hint."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from minitransformer import exercises


def assert_wrong_answer_fails(name: str, wrong: Callable) -> str:
    """``wrong`` fails exercise ``name`` with an AssertionError that names the exercise, the
    failing case and the hint; returns the message."""
    with pytest.raises(AssertionError) as info:
        exercises.check(name, wrong)
    message = str(info.value)
    assert f"exercise {name!r}" in message
    assert "failed on" in message
    assert exercises.get(name).hint in message
    return message


def parametrize_wrong(wrong_answers: dict[str, list[Callable]]):
    """``@parametrize_wrong(WRONG_ANSWERS)``: one test case per (exercise, wrong answer)."""
    pairs = [(name, fn) for name, fns in wrong_answers.items() for fn in fns]
    return pytest.mark.parametrize("name, wrong", pairs,
                                   ids=[f"{n}-{f.__name__}" for n, f in pairs])
