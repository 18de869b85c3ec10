"""What a TNCA grows: a representation of the note, its contract, and the way back to audio.

- `mel`: the contract's log-mel (one channel), inverted by a mel vocoder (`vocoders`).
- `stft`: log linear-frequency magnitude, n_fft/2+1 bins (one channel), inverted by fast
  Griffin-Lim.
- `mag_if`: log magnitude and instantaneous frequency (two channels, as in GANSynth): the
  phase advance from frame to frame minus the advance of each bin's centre frequency,
  wrapped to [-pi, pi) and divided by pi. Integrating it back and an inverse STFT reconstruct
  the waveform exactly (up to the magnitude floor); frame 0 holds the wrapped phase itself.

Each representation maps its features to [0, 1] per channel for the TNCA (`to_unit`,
`from_unit`), has a differentiable `audio()` for audio-domain losses, and an `Inverse` for
rendering: a mel vocoder for `mel`, 64 iterations of fast Griffin-Lim for `stft`, the exact
inverse STFT for `mag_if`.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np

from tnca_jax.contract import SpectralContract, get_contract, istft, log_mel, stft

NAMES = ("mel", "stft", "mag_if")


def config_kind(config) -> str:
    """A config's (or a stored run config's) representation; runs from before the key existed
    grew `mel`."""
    return config.get("representation", "mel")


@dataclasses.dataclass(frozen=True)
class Representation:
    """A representation under a spectral contract.

    Attributes:
      kind: "mel", "stft" or "mag_if".
      contract: the analysis (rate, FFT, hop, window, padding, log floor; mel fields for mel).
    """

    kind: Literal["mel", "stft", "mag_if"]
    contract: SpectralContract

    def __post_init__(self) -> None:
        if self.kind not in NAMES:
            raise ValueError(f"unknown representation {self.kind!r}; choose one of "
                             f"{', '.join(NAMES)}")
        if self.kind != "mel" and (self.contract.log != "ln" or self.contract.magnitude_power != 1):
            raise ValueError(f"representation {self.kind!r} needs a contract with the natural "
                             f"log of the magnitude, not {self.contract.name!r}")

    @property
    def n_values(self) -> int:
        """Channels the TNCA grows."""
        return 2 if self.kind == "mag_if" else 1

    @property
    def n_bins(self) -> int:
        """Grid rows: mel bands or linear-frequency bins."""
        return self.contract.n_mels if self.kind == "mel" else self.contract.n_fft // 2 + 1

    @property
    def grows_phase(self) -> bool:
        return self.kind == "mag_if"

    @property
    def unit_span_db(self) -> float:
        """dB spanned by channel 0's [0, 1] range (the log-mel or log magnitude)."""
        low, high = self._ranges()
        return float(self.contract.to_db(high[0]) - self.contract.to_db(low[0]))

    # ---------------------------------------------------------------- features
    def features(self, audio: jax.Array) -> jax.Array:
        """[..., samples] -> [..., n_values, n_bins, frames] in native units."""
        if self.kind == "mel":
            return log_mel(audio, self.contract)[..., None, :, :]
        spec = stft(jnp.asarray(audio, jnp.float32), self.contract)
        log_mag = jnp.log(jnp.maximum(jnp.abs(spec), self.contract.log_floor))
        if self.kind == "stft":
            return log_mag[..., None, :, :]
        phase = jnp.angle(spec)
        advance = jnp.diff(phase, axis=-1) - self._bin_advance[:, None]
        inst_freq = jnp.concatenate([phase[..., :1], _wrap(advance)], axis=-1) / jnp.pi
        return jnp.stack([log_mag, inst_freq], axis=-3)

    @property
    def _bin_advance(self) -> np.ndarray:
        """Phase advance per hop of each bin's centre frequency [n_bins]."""
        bins = np.arange(self.n_bins)
        return (2 * np.pi * bins * self.contract.hop_length / self.contract.n_fft).astype(
            np.float32)

    def _ranges(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel (low, high) [n_values] of the features, for the [0, 1] mapping."""
        c = self.contract
        if self.kind == "mel":
            return np.array([c.log_min]), np.array([c.log_max])
        top = float(np.log(c.window.sum() / 2))  # full-scale sine at its bin
        if self.kind == "stft":
            return np.array([c.log_min]), np.array([top])
        return np.array([c.log_min, -1.0]), np.array([top, 1.0])

    def to_unit(self, features: jax.Array) -> jax.Array:
        """Native [..., n_values, bins, frames] -> [0, 1] per channel."""
        low, high = (jnp.asarray(x, features.dtype)[:, None, None] for x in self._ranges())
        return jnp.clip((features - low) / (high - low), 0.0, 1.0)

    def from_unit(self, unit: jax.Array) -> jax.Array:
        """[0, 1] per channel -> native units (inputs outside [0, 1] are clipped)."""
        low, high = (jnp.asarray(x, unit.dtype)[:, None, None] for x in self._ranges())
        return low + (high - low) * jnp.clip(unit, 0.0, 1.0)

    # ---------------------------------------------------------------- back to audio
    def audio(self, features: jax.Array, key: jax.Array, *, griffinlim_iterations: int = 8
              ) -> jax.Array:
        """Differentiable waveform of [..., n_values, bins, frames] features.

        mag_if: exact (integrated phase, inverse STFT). stft/mel: `griffinlim_iterations` of
        unrolled fast Griffin-Lim (mel through its magnitude estimate).
        """
        from vocoders.griffinlim import fast_griffin_lim, mel_to_magnitude

        num_samples = self.contract.num_samples(features.shape[-1])
        if self.kind == "mag_if":
            log_mag, inst_freq = features[..., 0, :, :], features[..., 1, :, :]
            advance = inst_freq * jnp.pi
            advance = advance.at[..., 1:].add(self._bin_advance[:, None])
            phase = jnp.cumsum(advance, axis=-1)
            spec = jnp.exp(log_mag) * jnp.exp(1j * phase)
            return istft(spec, self.contract, num_samples)
        if self.kind == "stft":
            mag = jnp.exp(features[..., 0, :, :])
        else:
            mag = mel_to_magnitude(self.contract.from_log(features[..., 0, :, :]), self.contract)
        return fast_griffin_lim(mag, self.contract, key, iterations=griffinlim_iterations)


RENDER_GRIFFINLIM_ITERATIONS = 64


@functools.partial(jax.jit, static_argnums=0)
def _render(representation: Representation, features: jax.Array) -> jax.Array:
    return representation.audio(features, jax.random.key(0),
                                griffinlim_iterations=RENDER_GRIFFINLIM_ITERATIONS)


@dataclasses.dataclass(frozen=True, eq=False)
class Inverse:
    """How a representation becomes sound: features [batch, n_values, bins, frames] (native
    units) -> audio [batch, frames * hop].

    `mel` goes through `vocoder` (whose contract must equal the representation's); `stft`
    through 64 iterations of fast Griffin-Lim (starting phase fixed); `mag_if` through its
    exact inverse. Only `mel` takes a vocoder.
    """

    representation: Representation
    vocoder: Any = None

    def __post_init__(self) -> None:
        kind = self.representation.kind
        if (kind == "mel") != (self.vocoder is not None):
            raise ValueError("a mel representation is rendered by a vocoder" if kind == "mel"
                             else f"representation {kind!r} renders itself: it takes no vocoder"
                             " (set --config.vocoder=griffinlim, the default)")
        if self.vocoder is not None:
            self.vocoder.contract.require_same(self.representation.contract,
                                               what="the trained TNCA's spectrogram")

    @property
    def name(self) -> str:
        return self.vocoder.name if self.vocoder is not None else {
            "stft": "griffinlim", "mag_if": "istft"}[self.representation.kind]

    @property
    def contract(self) -> SpectralContract:
        return self.representation.contract

    def __call__(self, features: jax.Array) -> jax.Array:
        features = jnp.asarray(features, jnp.float32)
        if self.vocoder is not None:
            return self.vocoder(features[:, 0], contract=self.contract)
        return _render(self.representation, features)


def _wrap(phase: jax.Array) -> jax.Array:
    return (phase + jnp.pi) % (2 * jnp.pi) - jnp.pi


def get_representation(kind: str, contract: SpectralContract | str) -> Representation:
    return Representation(kind, get_contract(contract))
