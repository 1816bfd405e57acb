"""Exercises of the mlm notebooks (none yet)."""
