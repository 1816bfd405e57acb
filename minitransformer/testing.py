"""Test helpers for users and for the test suite: ``gradcheck``."""

from .autograd.gradcheck import GradcheckError, gradcheck

__all__ = ["GradcheckError", "gradcheck"]
