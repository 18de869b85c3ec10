"""Differentiable spectral and audio losses in JAX (no torch; jit- and grad-safe on any backend).

- `mrstft_distance`: multi-resolution STFT distance, the mean over (n_fft, hop, win) =
  (512, 50, 240), (1024, 120, 600), (2048, 240, 1200) (BigVGAN's M-STFT, auraloss's defaults)
  of spectral convergence + mean |log S_ref - log S_gen| (magnitudes clamped at 1e-5).
  `tnca_jax.metrics.mrstft` reports this same number.
- `multiscale_l1`: L1 over a pyramid of 2x average-pooled spectrograms (no learned network).
- `temporal_l1`: L1 between frame-to-frame differences (onsets, decays, vibrato).
- `waveform_l1`: L1 between waveforms (meaningful only where the phase is grown).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from tnca_jax.contract import SpectralContract, magnitude, stft

MRSTFT_RESOLUTIONS = ((512, 50, 240), (1024, 120, 600), (2048, 240, 1200))
MRSTFT_FLOOR = 1e-5


@functools.lru_cache(maxsize=32)
def analysis_contract(n_fft: int, hop: int, win: int, sample_rate: int) -> SpectralContract:
    """A plain STFT analysis (reflect padding, Hann window) for losses and metrics."""
    return SpectralContract(name=f"stft{n_fft}", sample_rate=sample_rate, n_fft=n_fft,
                            hop_length=hop, win_length=win, n_mels=1)


def stft_magnitude(audio: jax.Array, n_fft: int, hop: int, win: int, sample_rate: int
                   ) -> jax.Array:
    """[..., samples] -> [..., n_fft//2+1, frames]."""
    return magnitude(stft(audio, analysis_contract(n_fft, hop, win, sample_rate)))


def mrstft_distance(reference: jax.Array, generated: jax.Array, sample_rate: int) -> jax.Array:
    """Multi-resolution STFT distance of [..., samples] signals (mean over the batch too)."""
    total = 0.0
    for n_fft, hop, win in MRSTFT_RESOLUTIONS:
        ref = stft_magnitude(reference, n_fft, hop, win, sample_rate)
        gen = stft_magnitude(generated, n_fft, hop, win, sample_rate)
        convergence = (jnp.linalg.norm(ref - gen, axis=(-2, -1))
                       / jnp.linalg.norm(ref, axis=(-2, -1)))
        log_l1 = jnp.mean(jnp.abs(jnp.log(jnp.maximum(ref, MRSTFT_FLOOR))
                                  - jnp.log(jnp.maximum(gen, MRSTFT_FLOOR))), axis=(-2, -1))
        total = total + jnp.mean(convergence + log_l1)
    return total / len(MRSTFT_RESOLUTIONS)


def multiscale_l1(pred: jax.Array, target: jax.Array, levels: int = 4) -> jax.Array:
    """Mean L1 over `levels` 2x average-pooled versions of [..., bins, frames] spectrograms."""
    total = 0.0
    for level in range(levels):
        total = total + jnp.mean(jnp.abs(pred - target))
        if min(pred.shape[-2:]) < 4 or level == levels - 1:
            return total / (level + 1)
        pred, target = _pool2(pred), _pool2(target)
    return total / levels


def _pool2(x: jax.Array) -> jax.Array:
    bins, frames = (x.shape[-2] // 2) * 2, (x.shape[-1] // 2) * 2
    x = x[..., :bins, :frames]
    return x.reshape((*x.shape[:-2], bins // 2, 2, frames // 2, 2)).mean(axis=(-3, -1))


def temporal_l1(pred: jax.Array, target: jax.Array) -> jax.Array:
    """L1 between frame-to-frame changes of [..., bins, frames] spectrograms."""
    return jnp.mean(jnp.abs(jnp.diff(pred, axis=-1) - jnp.diff(target, axis=-1)))


def waveform_l1(reference: jax.Array, generated: jax.Array) -> jax.Array:
    n = min(reference.shape[-1], generated.shape[-1])
    return jnp.mean(jnp.abs(reference[..., :n] - generated[..., :n]))
