"""ReDO (Chen, Artières, Denoyer, NeurIPS 2019) and its supervised baseline (Fig. 4)."""

from objdecomp.methods.redo.module import ReDO
from objdecomp.methods.redo.networks import MaskNetwork, ReDONetworks, RegionGenerator, ResidualEncoder
from objdecomp.methods.redo.supervised import ReDOSupervised

__all__ = ["MaskNetwork", "ReDO", "ReDONetworks", "ReDOSupervised", "RegionGenerator",
           "ResidualEncoder"]
