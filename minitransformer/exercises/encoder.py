"""Exercises of the encoder notebooks (none yet)."""
