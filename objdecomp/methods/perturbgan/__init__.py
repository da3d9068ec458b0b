"""PerturbGAN (Bielski & Favaro, NeurIPS 2019): layered StyleGAN with shift perturbation, and the
encoder that segments real images through it."""

from objdecomp.methods.perturbgan.growing import Phase, ProgressiveGrowing
from objdecomp.methods.perturbgan.module import PerturbGAN
from objdecomp.methods.perturbgan.networks import LayeredGenerator, Layers, StyleEncoder

__all__ = ["LayeredGenerator", "Layers", "Phase", "PerturbGAN", "ProgressiveGrowing",
           "StyleEncoder"]
