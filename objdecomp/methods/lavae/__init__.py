"""LAVAE, the location-appearance VAE (Dittadi & Winther 2019)."""

from objdecomp.methods.lavae.module import LAVAE

__all__ = ["LAVAE"]
