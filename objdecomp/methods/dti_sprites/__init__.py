"""DTI-Sprites (Monnier, Vincent, Ponce, Aubry, ICCV 2021): layered decomposition into sprites."""

from objdecomp.methods.dti_sprites.module import DTISprites
from objdecomp.methods.dti_sprites.networks import DTISpritesNet, Prediction, Sprites
from objdecomp.methods.dti_sprites.selection import exhaustive_selection, greedy_selection

__all__ = ["DTISprites", "DTISpritesNet", "Prediction", "Sprites", "exhaustive_selection",
           "greedy_selection"]
