"""What a TNCA grows: a representation of the note under a contract, and its way back to audio.

- `MelRepresentation` ("mel"): the contract's log-mel (one value), inverted by a mel vocoder.
- `StftRepresentation` ("stft"): log linear-frequency magnitude, n_fft/2+1 bins (one value),
  inverted by fast Griffin-Lim.
- `MagIfRepresentation` ("mag_if"): log magnitude and instantaneous frequency (two values, as in
  GANSynth): the phase advance from frame to frame minus the advance of each bin's centre
  frequency, wrapped to [-pi, pi) and divided by pi. Integrating it back and an inverse STFT
  reconstruct the waveform exactly (up to the magnitude floor); frame 0 holds the wrapped phase
  itself.

Each maps its features to [0, 1] per value for the TNCA (`to_unit`, `from_unit`; 0 is
silence), has a differentiable `audio()` for audio-domain losses, and says whether it renders
itself (`renders_itself`) or needs a vocoder (mel). Adding one is one class here and an entry in
`REPRESENTATIONS`.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from tnca_jax import dsp
from tnca_jax.contract import MelContract, SpectralContract, get_contract
from tnca_jax.errors import ConfigError

RENDER_GRIFFINLIM_ITERATIONS = 64  # Griffin-Lim iterations when rendering a linear magnitude.


@dataclasses.dataclass(frozen=True)
class Representation:
    """A representation under a spectral contract (hashable: usable as a static jit argument).

    Class attributes:
      name: the config's `representation` value.
      values: what each grown value is (labels for plots and logs); `n_values` of them.
      grows_phase: whether the waveform's phase is grown (else a vocoder invents it).
      renders_itself: whether `render` turns features into audio without a vocoder.
    """

    contract: SpectralContract
    name: ClassVar[str]
    values: ClassVar[tuple[str, ...]]
    grows_phase: ClassVar[bool] = False
    renders_itself: ClassVar[bool] = True

    def __post_init__(self) -> None:
        self.check_contract(self.contract)

    @classmethod
    def check_contract(cls, contract: SpectralContract) -> None:
        """Raise ConfigError if this representation cannot be computed under `contract`."""
        if contract.log != "ln" or contract.magnitude_power != 1:
            raise ConfigError(f"representation {cls.name!r} needs a contract with the natural "
                              f"log of the magnitude, not {contract.name!r} (e.g. "
                              "stft_22khz_1024)")

    @property
    def n_values(self) -> int:
        """Values each cell grows."""
        return len(self.values)

    @property
    def n_bins(self) -> int:
        """Grid rows: linear-frequency bins (mel bands for mel)."""
        return self.contract.n_bins

    @property
    def bin_label(self) -> str:
        return "frequency bin"

    # ---------------------------------------------------------------- features
    def features(self, audio: jax.Array) -> jax.Array:
        """[..., samples] -> [..., n_values, n_bins, frames] in native units."""
        raise NotImplementedError

    def ranges(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-value (low, high) [n_values] of the features, mapped to [0, 1]: silence to a
        full-scale sinusoid."""
        return np.array([self.contract.log_min]), np.array([self.contract.bin_log_max])

    def to_unit(self, features: jax.Array) -> jax.Array:
        """Native [..., n_values, bins, frames] -> [0, 1] per value."""
        low, high = (jnp.asarray(x, features.dtype)[:, None, None] for x in self.ranges())
        return jnp.clip((features - low) / (high - low), 0.0, 1.0)

    def from_unit(self, unit: jax.Array) -> jax.Array:
        """[0, 1] per value -> native units (inputs outside [0, 1] are clipped)."""
        low, high = (jnp.asarray(x, unit.dtype)[:, None, None] for x in self.ranges())
        return low + (high - low) * jnp.clip(unit, 0.0, 1.0)

    @property
    def unit_span_db(self) -> float:
        """dB spanned by value 0's [0, 1] range (the log-mel or log magnitude)."""
        low, high = self.ranges()
        return float(self.contract.to_db(high[0]) - self.contract.to_db(low[0]))

    # ---------------------------------------------------------------- back to audio
    def audio(self, features: jax.Array, key: jax.Array, *, griffinlim_iterations: int = 8
              ) -> jax.Array:
        """Differentiable waveform [..., frames * hop] of [..., n_values, bins, frames]
        features (`griffinlim_iterations` unrolled where the phase is not grown)."""
        raise NotImplementedError

    def render(self, features: jax.Array) -> jax.Array:
        """Features [batch, n_values, bins, frames] -> audio [batch, frames * hop], jitted
        once per representation (representations that render themselves)."""
        return _render(self, jnp.asarray(features, jnp.float32))


@functools.partial(jax.jit, static_argnums=0)
def _render(representation: Representation, features: jax.Array) -> jax.Array:
    return representation.audio(features, jax.random.key(0),
                                griffinlim_iterations=RENDER_GRIFFINLIM_ITERATIONS)


