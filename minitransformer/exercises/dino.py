"""Exercises of the dino notebooks (none yet)."""
