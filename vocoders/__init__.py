"""Vocoders: log-mel under a spectral contract -> waveform.

`load(name, path=None)` (`tnca_jax.inverse.load_vocoder`) returns a `Vocoder`: `.contract` and
`__call__(log_mel [batch, n_mels, frames]) -> jax.Array [batch, samples]`. This package holds
the learned torch vocoders (bigvgan, hifigan: the `vocoders` extra) behind
`vocoders.torch_bridge`, imported only when loaded; the weight-free `griffinlim` is part of
`tnca_jax.inverse`.
"""

from __future__ import annotations

from tnca_jax.inverse import VOCODER_NAMES as NAMES
from tnca_jax.inverse import GriffinLim, Vocoder
from tnca_jax.inverse import load_vocoder as load

__all__ = ["NAMES", "GriffinLim", "Vocoder", "load"]
