"""Vocoders: log-mel under a spectral contract -> waveform.

`load(name, path=None)` returns an object with `.contract` and
`__call__(log_mel [batch, n_mels, frames]) -> [batch, samples]`.
"""

from __future__ import annotations

from tnca_jax.contract import DEFAULT_CONTRACT, SpectralContract, get_contract
from vocoders.griffinlim import GriffinLim

NAMES = ("griffinlim",)


def load(name: str, path: str | None = None, *,
         contract: SpectralContract | str | None = None) -> GriffinLim:
    """Build the vocoder `name`.

    Args:
      name: one of NAMES.
      path: weights (a hub id or local directory) for learned vocoders; unused by griffinlim.
      contract: for weight-free vocoders, the contract to invert (default: the weight-free
        preset). Learned vocoders read theirs from their config.
    """
    if name == "griffinlim":
        if path is not None:
            raise ValueError("griffinlim has no weights: drop vocoder_path")
        return GriffinLim(get_contract(contract or DEFAULT_CONTRACT))
    raise ValueError(f"unknown vocoder {name!r}; choose one of {', '.join(NAMES)}")
