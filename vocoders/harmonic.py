"""Where the harmonics are: a frame-rate f0 estimate and a harmonic source, in JAX.

The music vocoder (`vocoders.music`, `Architecture.harmonic`) is told each frame's f0 and
places the partials at its multiples: the STFT of `harmonic_source` (a band-limited pulse
train whose phase integrates f0, as NSF's and DDSP's sine sources, summed in closed form)
gives, under the contract's own framing, a comb whose peaks, main-lobe shapes and phases are
those of exact partials, consistent across bins and frames; the network shapes its depth and
takes its phase where the note is voiced.

f0 comes from the caller (a note's known pitch, a pYIN track) or from `estimate_f0`, which
reads it off a log-magnitude spectrogram; the vocoder gives it the log-mel spread over the STFT
bins (`vocoders.music.mel_envelope`), in training as when vocoding, so that it meets the same
estimates in both (on the held-out notes its median error against pYIN is 1-8 cents): a
harmonic-contrast search over a 10-cent grid (the peaks at
h * f0 against the valleys at (h - 1/2) * f0, which rejects the octave below and above), then
a least-squares fit of f0 to the harmonics' interpolated peaks.

Shapes: log-magnitudes `[..., bins, frames]` (natural log); f0 `[..., frames]` in Hz, with a
voicing flag of the same shape (f0 is meaningless where it is False).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from tnca_jax.contract import SpectralContract

F0_MIN_HZ, F0_MAX_HZ = 55.0, 4200.0  # A1 .. C8
GRID_CENTS = 10.0
SEARCH_HARMONICS = 12  # harmonics scored per candidate
FIT_HARMONICS = 16  # harmonics whose peaks fit f0
NEPER_PER_DB = math.log(10) / 20
SEARCH_RANGE = 40.0 * NEPER_PER_DB  # the search floors log-magnitudes 40 dB below the frame peak
FIT_RANGE = 80.0 * NEPER_PER_DB  # the fit, 80 dB
VOICED_CONTRAST = 1.0  # mean peak-over-valley (natural log, ~8.7 dB) of a voiced frame
VOICED_LEVEL = 60.0 * NEPER_PER_DB  # ... within 60 dB of the loudest frame


def _candidates() -> np.ndarray:
    steps = math.floor(1200 * math.log2(F0_MAX_HZ / F0_MIN_HZ) / GRID_CENTS) + 1
    return (F0_MIN_HZ * 2.0 ** (np.arange(steps) * GRID_CENTS / 1200)).astype(np.float32)


@functools.lru_cache(maxsize=8)
def _contrast_weights(bin_hz: float, bins: int) -> np.ndarray:
    """[candidates, bins]: a candidate's harmonic contrast as a linear map of one frame's
    log-magnitudes. Harmonic h adds the magnitude interpolated at h * f0 and subtracts it at
    (h - 1/2) * f0, weighted 1 / h (the octave below scores half, as its strong contrasts fall
    on its even harmonics; the octave above negative, as its valleys are partials), over the
    usable weight of harmonics below 0.95 Nyquist."""
    candidates = _candidates().astype(np.float64)
    harmonic = np.arange(1, SEARCH_HARMONICS + 1)
    peaks = candidates[:, None] * harmonic / bin_hz  # [C, H], in bins
    weight = (peaks < 0.95 * (bins - 1)) / harmonic
    weight = weight / weight.sum(axis=1, keepdims=True)
    matrix = np.zeros((candidates.size, bins))
    rows = np.arange(candidates.size)[:, None]
    for position, sign in ((peaks, 1.0), (peaks - 0.5 * candidates[:, None] / bin_hz, -1.0)):
        position = np.clip(position, 0.0, bins - 1.0)
        low = np.floor(position).astype(int)
        frac = position - low
        np.add.at(matrix, (rows, low), sign * weight * (1 - frac))
        np.add.at(matrix, (rows, np.minimum(low + 1, bins - 1)), sign * weight * frac)
    return matrix.astype(np.float32)


def sample_bins(values: jax.Array, position: jax.Array) -> jax.Array:
    """`values` [..., bins, frames] linearly interpolated at fractional bins `position`
    [..., K, frames] (clipped to the range)."""
    bins = values.shape[-2]
    position = jnp.clip(position, 0.0, bins - 1.0)
    low = jnp.floor(position).astype(jnp.int32)
    high = jnp.minimum(low + 1, bins - 1)
    frac = position - low
    lead = values.shape[:-2]
    flat = values.reshape((-1, *values.shape[-2:]))
    low_f = low.reshape((flat.shape[0], -1, values.shape[-1]))
    high_f = high.reshape(low_f.shape)
    take = jax.vmap(lambda v, i: jnp.take_along_axis(v, i, axis=0))
    out = (take(flat, low_f) * (1 - frac.reshape(low_f.shape))
           + take(flat, high_f) * frac.reshape(low_f.shape))
    return out.reshape((*lead, *position.shape[-2:]))


def estimate_f0(log_magnitude: jax.Array, contract: SpectralContract
                ) -> tuple[jax.Array, jax.Array]:
    """(f0 [..., frames] in Hz, voiced [..., frames] bool) of a log-magnitude spectrogram
    [..., bins, frames] under the contract's framing (see the module docstring)."""
    bin_hz = contract.sample_rate / contract.n_fft
    nyquist_bin = contract.n_fft // 2
    level = jnp.max(log_magnitude, axis=-2, keepdims=True)  # [..., 1, T]
    floored = jnp.maximum(log_magnitude, level - FIT_RANGE) - level

    # Coarse: the harmonic contrast on a 10-cent grid, every candidate by one product.
    candidates = _candidates()
    weights = jnp.asarray(_contrast_weights(bin_hz, log_magnitude.shape[-2]))
    score = jnp.einsum("cf,...ft->...ct", weights, jnp.maximum(floored, -SEARCH_RANGE))
    best = jnp.argmax(score, axis=-2)  # [..., T]
    coarse = jnp.asarray(candidates)[best]
    contrast_best = jnp.max(score, axis=-2)

    # Fine: each harmonic's peak (the largest of the 5 bins around h * coarse, parabolic
    # interpolation of the log-magnitude), then f0 = sum(w h p) / sum(w h^2).
    fit = jnp.arange(1, FIT_HARMONICS + 1, dtype=jnp.float32)[:, None]  # [H, 1]
    centre = jnp.round(fit * coarse[..., None, :] / bin_hz)  # [..., H, T]
    offsets = jnp.arange(-2, 3, dtype=jnp.float32)
    around = jnp.stack([sample_bins(floored, centre + o) for o in offsets], axis=-1)  # [..., H,T,5]
    top = jnp.argmax(around, axis=-1)
    top = jnp.clip(top, 1, 3)
    left = jnp.take_along_axis(around, (top - 1)[..., None], -1)[..., 0]
    mid = jnp.take_along_axis(around, top[..., None], -1)[..., 0]
    right = jnp.take_along_axis(around, (top + 1)[..., None], -1)[..., 0]
    curvature = left - 2 * mid + right
    shift = jnp.where(curvature < -1e-6, 0.5 * (left - right) / jnp.minimum(curvature, -1e-6),
                      0.0)
    peak = centre + (top - 2) + jnp.clip(shift, -0.5, 0.5)  # [..., H, T], in bins
    inside = (centre + 3 < nyquist_bin) & (jnp.abs(peak / fit - coarse[..., None, :] / bin_hz)
                                           < 0.5 * coarse[..., None, :] / bin_hz / fit)
    strength = jnp.exp(mid) * inside
    fine = (jnp.sum(strength * fit * peak, axis=-2)
            / jnp.maximum(jnp.sum(strength * fit**2, axis=-2), 1e-12)) * bin_hz
    f0 = jnp.where(jnp.abs(jnp.log2(jnp.maximum(fine, 1e-3) / coarse)) < GRID_CENTS / 1200,
                   fine, coarse)
    loudest = jnp.max(level[..., 0, :], axis=-1, keepdims=True)
    voiced = (contrast_best > VOICED_CONTRAST) & (level[..., 0, :] > loudest - VOICED_LEVEL)
    return f0, voiced


