"""The spectral contract: the one place that defines what a spectrogram *means*.

Every representation the TNCA grows and every vocoder that turns it into sound declares a
contract. Two contracts that differ in any field describe different signals, so handing a
spectrogram from one to a consumer of the other is an error (`ContractMismatchError`), never a
silent conversion. This is the bug class that made the PyTorch prototype play noise: a
power-dB mel handed to a vocoder that expects the natural log of a magnitude mel.

- `SpectralContract`: a linear-frequency STFT (framing, window, log scale): what the `stft`
  and `mag_if` representations grow.
- `MelContract`: that STFT summed into mel bands: what the `mel` representation grows and mel
  vocoders invert.

The framing follows BigVGAN v2 / HiFi-GAN (jik876): reflect-pad the waveform by
(n_fft - hop) // 2 on both sides, STFT with `center=False` and a periodic Hann window,
magnitude `sqrt(re^2 + im^2 + 1e-9)`, Slaney mel filters, then the log clamped at `log_floor`.
A waveform of L samples gives L // hop frames. The DSP itself lives in `tnca_jax.dsp`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import warnings
from collections.abc import Mapping
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from tnca_jax.errors import UserError
from tnca_jax.numba_cache import load_librosa

DB_PER_NEPER = 20 / math.log(10)  # dB per unit of natural log of a magnitude.


class ContractError(UserError, ValueError):
    """A contract that cannot describe a usable spectrogram (bad sizes, empty filters)."""


class ContractMismatchError(UserError, ValueError):
    """A spectrogram or model under one contract was handed to a consumer of another."""


@dataclasses.dataclass(frozen=True)
class SpectralContract:
    """A linear-frequency STFT and its log scale: everything needed to compute, compare and
    invert a log magnitude spectrogram of n_fft // 2 + 1 bins.

    Attributes:
      name: preset name, for messages only (not compared).
      sample_rate: audio rate in Hz.
      n_fft: FFT size.
      hop_length: samples between frames.
      win_length: Hann window length (<= n_fft, centred in the FFT frame).
      magnitude_power: 1 for magnitude, 2 for power.
      log: "ln" for the natural log of the clamped value, "db" for 10*log10 of power
        (20*log10 of magnitude).
      log_floor: the clamp applied before the log (1e-5 for BigVGAN).
      padding: "reflect_center_false" (reflect-pad (n_fft - hop) // 2 each side, no centring;
        L // hop frames) or "center" (librosa/torchaudio center=True; L // hop + 1 frames).
    """

    name: str
    sample_rate: int
    n_fft: int = 1024
    hop_length: int = 256
    win_length: int = 1024
    magnitude_power: int = 1
    log: Literal["ln", "db"] = "ln"
    log_floor: float = 1e-5
    padding: Literal["reflect_center_false", "center"] = "reflect_center_false"

    def __post_init__(self) -> None:
        if self.sample_rate <= 0 or self.n_fft <= 0 or self.hop_length <= 0:
            raise ContractError(f"contract {self.name!r}: sample_rate, n_fft and hop_length "
                                "must be positive")
        if not 0 < self.win_length <= self.n_fft:
            raise ContractError(f"contract {self.name!r}: win_length {self.win_length} must be "
                                f"in (0, n_fft={self.n_fft}]")
        if self.hop_length > self.n_fft:
            raise ContractError(f"contract {self.name!r}: hop_length {self.hop_length} exceeds "
                                f"n_fft {self.n_fft}")
        if self.magnitude_power not in (1, 2) or self.log not in ("ln", "db"):
            raise ContractError(f"contract {self.name!r}: magnitude_power must be 1 or 2 and "
                                "log 'ln' or 'db'")
        if self.log_floor <= 0:
            raise ContractError(f"contract {self.name!r}: log_floor must be positive")

    # ---------------------------------------------------------------- framing
    @property
    def n_bins(self) -> int:
        """Rows of this contract's spectrogram (linear-frequency bins)."""
        return self.n_fft // 2 + 1

    @functools.cached_property
    def window(self) -> np.ndarray:
        """Periodic Hann window of win_length, zero-padded to n_fft (centred), float64."""
        n = np.arange(self.win_length)
        win = 0.5 - 0.5 * np.cos(2 * np.pi * n / self.win_length)
        left = (self.n_fft - self.win_length) // 2
        return np.pad(win, (left, self.n_fft - self.win_length - left))

    @property
    def pad(self) -> int:
        """Samples of reflect padding on each side of the waveform."""
        if self.padding == "center":
            return self.n_fft // 2
        return (self.n_fft - self.hop_length) // 2

    def num_frames(self, num_samples: int) -> int:
        if self.padding == "center":
            return num_samples // self.hop_length + 1
        return num_samples // self.hop_length

    def num_samples(self, num_frames: int) -> int:
        """Waveform length a vocoder renders for `num_frames` frames."""
        return num_frames * self.hop_length

    # ---------------------------------------------------------------- log scale
    def to_log(self, value: jax.Array) -> jax.Array:
        """Linear value (magnitude or power, as the contract's) -> this contract's log scale."""
        clamped = jnp.maximum(value, self.log_floor)
        if self.log == "ln":
            return jnp.log(clamped)
        return self._db_per_decade * jnp.log10(clamped)

    def _scalar_to_log(self, value: float) -> float:
        """`to_log` of a Python number, in Python (safe inside jit traces)."""
        value = max(value, self.log_floor)
        return math.log(value) if self.log == "ln" else self._db_per_decade * math.log10(value)

    @property
    def _db_per_decade(self) -> float:
        return 10.0 if self.magnitude_power == 2 else 20.0

    def from_log(self, log_value: jax.Array) -> jax.Array:
        """This contract's log scale -> linear value (magnitude or power, as the contract's)."""
        if self.log == "ln":
            return jnp.exp(log_value)
        return 10.0 ** (log_value / self._db_per_decade)

    def to_db(self, log_value: jax.Array) -> jax.Array:
        """This contract's log scale -> decibels (10 log10 of power = 20 log10 of magnitude)."""
        if self.log == "db":
            return log_value
        return (DB_PER_NEPER / self.magnitude_power) * log_value

    @property
    def log_min(self) -> float:
        """The smallest value a spectrogram under this contract can take (silence)."""
        return self._scalar_to_log(self.log_floor)

    @property
    def full_scale(self) -> float:
        """The linear magnitude a full-scale sinusoid reaches at its bin: sum(window) / 2."""
        return float(self.window.sum() / 2)

    @property
    def bin_log_max(self) -> float:
        """Log value of a full-scale sinusoid at its STFT bin: the top of a clean linear
        spectrogram's range."""
        return self._scalar_to_log(self.full_scale**self.magnitude_power)

    @property
    def log_max(self) -> float:
        """The top of the range of this contract's spectrogram (`bin_log_max` for a linear
        one)."""
        return self.bin_log_max

    # ---------------------------------------------------------------- comparison
    def first_difference(self, other: SpectralContract) -> str | None:
        """Name of the first field (other than `name`) that differs, or None ("kind" when one
        is a mel contract and the other a linear one)."""
        if type(self) is not type(other):
            return "kind"
        for field in dataclasses.fields(self):
            if field.name != "name" and getattr(self, field.name) != getattr(other, field.name):
                return field.name
        return None

    def require_same(self, other: SpectralContract, what: str = "spectrogram") -> None:
        """Raise ContractMismatchError naming both contracts and the first differing field."""
        field = self.first_difference(other)
        if field == "kind":
            raise ContractMismatchError(
                f"{what} is under {other.kind} contract {other.name!r} but the {self.kind} "
                f"contract {self.name!r} is required; compute it under the consumer's contract")
        if field is not None:
            raise ContractMismatchError(
                f"{what} is under contract {other.name!r} but {self.name!r} is required: "
                f"{field} differs ({getattr(other, field)!r} vs {getattr(self, field)!r}); "
                "compute the spectrogram under the consumer's contract instead of converting")

    @property
    def kind(self) -> str:
        return "linear"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @staticmethod
    def from_dict(data: Mapping) -> SpectralContract:
        """A contract from its fields: a `MelContract` when they include `n_mels`."""
        return (MelContract if "n_mels" in data else SpectralContract)(**data)


@dataclasses.dataclass(frozen=True)
class MelContract(SpectralContract):
    """A `SpectralContract` whose magnitude (or power) is summed into mel bands, then logged.

    Attributes (besides the STFT's):
      n_mels: number of mel bands.
      fmin: lowest mel edge in Hz.
      fmax: highest mel edge in Hz (None means Nyquist).
      mel_scale: "slaney" (librosa htk=False) or "htk".
      mel_norm: "slaney" (area normalisation) or None.
    """

    n_mels: int = 80
    fmin: float = 0.0
    fmax: float | None = None
    mel_scale: Literal["slaney", "htk"] = "slaney"
    mel_norm: Literal["slaney"] | None = "slaney"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.n_mels <= 0:
            raise ContractError(f"contract {self.name!r}: n_mels must be positive")
        nyquist = self.sample_rate / 2
        if not 0 <= self.fmin < self.mel_fmax <= nyquist:
            raise ContractError(
                f"contract {self.name!r}: need 0 <= fmin < fmax <= Nyquist ({nyquist:g} Hz), "
                f"got fmin={self.fmin:g}, fmax={self.mel_fmax:g}; lower fmax (None means Nyquist) "
                "or raise sample_rate")
        empty = np.flatnonzero(self.mel_basis.max(axis=1) <= 0)
        if empty.size:
            raise ContractError(
                f"contract {self.name!r}: {empty.size} of {self.n_mels} mel filters are empty "
                f"(first: band {empty[0]}) at n_fft={self.n_fft}, {self.sample_rate} Hz; use "
                "fewer mel bands or a larger n_fft (2048 for 128+ bands)")

    @property
    def kind(self) -> str:
        return "mel"

    @property
    def mel_fmax(self) -> float:
        return self.sample_rate / 2 if self.fmax is None else float(self.fmax)

    @functools.cached_property
    def mel_basis(self) -> np.ndarray:
        """Mel filterbank, float64 [n_mels, n_fft // 2 + 1] (cast to the audio's dtype in use)."""
        librosa = load_librosa()  # Heavy import, needed only once per contract.

        with warnings.catch_warnings():  # Empty filters are checked (and refused) by us.
            warnings.simplefilter("ignore", UserWarning)
            return librosa.filters.mel(
                sr=self.sample_rate, n_fft=self.n_fft, n_mels=self.n_mels, fmin=self.fmin,
                fmax=self.mel_fmax, htk=self.mel_scale == "htk", norm=self.mel_norm,
                dtype=np.float64)

    @functools.cached_property
    def log_max(self) -> float:
        """Log-mel of a full-scale sinusoid at the loudest band's centre: the top of the range.

        The band whose filter peaks highest turns a full-scale sine's bin magnitude into the
        largest mel value a clean signal reaches.
        """
        return self._scalar_to_log((self.full_scale * self.mel_basis.max())
                                   ** self.magnitude_power)


# ------------------------------------------------------------------------ presets
def _bigvgan(name: str, sample_rate: int, n_mels: int, fmax: float | None,
             n_fft: int = 1024, hop: int = 256) -> MelContract:
    return MelContract(name=name, sample_rate=sample_rate, n_fft=n_fft, hop_length=hop,
                       win_length=n_fft, n_mels=n_mels, fmin=0.0, fmax=fmax)


PRESETS: dict[str, SpectralContract] = {
    c.name: c
    for c in (
        _bigvgan("bigvgan_v2_22khz_80band", 22050, 80, None),
        _bigvgan("bigvgan_v2_22khz_80band_fmax8k", 22050, 80, 8000.0),
        _bigvgan("bigvgan_v2_24khz_100band", 24000, 100, None),
        _bigvgan("bigvgan_v2_44khz_128band", 44100, 128, None),
        _bigvgan("bigvgan_v2_44khz_128band_512x", 44100, 128, None, n_fft=2048, hop=512),
        _bigvgan("hifigan_v1_22khz", 22050, 80, 8000.0),
        # Weight-free inversion: a *power* mel keeps loudness and brightness through the
        # mel-to-linear step (a magnitude mel spreads a harmonic's energy over its band: on
        # the shipped violin, RMS 0.76x and centroid -830 Hz, vs 1.00x and -1 Hz for power);
        # 128 bands and a 2048 FFT invert better than 80 bands; hop 512 halves the grid the
        # TNCA grows along time.
        MelContract(name="griffinlim_22khz_128band", sample_rate=22050, n_fft=2048,
                    hop_length=512, win_length=2048, n_mels=128, magnitude_power=2,
                    log_floor=1e-10),
        # Linear-frequency representations (stft, mag_if in tnca_jax.representations): the
        # natural log of the STFT magnitude (513 bins), floored at 1e-5, BigVGAN's framing.
        SpectralContract(name="stft_22khz_1024", sample_rate=22050, n_fft=1024,
                         hop_length=256, win_length=1024),
        # The prototype's convention, kept so that its bug class can be refused by name.
        MelContract(name="prototype_power_db", sample_rate=22050, n_fft=1024,
                    hop_length=256, win_length=1024, n_mels=80, mel_norm="slaney",
                    magnitude_power=2, log="db", log_floor=1e-10, padding="center"),
    )
}
DEFAULT_CONTRACT = "griffinlim_22khz_128band"


def get_contract(spec: str | SpectralContract | Mapping) -> SpectralContract:
    """A preset by name, a contract, or a custom contract from a mapping of its fields (a dict
    or ConfigDict in a config; `name` defaults to "custom"). A mapping makes a mel contract
    (`n_mels` 80 unless given), or a linear one with `n_mels=None`."""
    if isinstance(spec, SpectralContract):
        return spec
    if isinstance(spec, str):
        try:
            return PRESETS[spec]
        except KeyError:
            raise ContractError(f"unknown contract {spec!r}; choose one of "
                                f"{', '.join(sorted(PRESETS))}") from None
    fields = {"name": "custom", **(spec.to_dict() if hasattr(spec, "to_dict") else dict(spec))}
    known = {field.name for field in dataclasses.fields(MelContract)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ContractError(f"custom contract {fields['name']!r}: unknown fields "
                            f"{', '.join(unknown)}; use only {', '.join(sorted(known))}")
    if "sample_rate" not in fields:
        raise ContractError(f"custom contract {fields['name']!r} has no sample_rate; add it")
    if "n_mels" in fields and fields["n_mels"] is None:
        del fields["n_mels"]
        mel_only = sorted(set(fields) - {f.name for f in dataclasses.fields(SpectralContract)})
        if mel_only:
            raise ContractError(f"custom contract {fields['name']!r} is linear (n_mels=None) "
                                f"but sets {', '.join(mel_only)}; drop them")
        return SpectralContract(**fields)
    return MelContract(**fields)


def measuring_contract(contract: SpectralContract) -> MelContract:
    """The mel contract a run's audio is measured under: its own for a mel run; for a linear
    one, the default mel contract at the run's rate (so mel metrics compare across
    representations)."""
    if isinstance(contract, MelContract):
        return contract
    default = PRESETS[DEFAULT_CONTRACT]
    if contract.sample_rate == default.sample_rate:
        return default
    return dataclasses.replace(default, name=f"measure_{contract.sample_rate}hz",
                               sample_rate=contract.sample_rate)
