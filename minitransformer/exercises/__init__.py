"""Exercises with checks: the learner writes a function, ``check`` compares it with the
library on random inputs (several shapes, edge cases included) and says what is wrong.

    from minitransformer import exercises

    exercises.names()                       # every exercise, in notebook order
    exercises.get("softmax").title          # what to write, its signature, equation, notebook
    exercises.check("softmax", my_softmax)  # True and one line, or AssertionError + hint
    exercises.solution("softmax")           # the reference answer (try first!)
    exercises.print_solution("softmax")     # its source

The notebooks 00-09 hold the "your turn" cells; each topic module here (``autograd``,
``attention``, ``encoder``, ``vit``, ``mlm``, ``mim``, ``clip``, ``dino``, ``dinov2``) holds
the reference solutions of one notebook group, written in plain NumPy as a learner would,
and the library call each is compared with.
"""

from ._core import Case, Exercise, Mismatch, check, compare, get, names, print_solution, solution

__all__ = ["Case", "Exercise", "Mismatch", "check", "compare", "get", "names",
           "print_solution", "solution"]
