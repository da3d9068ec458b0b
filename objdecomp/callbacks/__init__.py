"""Callbacks shared by every method: pictures, results, checkpoints."""