@dataclasses.dataclass(frozen=True)
class MelRepresentation(Representation):
    """The contract's log-mel; rendered by a vocoder under the same contract."""

    contract: MelContract
    name: ClassVar[str] = "mel"
    values: ClassVar[tuple[str, ...]] = ("log-mel",)
    renders_itself: ClassVar[bool] = False

    @classmethod
    def check_contract(cls, contract: SpectralContract) -> None:
        if not isinstance(contract, MelContract):
            raise ConfigError(f"representation 'mel' needs a mel contract, not the linear "
                              f"{contract.name!r} (e.g. griffinlim_22khz_128band)")

    @property
    def n_bins(self) -> int:
        return self.contract.n_mels

    @property
    def bin_label(self) -> str:
        return "mel band"

    def features(self, audio: jax.Array) -> jax.Array:
        return dsp.log_mel(audio, self.contract)[..., None, :, :]

    def ranges(self) -> tuple[np.ndarray, np.ndarray]:
        return np.array([self.contract.log_min]), np.array([self.contract.log_max])

    def audio(self, features: jax.Array, key: jax.Array, *, griffinlim_iterations: int = 8
              ) -> jax.Array:
        """Unrolled Griffin-Lim through the magnitude estimate of the mel."""
        mel = self.contract.from_log(features[..., 0, :, :])
        mag = dsp.mel_to_magnitude(mel, self.contract)
        return dsp.fast_griffin_lim(mag, self.contract, key, iterations=griffinlim_iterations)

    def render(self, features: jax.Array) -> jax.Array:
        raise TypeError("a mel representation is rendered by a vocoder (tnca_jax.inverse)")


@dataclasses.dataclass(frozen=True)
class StftRepresentation(Representation):
    """The log STFT magnitude; rendered by fast Griffin-Lim."""

    name: ClassVar[str] = "stft"
    values: ClassVar[tuple[str, ...]] = ("log magnitude",)

    def features(self, audio: jax.Array) -> jax.Array:
        return dsp.log_spectrogram(audio, self.contract)[..., None, :, :]

    def audio(self, features: jax.Array, key: jax.Array, *, griffinlim_iterations: int = 8
              ) -> jax.Array:
        return dsp.fast_griffin_lim(jnp.exp(features[..., 0, :, :]), self.contract, key,
                                    iterations=griffinlim_iterations)


@dataclasses.dataclass(frozen=True)
class MagIfRepresentation(Representation):
    """Log STFT magnitude and instantaneous frequency; rendered exactly (integrated phase,
    inverse STFT)."""

    name: ClassVar[str] = "mag_if"
    values: ClassVar[tuple[str, ...]] = ("log magnitude", "instantaneous frequency")
    grows_phase: ClassVar[bool] = True

    @property
    def _bin_advance(self) -> np.ndarray:
        """Phase advance per hop of each bin's centre frequency [n_bins]."""
        bins = np.arange(self.n_bins)
        return (2 * np.pi * bins * self.contract.hop_length / self.contract.n_fft).astype(
            np.float32)

    def features(self, audio: jax.Array) -> jax.Array:
        spec = dsp.stft(jnp.asarray(audio, jnp.float32), self.contract)
        log_mag = self.contract.to_log(dsp.magnitude(spec))
        phase = jnp.angle(spec)
        advance = jnp.diff(phase, axis=-1) - self._bin_advance[:, None]
        inst_freq = jnp.concatenate([phase[..., :1], _wrap(advance)], axis=-1) / jnp.pi
        return jnp.stack([log_mag, inst_freq], axis=-3)

    def ranges(self) -> tuple[np.ndarray, np.ndarray]:
        low, high = super().ranges()
        return np.append(low, -1.0), np.append(high, 1.0)

    def audio(self, features: jax.Array, key: jax.Array, *, griffinlim_iterations: int = 8
              ) -> jax.Array:
        del key, griffinlim_iterations  # exact: nothing is estimated
        log_mag, inst_freq = features[..., 0, :, :], features[..., 1, :, :]
        advance = inst_freq * jnp.pi
        advance = advance.at[..., 1:].add(self._bin_advance[:, None])
        phase = jnp.cumsum(advance, axis=-1)
        spec = jnp.exp(log_mag) * jnp.exp(1j * phase)
        return dsp.istft(spec, self.contract, self.contract.num_samples(features.shape[-1]))


def _wrap(phase: jax.Array) -> jax.Array:
    return (phase + jnp.pi) % (2 * jnp.pi) - jnp.pi


REPRESENTATIONS: dict[str, type[Representation]] = {
    cls.name: cls for cls in (MelRepresentation, StftRepresentation, MagIfRepresentation)}


def config_representation_name(config) -> str:
    """A config's (or a stored run config's) representation; runs from before the key existed
    grew `mel`."""
    return config.get("representation", "mel")


def get_representation(name: str, contract: SpectralContract | str) -> Representation:
    """The representation `name` under `contract`; ConfigError names what does not fit."""
    try:
        cls = REPRESENTATIONS[name]
    except KeyError:
        raise ConfigError(f"representation={name!r} is unknown; choose one of "
                          f"{', '.join(REPRESENTATIONS)}") from None
    return cls(get_contract(contract))
