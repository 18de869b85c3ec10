"""What every vocoder shares: the input checks that bind a spectrogram to a contract."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from tnca_jax.contract import ContractMismatchError, SpectralContract

# How far above the contract's full-scale level a log-mel may reach (several partials can
# share a band) before it is taken for another convention.
HEADROOM = 4.0


def check_input(log_mel: jax.Array, required: SpectralContract,
                declared: SpectralContract | None = None) -> jax.Array:
    """Validate a log-mel for a vocoder under `required`: returns it as float32 [B, M, T].

    Raises ContractMismatchError when `declared` (the contract the spectrogram was computed
    under) differs from `required`, when the band count differs, or when the values lie outside
    the contract's log range (a power-dB mel in [-80, 0] given where the natural log of a
    magnitude mel, floored at ln(1e-5) = -11.5, is expected).
    """
    if declared is not None:
        required.require_same(declared, what="the log-mel given to the vocoder")
    log_mel = jnp.asarray(log_mel, jnp.float32)
    if log_mel.ndim == 2:
        log_mel = log_mel[None]
    if log_mel.ndim != 3 or log_mel.shape[1] != required.n_mels:
        raise ContractMismatchError(
            f"vocoder under contract {required.name!r} expects [batch, {required.n_mels}, frames]"
            f", got shape {tuple(log_mel.shape)}")
    low, high = float(jnp.min(log_mel)), float(jnp.max(log_mel))
    if not (jnp.isfinite(low) and jnp.isfinite(high)):
        raise ValueError("the log-mel given to the vocoder contains NaN or Inf")
    floor, top = required.log_min, required.log_max + HEADROOM
    if low < floor - 1e-3 or high > top:
        raise ContractMismatchError(
            f"log-mel values span [{low:.2f}, {high:.2f}] but contract {required.name!r} "
            f"({required.log} of {'power' if required.magnitude_power == 2 else 'magnitude'} "
            f"mel, floor {floor:.2f}) allows [{floor:.2f}, {top:.2f}]: the spectrogram follows "
            "another convention (a power-dB mel?); compute it with tnca_jax.contract.log_mel")
    return log_mel
