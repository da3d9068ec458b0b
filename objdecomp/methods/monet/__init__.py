"""MONet (Burgess et al. 2019): recurrent attention and a component VAE; and CIS's Table 1 form."""

from objdecomp.methods.monet.module import MONet, MONetBase, MONetSegmentation
from objdecomp.methods.monet.networks import ComponentEncoder, ComponentVAE

__all__ = ["ComponentEncoder", "ComponentVAE", "MONet", "MONetBase", "MONetSegmentation"]
