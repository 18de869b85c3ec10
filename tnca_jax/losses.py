"""Every loss in JAX (no torch; jit- and grad-safe on any backend), and the TNCA's training
loss (`tnca_loss`) that combines them.

Audio and spectral distances:
- `mrstft_distance`: multi-resolution STFT distance, the mean over (n_fft, hop, win) =
  (512, 50, 240), (1024, 120, 600), (2048, 240, 1200) (BigVGAN's M-STFT, auraloss's defaults)
  of spectral convergence + mean |log S_ref - log S_gen| (magnitudes clamped at 1e-5).
  `tnca_jax.metrics.mrstft` reports this same number.
- `multiscale_l1`: L1 over a pyramid of 2x average-pooled spectrograms (no learned network).
- `temporal_l1`: L1 between frame-to-frame differences (onsets, decays, vibrato).
- `waveform_l1`: L1 between waveforms (meaningful only where the phase is grown).

The TNCA's terms (grids normalised to [0, 1], see `tnca_jax.representations`):
- `spectrogram_loss`: frequency-weighted L1 between the shown and the target grid (weight 1);
- `growth_loss`: alpha towards 1 everywhere; `overflow_penalty`: channels outside [-1, 1];
- with their weights, `multiscale_l1`, `temporal_l1`, and the audio losses on the grown note
  rendered differentiably (`Representation.audio`).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from tnca_jax import dsp
from tnca_jax.contract import SpectralContract
from tnca_jax.model import ALPHA
from tnca_jax.representations import Representation

MRSTFT_RESOLUTIONS = ((512, 50, 240), (1024, 120, 600), (2048, 240, 1200))
MRSTFT_FLOOR = 1e-5


@functools.lru_cache(maxsize=32)
def analysis_contract(n_fft: int, hop: int, win: int, sample_rate: int) -> SpectralContract:
    """A plain STFT analysis (reflect padding, Hann window) for losses and metrics."""
    return SpectralContract(name=f"stft{n_fft}", sample_rate=sample_rate, n_fft=n_fft,
                            hop_length=hop, win_length=win)


def mrstft_distance(reference: jax.Array, generated: jax.Array, sample_rate: int) -> jax.Array:
    """Multi-resolution STFT distance of [..., samples] signals (mean over the batch too)."""
    total = 0.0
    for n_fft, hop, win in MRSTFT_RESOLUTIONS:
        contract = analysis_contract(n_fft, hop, win, sample_rate)
        ref = dsp.stft_magnitude(reference, contract)
        gen = dsp.stft_magnitude(generated, contract)
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


# ------------------------------------------------------------------------ the TNCA's loss
def frequency_weights(target_unit: jax.Array) -> jax.Array:
    """Loss weights [n_values, F, T] for a normalised target [n_values, F, T].

    Value 0 (the level): per band, mean 1, bands with more energy weigh more (0.5 to ~1.5+).
    Other values (a phase: instantaneous frequency) weigh by the cell's own level, mean 1: the
    phase of a silent cell is not heard.
    """
    level = target_unit[0]
    band = level.mean(axis=1)
    weights = [jnp.broadcast_to((0.5 + 0.5 * band / jnp.maximum(band.mean(), 1e-6))[:, None],
                                level.shape)]
    weights += [level / jnp.maximum(level.mean(), 1e-6)] * (target_unit.shape[0] - 1)
    return jnp.stack(weights)


def spectrogram_loss(shown: jax.Array, target_unit: jax.Array, weights: jax.Array) -> jax.Array:
    """Per-sample weighted L1 of the shown representation: [B, V, F, T] -> [B]."""
    return jnp.mean(weights * jnp.abs(shown - target_unit), axis=(1, 2, 3))


def growth_loss(states: jax.Array) -> jax.Array:
    """Mean shortfall of alpha below 1: the whole grid should be alive (Growing NCA's alpha
    target). Only living cells carry a gradient, so this keeps the growth front spreading."""
    return jnp.mean(jax.nn.relu(1.0 - states[..., ALPHA]))


def overflow_penalty(states: jax.Array) -> jax.Array:
    """Mean squared excursion of all channels outside [-1, 1]."""
    return jnp.mean((states - jnp.clip(states, -1.0, 1.0)) ** 2)


@dataclasses.dataclass(frozen=True)
class LossWeights:
    """The TNCA loss's weights (a config's `train` section; 0 turns a term off)."""

    growth: float
    overflow: float
    multiscale: float = 0.0
    temporal: float = 0.0
    audio: float = 0.0
    waveform: float = 0.0
    audio_griffinlim_iterations: int = 4

    @classmethod
    def from_config(cls, train: ml_collections.ConfigDict) -> LossWeights:
        return cls(growth=train.growth_weight, overflow=train.overflow_weight,
                   multiscale=train.get("multiscale_weight", 0.0),
                   temporal=train.get("temporal_weight", 0.0),
                   audio=train.get("audio_weight", 0.0),
                   waveform=train.get("waveform_weight", 0.0),
                   audio_griffinlim_iterations=train.get("audio_griffinlim_iterations", 4))

    @property
    def uses_audio(self) -> bool:
        return bool(self.audio or self.waveform)


@dataclasses.dataclass(frozen=True)
class TncaTarget:
    """What the TNCA's loss compares a grown grid with (build it with `create`).

    Attributes:
      unit: [n_values, F, T] the target representation normalised to [0, 1].
      weights: [n_values, F, T] its `frequency_weights`.
      representation: its representation (for the audio losses).
      audio: [samples] the recording (for the audio losses), else None.
      vocoder: a differentiable vocoder (log-mels [B, n_mels, frames] -> audio) the audio
        losses render a mel grid through (`Inverse.differentiable_vocoder`: the music
        vocoder), else None: the representation's own `audio` (unrolled Griffin-Lim).
    """

    unit: jax.Array
    weights: jax.Array
    representation: Representation
    audio: np.ndarray | None = None
    vocoder: Callable[[jax.Array], jax.Array] | None = None

    @classmethod
    def create(cls, unit: jax.Array, representation: Representation,
               audio: np.ndarray | None = None,
               vocoder: Callable[[jax.Array], jax.Array] | None = None) -> TncaTarget:
        unit = jnp.asarray(unit)
        return cls(unit, frequency_weights(unit), representation, audio, vocoder)


def tnca_loss(shown: jax.Array, grown: jax.Array, target: TncaTarget, weights: LossWeights,
              key: jax.Array) -> jax.Array:
    """The TNCA's training loss of a batch.

    Args:
      shown: [B, n_values, F, T] the grids the cells show, normalised (`TNCA.spectrogram`).
      grown: [B, F, T, C] the grown states (for the growth and overflow terms).
      target: what to grow.
      weights: the terms' weights.
      key: randomness of the differentiable rendering (Griffin-Lim's starting phase).
    """
    unit = target.unit
    loss = (spectrogram_loss(shown, unit, target.weights).mean()
            + weights.growth * growth_loss(grown) + weights.overflow * overflow_penalty(grown))
    if weights.multiscale:
        loss += weights.multiscale * multiscale_l1(shown[:, 0], unit[0])
    if weights.temporal:
        loss += weights.temporal * temporal_l1(shown[:, 0], unit[0])
    if weights.uses_audio:
        loss += audio_loss(shown, target, weights, key)
    return loss


def audio_loss(shown: jax.Array, target: TncaTarget, weights: LossWeights, key: jax.Array
               ) -> jax.Array:
    """The weighted audio-domain losses of normalised grids [B, V, F, T]: the note rendered
    differentiably (`Representation.audio`), its multi-resolution STFT distance to the
    recording, and its waveform L1 (for representations that grow the phase)."""
    if target.audio is None:
        raise ValueError("audio-domain losses need the target recording")
    representation = target.representation
    if target.vocoder is not None:
        audio = target.vocoder(representation.from_unit(shown)[..., 0, :, :])
    else:
        audio = representation.audio(representation.from_unit(shown), key,
                                     griffinlim_iterations=weights.audio_griffinlim_iterations)
    reference = jnp.asarray(target.audio)[None]
    loss = weights.audio * mrstft_distance(reference, audio,
                                           representation.contract.sample_rate)
    if weights.waveform:
        loss = loss + weights.waveform * waveform_l1(reference, audio)
    return loss
