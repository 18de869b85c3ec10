"""The spectral contract: the one place that defines what a log-mel spectrogram *means*.

Every representation the TNCA grows and every vocoder that turns it into sound declares a
`SpectralContract`. Two contracts that differ in any field describe different signals, so
handing a spectrogram from one to a consumer of the other is an error
(`ContractMismatchError`), never a silent conversion. This is the bug class that made the
PyTorch prototype play noise: a power-dB mel handed to a vocoder that expects the natural log
of a magnitude mel.

Feature extraction follows BigVGAN v2 / HiFi-GAN (jik876) exactly: reflect-pad the waveform by
(n_fft - hop) // 2 on both sides, STFT with `center=False` and a periodic Hann window,
magnitude `sqrt(re^2 + im^2 + 1e-9)`, Slaney mel filters, then the log of the mel clamped at
`log_floor`. A waveform of L samples gives L // hop frames.
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

MAGNITUDE_EPS = 1e-9  # Inside the square root of re^2 + im^2, as BigVGAN does.
DB_PER_NEPER = 20 / math.log(10)  # dB per unit of natural log of a magnitude.


class ContractError(ValueError):
    """A contract that cannot describe a usable spectrogram (bad sizes, empty filters)."""


class ContractMismatchError(ValueError):
    """A spectrogram or model under one contract was handed to a consumer of another."""


@dataclasses.dataclass(frozen=True)
class SpectralContract:
    """Everything needed to compute, compare and invert a log-mel spectrogram.

    Attributes:
      name: preset name, for messages only (not compared).
      sample_rate: audio rate in Hz.
      n_fft: FFT size.
      hop_length: samples between frames.
      win_length: Hann window length (<= n_fft, centred in the FFT frame).
      n_mels: number of mel bands.
      fmin: lowest mel edge in Hz.
      fmax: highest mel edge in Hz (None means Nyquist).
      mel_scale: "slaney" (librosa htk=False) or "htk".
      mel_norm: "slaney" (area normalisation) or None.
      magnitude_power: 1 for magnitude mel, 2 for power mel.
      log: "ln" for natural log of the clamped mel, "db" for 10*log10 of power
        (20*log10 of magnitude).
      log_floor: the clamp applied to the mel before the log (1e-5 for BigVGAN).
      padding: "reflect_center_false" (reflect-pad (n_fft - hop) // 2 each side, no centring;
        L // hop frames) or "center" (librosa/torchaudio center=True; L // hop + 1 frames).
    """

    name: str
    sample_rate: int
    n_fft: int = 1024
    hop_length: int = 256
    win_length: int = 1024
    n_mels: int = 80
    fmin: float = 0.0
    fmax: float | None = None
    mel_scale: Literal["slaney", "htk"] = "slaney"
    mel_norm: Literal["slaney"] | None = "slaney"
    magnitude_power: int = 1
    log: Literal["ln", "db"] = "ln"
    log_floor: float = 1e-5
    padding: Literal["reflect_center_false", "center"] = "reflect_center_false"

    def __post_init__(self) -> None:
        if self.sample_rate <= 0 or self.n_fft <= 0 or self.hop_length <= 0 or self.n_mels <= 0:
            raise ContractError(f"contract {self.name!r}: sample_rate, n_fft, hop_length and "
                                "n_mels must be positive")
        if not 0 < self.win_length <= self.n_fft:
            raise ContractError(f"contract {self.name!r}: win_length {self.win_length} must be "
                                f"in (0, n_fft={self.n_fft}]")
        if self.hop_length > self.n_fft:
            raise ContractError(f"contract {self.name!r}: hop_length {self.hop_length} exceeds "
                                f"n_fft {self.n_fft}")
        nyquist = self.sample_rate / 2
        if not 0 <= self.fmin < self.mel_fmax <= nyquist:
            raise ContractError(
                f"contract {self.name!r}: need 0 <= fmin < fmax <= Nyquist ({nyquist:g} Hz), "
                f"got fmin={self.fmin:g}, fmax={self.mel_fmax:g}; lower fmax (None means Nyquist) "
                "or raise sample_rate")
        if self.magnitude_power not in (1, 2) or self.log not in ("ln", "db"):
            raise ContractError(f"contract {self.name!r}: magnitude_power must be 1 or 2 and "
                                "log 'ln' or 'db'")
        if self.log_floor <= 0:
            raise ContractError(f"contract {self.name!r}: log_floor must be positive")
        empty = np.flatnonzero(self.mel_basis.max(axis=1) <= 0)
        if empty.size:
            raise ContractError(
                f"contract {self.name!r}: {empty.size} of {self.n_mels} mel filters are empty "
                f"(first: band {empty[0]}) at n_fft={self.n_fft}, {self.sample_rate} Hz; use "
                "fewer mel bands or a larger n_fft (2048 for 128+ bands)")

    # ---------------------------------------------------------------- derived quantities
    @property
    def mel_fmax(self) -> float:
        return self.sample_rate / 2 if self.fmax is None else float(self.fmax)

    @functools.cached_property
    def mel_basis(self) -> np.ndarray:
        """Mel filterbank, float64 [n_mels, n_fft // 2 + 1] (cast to the audio's dtype in use)."""
        import librosa  # Heavy import, needed only once per contract.

        with warnings.catch_warnings():  # Empty filters are checked (and refused) by us.
            warnings.simplefilter("ignore", UserWarning)
            return librosa.filters.mel(
                sr=self.sample_rate, n_fft=self.n_fft, n_mels=self.n_mels, fmin=self.fmin,
                fmax=self.mel_fmax, htk=self.mel_scale == "htk", norm=self.mel_norm,
                dtype=np.float64)

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

    def to_log(self, mel: jax.Array) -> jax.Array:
        """Linear mel (magnitude or power) -> this contract's log scale."""
        clamped = jnp.maximum(mel, self.log_floor)
        if self.log == "ln":
            return jnp.log(clamped)
        return self._db_per_decade * jnp.log10(clamped)

    def _scalar_to_log(self, mel: float) -> float:
        """`to_log` of a Python number, in Python (safe inside jit traces)."""
        mel = max(mel, self.log_floor)
        return math.log(mel) if self.log == "ln" else self._db_per_decade * math.log10(mel)

    @property
    def _db_per_decade(self) -> float:
        return 10.0 if self.magnitude_power == 2 else 20.0

    def from_log(self, log_mel: jax.Array) -> jax.Array:
        """This contract's log scale -> linear mel (magnitude or power, as the contract's)."""
        if self.log == "ln":
            return jnp.exp(log_mel)
        return 10.0 ** (log_mel / self._db_per_decade)

    def to_db(self, log_mel: jax.Array) -> jax.Array:
        """This contract's log scale -> decibels (10 log10 of power = 20 log10 of magnitude)."""
        if self.log == "db":
            return log_mel
        return (DB_PER_NEPER / self.magnitude_power) * log_mel

    @property
    def log_min(self) -> float:
        """The smallest value a log-mel under this contract can take (silence)."""
        return self._scalar_to_log(self.log_floor)

    @functools.cached_property
    def log_max(self) -> float:
        """Log-mel of a full-scale sinusoid at the loudest band's centre: the top of the range.

        A full-scale sine has STFT magnitude sum(window) / 2 at its bin; the band whose filter
        peaks highest turns that into the largest mel value a clean signal reaches.
        """
        peak = float(self.window.sum() / 2 * self.mel_basis.max())
        return self._scalar_to_log(peak**self.magnitude_power)

    # ---------------------------------------------------------------- comparison
    def first_difference(self, other: SpectralContract) -> str | None:
        """Name of the first field (other than `name`) that differs, or None."""
        for field in dataclasses.fields(self):
            if field.name != "name" and getattr(self, field.name) != getattr(other, field.name):
                return field.name
        return None

    def require_same(self, other: SpectralContract, what: str = "spectrogram") -> None:
        """Raise ContractMismatchError naming both contracts and the first differing field."""
        field = self.first_difference(other)
        if field is not None:
            raise ContractMismatchError(
                f"{what} is under contract {other.name!r} but {self.name!r} is required: "
                f"{field} differs ({getattr(other, field)!r} vs {getattr(self, field)!r}); "
                "compute the spectrogram under the consumer's contract instead of converting")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> SpectralContract:
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


# ------------------------------------------------------------------------ presets
def _bigvgan(name: str, sample_rate: int, n_mels: int, fmax: float | None,
             n_fft: int = 1024, hop: int = 256) -> SpectralContract:
    return SpectralContract(name=name, sample_rate=sample_rate, n_fft=n_fft, hop_length=hop,
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
        SpectralContract(name="griffinlim_22khz_128band", sample_rate=22050, n_fft=2048,
                         hop_length=512, win_length=2048, n_mels=128, magnitude_power=2,
                         log_floor=1e-10),
        # Linear-frequency representations (stft, mag_if in tnca_jax.representations): the
        # natural log of the STFT magnitude (513 bins), floored at 1e-5, BigVGAN's framing.
        _bigvgan("stft_22khz_1024", 22050, 80, None),
        # The prototype's convention, kept so that its bug class can be refused by name.
        SpectralContract(name="prototype_power_db", sample_rate=22050, n_fft=1024,
                         hop_length=256, win_length=1024, n_mels=80, mel_norm="slaney",
                         magnitude_power=2, log="db", log_floor=1e-10, padding="center"),
    )
}
DEFAULT_CONTRACT = "griffinlim_22khz_128band"


def get_contract(spec: str | SpectralContract | Mapping) -> SpectralContract:
    """A preset by name, a contract, or a custom contract from a mapping of its fields (a dict
    or ConfigDict in a config; `name` defaults to "custom")."""
    if isinstance(spec, SpectralContract):
        return spec
    if isinstance(spec, str):
        try:
            return PRESETS[spec]
        except KeyError:
            raise ContractError(f"unknown contract {spec!r}; choose one of "
                                f"{', '.join(sorted(PRESETS))}") from None
    fields = {"name": "custom", **(spec.to_dict() if hasattr(spec, "to_dict") else dict(spec))}
    known = {field.name for field in dataclasses.fields(SpectralContract)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ContractError(f"custom contract {fields['name']!r}: unknown fields "
                            f"{', '.join(unknown)}; use only {', '.join(sorted(known))}")
    if "sample_rate" not in fields:
        raise ContractError(f"custom contract {fields['name']!r} has no sample_rate; add it")
    return SpectralContract(**fields)


# ------------------------------------------------------------------------ feature extraction
def frame(audio: jax.Array, contract: SpectralContract) -> jax.Array:
    """Padded, overlapping frames of a waveform: [..., samples] -> [..., frames, n_fft]."""
    pad = contract.pad
    if audio.shape[-1] <= pad:
        raise ValueError(f"audio of {audio.shape[-1]} samples is shorter than one analysis "
                         f"frame of contract {contract.name!r} (needs > {pad})")
    widths = [(0, 0)] * (audio.ndim - 1) + [(pad, pad)]
    padded = jnp.pad(audio, widths, mode="reflect")
    n_frames = contract.num_frames(audio.shape[-1])
    index = (np.arange(n_frames)[:, None] * contract.hop_length
             + np.arange(contract.n_fft)[None, :])
    return padded[..., index]


def stft(audio: jax.Array, contract: SpectralContract) -> jax.Array:
    """Complex STFT under the contract's framing: [..., samples] -> [..., n_fft//2+1, frames]."""
    frames = frame(audio, contract)
    spec = jnp.fft.rfft(frames * jnp.asarray(contract.window, frames.dtype), axis=-1)
    return jnp.swapaxes(spec, -1, -2)


def magnitude(spec: jax.Array) -> jax.Array:
    return jnp.sqrt(spec.real**2 + spec.imag**2 + MAGNITUDE_EPS)


def mel_from_magnitude(mag: jax.Array, contract: SpectralContract) -> jax.Array:
    """Linear STFT magnitude [..., bins, frames] -> log-mel [..., n_mels, frames]."""
    basis = jnp.asarray(contract.mel_basis, mag.dtype)
    mel = jnp.einsum("mf,...ft->...mt", basis, mag ** contract.magnitude_power)
    return contract.to_log(mel)


def log_mel(audio: jax.Array, contract: SpectralContract) -> jax.Array:
    """The contract's log-mel of a waveform: [..., samples] -> [..., n_mels, frames].

    Computed in float32, or in float64 for float64 input when jax_enable_x64 is on.
    """
    audio = jnp.asarray(audio)
    if not jnp.issubdtype(audio.dtype, jnp.floating):
        audio = audio.astype(jnp.float32)
    return mel_from_magnitude(magnitude(stft(audio, contract)), contract)


def istft(spec: jax.Array, contract: SpectralContract, num_samples: int) -> jax.Array:
    """Inverse of `stft` by windowed overlap-add: [..., bins, frames] -> [..., num_samples].

    Exact for an STFT of a signal (up to float error); for a modified spectrogram it returns
    the least-squares signal whose STFT is closest (Griffin & Lim 1984). The overlap-add is a
    scatter-add: on GPU its summation order, hence the last bits, vary from run to run unless
    XLA_FLAGS=--xla_gpu_deterministic_ops=true.
    """
    frames = jnp.fft.irfft(jnp.swapaxes(spec, -1, -2), n=contract.n_fft, axis=-1)
    n_frames = frames.shape[-2]
    total = (n_frames - 1) * contract.hop_length + contract.n_fft
    index = (np.arange(n_frames)[:, None] * contract.hop_length
             + np.arange(contract.n_fft)[None, :]).reshape(-1)
    lead = frames.shape[:-2]
    window = jnp.asarray(contract.window, frames.dtype)
    signal = jnp.zeros((*lead, total), frames.dtype).at[..., index].add(
        (frames * window).reshape((*lead, -1)))
    norm = np.zeros(total)
    np.add.at(norm, index, np.tile(contract.window**2, n_frames))
    signal = signal / jnp.asarray(np.maximum(norm, 1e-8), frames.dtype)
    start = contract.pad
    signal = signal[..., start:start + num_samples]
    missing = num_samples - signal.shape[-1]
    if missing > 0:
        signal = jnp.pad(signal, [(0, 0)] * len(lead) + [(0, missing)])
    return signal
