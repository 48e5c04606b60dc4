"""Building blocks: the adapter f_θ, ADS and the S-XBM memory."""
from smec.modules.ads import AdaptiveDimensionSelection, anneal_tau
from smec.modules.memory import SXBM
from smec.modules.networks import ResidualAdapter, build_adapter

__all__ = ["AdaptiveDimensionSelection", "ResidualAdapter", "SXBM", "anneal_tau", "build_adapter"]
