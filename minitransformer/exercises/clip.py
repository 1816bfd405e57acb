"""Exercises of the clip notebooks (none yet)."""
