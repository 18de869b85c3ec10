"""Audio-domain metrics of a generated waveform against the reference recording.

All metrics take mono float audio at the contract's rate; the longer signal is cut to the
shorter. Lower is better for every metric except `rms_ratio` (ideal 1).

- mel_l1_db: mean |dB(mel_gen) - dB(mel_ref)| under the contract's mel (dB = 20 log10 of a
  magnitude mel, 10 log10 of a power mel), both floored 80 dB below the reference's peak (as
  librosa's top_db) so that differences between two kinds of near-silence do not dominate.
- spectral_convergence: ||S_ref - S_gen||_F / ||S_ref||_F on the contract's STFT magnitude.
- mrstft: multi-resolution STFT distance, mean over (n_fft, hop, win) = (512, 50, 240),
  (1024, 120, 600), (2048, 240, 1200) (BigVGAN's M-STFT / auraloss defaults) of spectral
  convergence + mean |log S_ref - log S_gen| (magnitudes clamped at 1e-5).
- rms_ratio: RMS(gen) / RMS(ref).
- centroid_error_hz: |centroid(gen) - centroid(ref)|, each the energy-weighted mean spectral
  centroid over the whole signal.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from tnca_jax.contract import SpectralContract, log_mel, magnitude, stft

TOP_DB = 80.0
MRSTFT_RESOLUTIONS = ((512, 50, 240), (1024, 120, 600), (2048, 240, 1200))
MRSTFT_FLOOR = 1e-5


def _align(reference: np.ndarray, generated: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = min(len(reference), len(generated))
    return np.asarray(reference[:n], np.float32), np.asarray(generated[:n], np.float32)


def mel_l1_db(reference: np.ndarray, generated: np.ndarray, contract: SpectralContract) -> float:
    reference, generated = _align(reference, generated)
    return mel_l1_db_from_log_mel(log_mel(reference, contract), log_mel(generated, contract),
                                  contract)


def mel_l1_db_from_log_mel(reference: jax.Array, generated: jax.Array,
                           contract: SpectralContract) -> float:
    """mel_l1_db between two log-mels of the same shape under `contract`."""
    ref_db = np.asarray(contract.to_db(jnp.asarray(reference)))
    gen_db = np.asarray(contract.to_db(jnp.asarray(generated)))
    floor = ref_db.max() - TOP_DB
    return float(np.mean(np.abs(np.maximum(ref_db, floor) - np.maximum(gen_db, floor))))


@functools.lru_cache(maxsize=32)
def _analysis(n_fft: int, hop: int, win: int, sample_rate: int) -> SpectralContract:
    return SpectralContract(name=f"stft{n_fft}", sample_rate=sample_rate, n_fft=n_fft,
                            hop_length=hop, win_length=win, n_mels=1)


def _stft_magnitude(audio: np.ndarray, n_fft: int, hop: int, win: int, sample_rate: int
                    ) -> np.ndarray:
    analysis = _analysis(n_fft, hop, win, sample_rate)
    return np.asarray(magnitude(stft(jnp.asarray(audio), analysis)))


def spectral_convergence(reference: np.ndarray, generated: np.ndarray,
                         contract: SpectralContract) -> float:
    reference, generated = _align(reference, generated)
    args = (contract.n_fft, contract.hop_length, contract.win_length, contract.sample_rate)
    ref, gen = _stft_magnitude(reference, *args), _stft_magnitude(generated, *args)
    return float(np.linalg.norm(ref - gen) / np.linalg.norm(ref))


def mrstft(reference: np.ndarray, generated: np.ndarray, sample_rate: int) -> float:
    reference, generated = _align(reference, generated)
    total = 0.0
    for n_fft, hop, win in MRSTFT_RESOLUTIONS:
        ref = _stft_magnitude(reference, n_fft, hop, win, sample_rate)
        gen = _stft_magnitude(generated, n_fft, hop, win, sample_rate)
        sc = np.linalg.norm(ref - gen) / np.linalg.norm(ref)
        log_l1 = np.mean(np.abs(np.log(np.maximum(ref, MRSTFT_FLOOR))
                                - np.log(np.maximum(gen, MRSTFT_FLOOR))))
        total += sc + log_l1
    return float(total / len(MRSTFT_RESOLUTIONS))


def rms_ratio(reference: np.ndarray, generated: np.ndarray) -> float:
    reference, generated = _align(reference, generated)
    return float(np.sqrt(np.mean(generated**2)) / np.sqrt(np.mean(reference**2)))


def spectral_centroid_hz(audio: np.ndarray, contract: SpectralContract) -> float:
    """Energy-weighted mean spectral centroid of a whole signal, in Hz."""
    power = _stft_magnitude(audio, contract.n_fft, contract.hop_length, contract.win_length,
                            contract.sample_rate) ** 2
    freqs = np.linspace(0, contract.sample_rate / 2, power.shape[0])
    return float((freqs[:, None] * power).sum() / power.sum())


def centroid_error_hz(reference: np.ndarray, generated: np.ndarray,
                      contract: SpectralContract) -> float:
    reference, generated = _align(reference, generated)
    return abs(spectral_centroid_hz(generated, contract)
               - spectral_centroid_hz(reference, contract))


@dataclasses.dataclass(frozen=True)
class AudioMetrics:
    mel_l1_db: float
    spectral_convergence: float
    mrstft: float
    rms_ratio: float
    centroid_error_hz: float

    def to_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


def compare(reference: np.ndarray, generated: np.ndarray, contract: SpectralContract
            ) -> AudioMetrics:
    """Every metric of `generated` against `reference` (both mono, at the contract's rate)."""
    return AudioMetrics(
        mel_l1_db=mel_l1_db(reference, generated, contract),
        spectral_convergence=spectral_convergence(reference, generated, contract),
        mrstft=mrstft(reference, generated, contract.sample_rate),
        rms_ratio=rms_ratio(reference, generated),
        centroid_error_hz=centroid_error_hz(reference, generated, contract),
    )