def harmonic_source(f0: jax.Array, voiced: jax.Array, contract: SpectralContract) -> jax.Array:
    """A band-limited pulse train [..., frames * hop] following `f0` [..., frames] (Hz, frame
    centres), silent where not `voiced`: sum over h of cos(h * phi) for every h * f0 below
    Nyquist, phi the integral of 2 pi f0, by the closed form of the Dirichlet kernel, divided by
    the number of harmonics (peak 1)."""
    hop = contract.hop_length
    frames = f0.shape[-1]
    f0 = jnp.where(voiced, f0, 0.0)
    # f0 per sample: linear between frame centres ((t + 1/2) * hop), held beyond the ends.
    centres = (np.arange(frames) + 0.5) * hop
    at = np.arange(frames * hop) + 0.5
    upper = np.clip(np.searchsorted(centres, at), 1, max(frames - 1, 1))
    lower = upper - 1
    frac = np.clip((at - centres[lower]) / hop, 0.0, 1.0).astype(np.float32)
    per_sample = f0[..., lower] * (1 - frac) + f0[..., np.minimum(upper, frames - 1)] * frac
    on = jnp.repeat(voiced, hop, axis=-1) & (per_sample > 0)
    phase = 2 * jnp.pi * jnp.cumsum(per_sample / contract.sample_rate, axis=-1)
    phase = jnp.mod(phase, 2 * jnp.pi)
    count = jnp.floor(0.5 * contract.sample_rate / jnp.maximum(per_sample, F0_MIN_HZ))
    half = 0.5 * phase
    sin_half = jnp.sin(half)
    near_zero = jnp.abs(sin_half) < 1e-4
    kernel = jnp.where(near_zero, count,
                       (jnp.sin((count + 0.5) * phase) / jnp.where(near_zero, 1.0, 2 * sin_half)
                        - 0.5))
    return jnp.where(on, kernel / count, 0.0)
