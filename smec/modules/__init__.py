"""Building blocks: the adapter f_θ, ADS and the S-XBM memory."""
from smec.modules.adapter import ResidualAdapter, build_adapter
from smec.modules.ads import AdaptiveDimensionSelection, anneal_tau
from smec.modules.memory import SXBM

__all__ = ["AdaptiveDimensionSelection", "ResidualAdapter", "SXBM", "anneal_tau", "build_adapter"]
