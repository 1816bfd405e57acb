"""Exercises of the mim notebooks (none yet)."""
