"""CIS (Yang, Chen, Soatto, CVPR 2020): contextual information separation and object VAEs."""

from objdecomp.methods.cis.module import CIS

__all__ = ["CIS"]
