"""tnca_jax: timbre generation with neural cellular automata in JAX/Flax."""

from tnca_jax import report
from tnca_jax.contract import PRESETS, ContractMismatchError, SpectralContract, get_contract
from tnca_jax.generate import GenerationResult, generate

__all__ = ["PRESETS", "ContractMismatchError", "GenerationResult", "SpectralContract",
           "generate", "get_contract", "report"]
