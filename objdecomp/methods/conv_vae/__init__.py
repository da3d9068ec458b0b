"""The convolutional β-VAE, LAVAE's baseline (Dittadi & Winther 2019, appendix B)."""

from objdecomp.methods.conv_vae.module import ConvVAE
from objdecomp.methods.conv_vae.networks import Decoder, Encoder

__all__ = ["ConvVAE", "Decoder", "Encoder"]
