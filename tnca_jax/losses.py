"""Every loss in JAX (no torch; jit- and grad-safe on any backend), and the TNCA's training
loss (`tnca_loss`) that combines them.

Audio and spectral distances:
- `mrstft_distance`: multi-resolution STFT distance, the mean over (n_fft, hop, win) =
  (512, 50, 240), (1024, 120, 600), (2048, 240, 1200) (BigVGAN's M-STFT, auraloss's defaults)
  of spectral convergence + mean |log S_ref - log S_gen| (magnitudes clamped at 1e-5).
  `tnca_jax.metrics.mrstft` reports this same number; with `auraloss=True`, the published
  vocoders' M-STFT (auraloss's defaults exactly: centred frames, magnitudes floored at 1e-4),
  `tnca_jax.metrics.mrstft_auraloss`.
- `log_mel_l1_db`: mean dB difference of two log-mels, floored 80 dB below the reference.
- `multiscale_l1`: L1 over a pyramid of 2x average-pooled spectrograms (no learned network).
- `temporal_l1`: L1 between frame-to-frame differences (onsets, decays, vibrato).
- `waveform_l1`: L1 between waveforms (meaningful only where the phase is grown).

The TNCA's terms (grids normalised to [0, 1], see `tnca_jax.representations`):
- `spectrogram_loss`: frequency-weighted L1 between the shown and the target grid (weight 1);
- growth: alpha towards 1 on every cell of a note (Growing NCA's alpha target; only living
  cells carry a gradient, so this keeps the growth front spreading); `overflow_penalty`:
  channels outside [-1, 1];
- with their weights, `multiscale_l1`, `temporal_l1`, and the audio losses on the grown note
  rendered differentiably (`Representation.audio`).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from tnca_jax import dsp
from tnca_jax.cells import ALPHA
from tnca_jax.contract import SpectralContract
from tnca_jax.representations import Representation

MRSTFT_RESOLUTIONS = ((512, 50, 240), (1024, 120, 600), (2048, 240, 1200))
MRSTFT_FLOOR = 1e-5
AURALOSS_POWER_FLOOR = 1e-8  # auraloss's eps, on the power: a magnitude floor of 1e-4
TOP_DB = 80.0  # mel L1 floors both spectrograms this far below the reference's peak


@functools.lru_cache(maxsize=32)
def analysis_contract(n_fft: int, hop: int, win: int, sample_rate: int, *,
                      centred: bool = False) -> SpectralContract:
    """A plain STFT analysis (reflect padding, Hann window) for losses and metrics; `centred`:
    frames centred on their hop as torch.stft's and librosa's `center=True`."""
    return SpectralContract(name=f"stft{n_fft}", sample_rate=sample_rate, n_fft=n_fft,
                            hop_length=hop, win_length=win,
                            padding="center" if centred else "reflect_center_false")


def mrstft_distance(reference: jax.Array, generated: jax.Array, sample_rate: int, *,
                    auraloss: bool = False) -> jax.Array:
    """Multi-resolution STFT distance of [..., samples] signals (mean over the batch too).

    `auraloss=True`: the figure published vocoders report (auraloss's
    `MultiResolutionSTFTLoss` with its defaults, as BigVGAN's evaluation calls it): centred
    frames and magnitudes sqrt(max(re^2 + im^2, 1e-8)), in spectral convergence and log alike.
    It differs from auraloss only for a batch, whose convergence auraloss takes over the
    whole batch at once."""
    total = 0.0
    for n_fft, hop, win in MRSTFT_RESOLUTIONS:
        contract = analysis_contract(n_fft, hop, win, sample_rate, centred=auraloss)
        if auraloss:
            ref, gen = (jnp.sqrt(jnp.maximum(jnp.abs(dsp.stft(x, contract)) ** 2,
                                             AURALOSS_POWER_FLOOR))
                        for x in (reference, generated))
        else:
            ref = dsp.stft_magnitude(reference, contract)
            gen = dsp.stft_magnitude(generated, contract)
        convergence = (jnp.linalg.norm(ref - gen, axis=(-2, -1))
                       / jnp.linalg.norm(ref, axis=(-2, -1)))
        log_l1 = jnp.mean(jnp.abs(jnp.log(jnp.maximum(ref, MRSTFT_FLOOR))
                                  - jnp.log(jnp.maximum(gen, MRSTFT_FLOOR))), axis=(-2, -1))
        total = total + jnp.mean(convergence + log_l1)
    return total / len(MRSTFT_RESOLUTIONS)


def log_mel_l1_db(reference: jax.Array, generated: jax.Array, contract: SpectralContract
                  ) -> jax.Array:
    """Mean |dB difference| of log spectrograms [..., bins, frames] under `contract`, both
    floored `TOP_DB` below each reference's peak, so that differences between two kinds of
    near-silence do not count (the mel_l1_db metric; the music vocoder's mel loss)."""
    ref_db, gen_db = contract.to_db(reference), contract.to_db(generated)
    floor = jnp.max(ref_db, axis=(-2, -1), keepdims=True) - TOP_DB
    return jnp.mean(jnp.abs(jnp.maximum(ref_db, floor) - jnp.maximum(gen_db, floor)))


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


def overflow_penalty(states: jax.Array) -> jax.Array:
    """Mean squared excursion of all channels outside [-1, 1]."""
    return jnp.mean((states - jnp.clip(states, -1.0, 1.0)) ** 2)


@dataclasses.dataclass(frozen=True)
class LossWeights:
    """The TNCA loss's weights (0 turns a term off)."""

    growth: float
    overflow: float
    multiscale: float = 0.0
    temporal: float = 0.0
    audio: float = 0.0
    waveform: float = 0.0
    audio_griffinlim_iterations: int = 4

    @property
    def uses_audio(self) -> bool:
        return bool(self.audio or self.waveform)


class BatchTarget(NamedTuple):
    """What the TNCA's loss compares a grown batch with, one row per sample.

    Attributes:
      unit: [B, n_values, F, T] the target representation normalised to [0, 1].
      weights: [B, n_values, F, T] its `frequency_weights` (zero past a note's end).
      floor: [B, n_values, 1, 1] levels below which the loss tells nothing apart (both sides
        floored there, as mel_l1_db floors 80 dB below the peak), or None: no floor.
      mask: [B, T] the frames of each note on a longer grid, or None: every frame.
      audio: [B, samples] the recordings (for the audio losses), or None.
    """

    unit: jax.Array
    weights: jax.Array
    floor: jax.Array | None = None
    mask: jax.Array | None = None
    audio: jax.Array | None = None

    def per_sample(self, shown: jax.Array) -> jax.Array:
        """The weighted L1 of each sample: [B, V, F, T] -> [B]."""
        if self.floor is None:
            return spectrogram_loss(shown, self.unit, self.weights)
        return spectrogram_loss(jnp.maximum(shown, self.floor),
                                jnp.maximum(self.unit, self.floor), self.weights)


def masked_mean(values: jax.Array, mask: jax.Array | None) -> jax.Array:
    """The mean of [B, F, T] values over the cells of each note's frames (mask [B, T]; None:
    all cells)."""
    if mask is None:
        return jnp.mean(values)
    return jnp.sum(values * mask[:, None]) / (jnp.sum(mask) * values.shape[1])


def tnca_loss(shown: jax.Array, grown: jax.Array, target: BatchTarget, weights: LossWeights,
              key: jax.Array, *, representation: Representation | None = None,
              vocoder: Callable[[jax.Array], jax.Array] | None = None) -> jax.Array:
    """The TNCA's training loss of a batch (both jobs).

    Args:
      shown: [B, n_values, F, T] the grids the cells show, normalised (`TNCA.spectrogram`).
      grown: [B, F, T, C] the grown states (for the growth and overflow terms).
      target: what each sample grows.
      weights: the terms' weights.
      key: randomness of the differentiable rendering (Griffin-Lim's starting phase).
      representation, vocoder: for the audio losses: how a grid becomes audio (`vocoder`, a
        differentiable JAX vocoder of log-mels; None: the representation's own `audio`).
    """
    unit = target.unit
    loss = (target.per_sample(shown).mean()
            + weights.growth * masked_mean(jax.nn.relu(1.0 - grown[..., ALPHA]), target.mask)
            + weights.overflow * overflow_penalty(grown))
    if weights.multiscale:
        loss += weights.multiscale * multiscale_l1(shown[:, 0], unit[:, 0])
    if weights.temporal:
        loss += weights.temporal * temporal_l1(shown[:, 0], unit[:, 0])
    if weights.uses_audio:
        loss += audio_loss(shown, target, weights, key, representation, vocoder)
    return loss


def audio_loss(shown: jax.Array, target: BatchTarget, weights: LossWeights, key: jax.Array,
               representation: Representation,
               vocoder: Callable[[jax.Array], jax.Array] | None) -> jax.Array:
    """The weighted audio-domain losses of normalised grids [B, V, F, T]: the note rendered
    differentiably (by `vocoder`, else `Representation.audio`), its multi-resolution STFT
    distance to the recording, and its waveform L1 (for representations that grow the
    phase)."""
    if target.audio is None:
        raise ValueError("audio-domain losses need the target recording")
    if vocoder is not None:
        audio = vocoder(representation.from_unit(shown)[..., 0, :, :])
    else:
        audio = representation.audio(representation.from_unit(shown), key,
                                     griffinlim_iterations=weights.audio_griffinlim_iterations)
    loss = weights.audio * mrstft_distance(target.audio, audio,
                                           representation.contract.sample_rate)
    if weights.waveform:
        loss = loss + weights.waveform * waveform_l1(target.audio, audio)
    return loss
