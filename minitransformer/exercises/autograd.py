"""Exercises of the autograd notebooks (none yet)."""
