"""Exercises of the dinov2 notebooks (none yet)."""
