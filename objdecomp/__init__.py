"""objdecomp: unsupervised object decomposition methods on one Lightning stack."""

from objdecomp.types import ContractError, Decomposition, check_batch

__all__ = ["ContractError", "Decomposition", "check_batch"]
__version__ = "0.1.0"
