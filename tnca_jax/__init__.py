"""tnca_jax: timbre generation with neural cellular automata in JAX/Flax.

The names below are imported on first use, so `import tnca_jax` (and `import vocoders`) stays
fast and a submodule pulls in only what it needs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "generate": "tnca_jax.generation",
    "Erase": "tnca_jax.generation",
    "play": "tnca_jax.phrases",
    "GenerationResult": "tnca_jax.generation",
    "PRESETS": "tnca_jax.contract",
    "ContractMismatchError": "tnca_jax.contract",
    "MelContract": "tnca_jax.contract",
    "SpectralContract": "tnca_jax.contract",
    "get_contract": "tnca_jax.contract",
    "UserError": "tnca_jax.errors",
}
_SUBMODULES = ("report",)

__all__ = ["PRESETS", "ContractMismatchError", "Erase", "GenerationResult", "MelContract",
           "SpectralContract", "UserError", "generate", "get_contract", "play", "report"]

if TYPE_CHECKING:
    from tnca_jax import report
    from tnca_jax.contract import (
        PRESETS,
        ContractMismatchError,
        MelContract,
        SpectralContract,
        get_contract,
    )
    from tnca_jax.errors import UserError
    from tnca_jax.generation import Erase, GenerationResult, generate
    from tnca_jax.phrases import play


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"tnca_jax.{name}")
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'tnca_jax' has no attribute {name!r}")
