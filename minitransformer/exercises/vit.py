"""Exercises of the vit notebooks (none yet)."""
