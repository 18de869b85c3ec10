"""Audio-domain metrics of a generated waveform against the reference recording.

All metrics take mono float audio at the contract's rate (a `MelContract`: the run's own, or
for a linear-frequency run `tnca_jax.contract.measuring_contract`'s); the longer signal is cut
to the shorter. `METRICS` holds each one's unit, ideal value, direction and a one-line meaning (the
report's table and `badness` read it). In brief:

- mel_l1_db: mean |dB(mel_gen) - dB(mel_ref)| under the contract's mel (dB = 20 log10 of a
  magnitude mel, 10 log10 of a power mel), both floored 80 dB below the reference's peak (as
  librosa's top_db) so that differences between two kinds of near-silence do not dominate.
- spectral_convergence: ||S_ref - S_gen||_F / ||S_ref||_F on the contract's STFT magnitude.
- log_spectral_distance_db: per frame, the RMS over STFT bins of the power difference in dB
  (same 80 dB floor), averaged over frames.
- mrstft: multi-resolution STFT distance, mean over (n_fft, hop, win) = (512, 50, 240),
  (1024, 120, 600), (2048, 240, 1200) (BigVGAN's M-STFT / auraloss defaults) of spectral
  convergence + mean |log S_ref - log S_gen| (magnitudes clamped at 1e-5).
- mrstft_auraloss: the same distance as the published vocoders report it (auraloss's
  `MultiResolutionSTFTLoss` defaults, as BigVGAN's evaluation calls it: BigVGAN-v2 scores 0.70
  on LibriTTS speech): frames centred, magnitudes sqrt(max(re^2 + im^2, 1e-8)) in both terms.
  Tested against auraloss itself.
- mcd_db: mel-cepstral distortion, (10 / ln 10) sqrt(2 sum_d (c_d - c'_d)^2) averaged over
  frames, with c_1..c_13 (c_0, the overall level, left out) the orthonormal DCT-II over bands
  of the natural log of the contract's mel magnitude, floored 80 dB below the reference's peak.
- snr_db: 10 log10(sum ref^2 / sum (ref - gen)^2), capped at 200 dB. Meaningful only where
  the phase is grown: a vocoder that invents phase (Griffin-Lim) scores about 0 dB or below
  even when it sounds right.
- rms_ratio: RMS(gen) / RMS(ref).
- onset_level_db: the level of the first 50 ms, generated minus reference (dB): a note that
  starts before the recording does (a thump) is high.
- centroid_error_hz: |centroid(gen) - centroid(ref)|, each the energy-weighted mean spectral
  centroid over the whole signal.
- f0_error_cents, voiced_agreement: pYIN (librosa, 65-2093 Hz, C2-C7) on both signals; the mean
  |1200 log2(f0_gen / f0_ref)| over frames voiced in both (None when there are none), and the
  fraction of frames whose voiced/unvoiced decision agrees.
- visqol_moslqo: ViSQOL v3 in audio mode (visqol-python's bundled model) on both signals
  resampled to 48 kHz: MOS-LQO from 1 to about 4.73 (identical audio). None, with the reason in
  `notes`, when visqol-python is not installed or the audio is shorter than about 1 s.
- pesq_mos: wide-band PESQ (ITU-T P.862.2, the `pesq` package) at 16 kHz, MOS-LQO 1.04 to 4.64.
  A speech metric, reported because the published vocoders report it.
- cdpam_distance: CDPAM (Manocha et al. 2021, the `cdpam` package's shipped weights), a learned
  perceptual distance at 22.05 kHz; 0 for identical audio, lower is better. Slow on a CPU (about
  10 s per pair of 2 s notes), for evaluation only.
  Both are None, with the reason in `notes`, unless `pip install 'tnca_jax[perceptual]'`.

The last five (`OPTIONAL`) run in a worker process (`tnca_jax.optional_metrics`): if their
native code crashes or hangs, they are missing (None, with the reason in `notes`) and the rest
of the run goes on.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Collection, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from tnca_jax import dsp, losses, optional_metrics
from tnca_jax.contract import DB_PER_NEPER, MelContract, SpectralContract

TOP_DB = losses.TOP_DB
MCD_COEFFICIENTS = 13  # c_1..c_13
SNR_MAX_DB = 200.0
SNR_VOCODER_PHASE = ("not meaningful here: the TNCA grows a log-mel, the phase comes "
                     "from the vocoder")
OPTIONAL = frozenset({"f0_error_cents", "voiced_agreement", "visqol_moslqo", "pesq_mos",
                      "cdpam_distance"})


@dataclasses.dataclass(frozen=True)
class MetricInfo:
    """How to read one metric: its unit, ideal value, direction and meaning in one line."""

    unit: str
    ideal: float
    higher_is_better: bool
    about: str


METRICS: dict[str, MetricInfo] = {
    "mel_l1_db": MetricInfo("dB", 0.0, False, "mean absolute log-mel difference, in decibels"),
    "spectral_convergence": MetricInfo(
        "", 0.0, False, "relative Frobenius error of the linear STFT magnitude (phase-blind)"),
    "log_spectral_distance_db": MetricInfo(
        "dB", 0.0, False, "per-frame RMS of the STFT power difference in dB, averaged"),
    "mrstft": MetricInfo("", 0.0, False, "multi-resolution STFT distance at FFT sizes 512, "
                         "1024, 2048 (spectral convergence + log-magnitude L1)"),
    "mrstft_auraloss": MetricInfo("", 0.0, False, "the published vocoders' M-STFT "
                                  "(auraloss defaults; BigVGAN-v2: 0.70 on speech)"),
    "mcd_db": MetricInfo("dB", 0.0, False, "mel-cepstral distortion over c1-c13 (timbre "
                         "envelope, level left out)"),
    "snr_db": MetricInfo("dB", math.inf, True, "waveform SNR; meaningful only where phase is "
                         "grown (Griffin-Lim invents phase: about 0 dB or below is expected)"),
    "rms_ratio": MetricInfo("x", 1.0, False, "loudness: RMS of the generated over the "
                            "reference's"),
    "onset_level_db": MetricInfo("dB", 0.0, False, "the first 50 ms's level against the "
                                 "recording's (a note that starts with a thump is high)"),
    "centroid_error_hz": MetricInfo("Hz", 0.0, False, "brightness: difference of the mean "
                                    "spectral centroids"),
    "f0_error_cents": MetricInfo("cents", 0.0, False, "pitch: mean pYIN f0 error over frames "
                                 "voiced in both (100 cents = 1 semitone)"),
    "voiced_agreement": MetricInfo("", 1.0, True, "fraction of frames where pYIN agrees "
                                   "whether the note sounds (is voiced)"),
    "visqol_moslqo": MetricInfo("MOS", 4.73, True, "ViSQOL audio-mode perceptual quality, "
                                "1 (bad) to 4.73 (identical)"),
    "pesq_mos": MetricInfo("MOS", 4.64, True, "wide-band PESQ at 16 kHz (a speech metric), "
                           "1.04 (bad) to 4.64"),
    "cdpam_distance": MetricInfo("", 0.0, False, "CDPAM learned perceptual distance "
                                 "(0: identical)"),
}


def badness(name: str, value: float | None) -> float:
    """A number that is lower the better `value` of metric `name` is (inf when missing)."""
    if value is None or not math.isfinite(value):
        return math.inf
    if name == "rms_ratio":
        return abs(math.log(max(value, 1e-12)))
    if name == "onset_level_db":
        return abs(value)
    return -value if METRICS[name].higher_is_better else value


def _align(reference: np.ndarray, generated: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = min(len(reference), len(generated))
    return np.asarray(reference[:n], np.float32), np.asarray(generated[:n], np.float32)


def _floored(ref_db: np.ndarray, gen_db: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    floor = ref_db.max() - TOP_DB
    return np.maximum(ref_db, floor), np.maximum(gen_db, floor)


def mel_db_from_log_mel(reference: jax.Array, generated: jax.Array,
                        contract: SpectralContract
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Two log-mels [n_mels, frames] under `contract` -> both in dB, floored 80 dB below the
    reference's peak (what mel_l1_db and mcd_db compare)."""
    return _floored(np.asarray(contract.to_db(jnp.asarray(reference))),
                    np.asarray(contract.to_db(jnp.asarray(generated))))


def mel_db(reference: np.ndarray, generated: np.ndarray, contract: MelContract
           ) -> tuple[np.ndarray, np.ndarray]:
    """Aligned audio -> floored mel dB of both, [n_mels, frames] each."""
    reference, generated = _align(reference, generated)
    return mel_db_from_log_mel(dsp.log_mel(reference, contract),
                               dsp.log_mel(generated, contract), contract)


def mel_l1_db_from_log_mel(reference: jax.Array, generated: jax.Array,
                           contract: SpectralContract) -> float:
    """mel_l1_db between two log spectrograms (log-mels, or log magnitudes under a linear
    contract) of the same shape under `contract` (`tnca_jax.losses.log_mel_l1_db`)."""
    return float(losses.log_mel_l1_db(jnp.asarray(reference), jnp.asarray(generated),
                                      contract))


def mel_l1_db(reference: np.ndarray, generated: np.ndarray, contract: MelContract) -> float:
    reference, generated = _align(reference, generated)
    return mel_l1_db_from_log_mel(dsp.log_mel(reference, contract),
                                  dsp.log_mel(generated, contract), contract)


def _contract_magnitude(audio: np.ndarray, contract: MelContract) -> np.ndarray:
    """[bins, frames] STFT magnitude under the contract's framing."""
    return np.asarray(dsp.stft_magnitude(jnp.asarray(audio), contract))


def spectral_convergence(reference: np.ndarray, generated: np.ndarray,
                         contract: MelContract) -> float:
    reference, generated = _align(reference, generated)
    ref, gen = _contract_magnitude(reference, contract), _contract_magnitude(generated, contract)
    return float(np.linalg.norm(ref - gen) / np.linalg.norm(ref))


def log_spectral_distance_db(reference: np.ndarray, generated: np.ndarray,
                             contract: MelContract) -> float:
    reference, generated = _align(reference, generated)
    ref_db, gen_db = _floored(20 * np.log10(_contract_magnitude(reference, contract)),
                              20 * np.log10(_contract_magnitude(generated, contract)))
    return float(np.mean(np.sqrt(np.mean((ref_db - gen_db) ** 2, axis=0))))


_mrstft_distance = jax.jit(losses.mrstft_distance, static_argnums=2,
                           static_argnames="auraloss")  # compiled per length


def mrstft(reference: np.ndarray, generated: np.ndarray, sample_rate: int) -> float:
    """`tnca_jax.losses.mrstft_distance` of the aligned signals (the training loss's number)."""
    reference, generated = _align(reference, generated)
    return float(_mrstft_distance(jnp.asarray(reference), jnp.asarray(generated), sample_rate))


def mrstft_auraloss(reference: np.ndarray, generated: np.ndarray, sample_rate: int) -> float:
    """The published vocoders' M-STFT of the aligned signals (auraloss's
    `MultiResolutionSTFTLoss` defaults; `tnca_jax.losses.mrstft_distance`)."""
    reference, generated = _align(reference, generated)
    return float(_mrstft_distance(jnp.asarray(reference), jnp.asarray(generated), sample_rate,
                                  auraloss=True))


def _dct_matrix(n: int, first: int, count: int) -> np.ndarray:
    """Rows first..first+count-1 of the orthonormal DCT-II of length n: [count, n]."""
    k = np.arange(first, first + count)[:, None]
    return np.sqrt(2.0 / n) * np.cos(np.pi * k * (2 * np.arange(n)[None, :] + 1) / (2 * n))


def mel_cepstral_distortion_db(reference: np.ndarray, generated: np.ndarray,
                               contract: MelContract) -> float:
    ref_db, gen_db = mel_db(reference, generated, contract)
    dct = _dct_matrix(contract.n_mels, 1, min(MCD_COEFFICIENTS, contract.n_mels - 1))
    diff = dct @ ((ref_db - gen_db) / DB_PER_NEPER)  # dB -> ln of magnitude, then cepstra
    return float(np.mean(10 / math.log(10) * np.sqrt(2 * np.sum(diff**2, axis=0))))


def snr_db(reference: np.ndarray, generated: np.ndarray) -> float:
    reference, generated = _align(reference, generated)
    signal = float(np.sum(reference.astype(np.float64) ** 2))
    noise = float(np.sum((reference.astype(np.float64) - generated) ** 2))
    return min(SNR_MAX_DB, 10 * math.log10(signal / max(noise, 1e-300)))


def rms_ratio(reference: np.ndarray, generated: np.ndarray) -> float:
    reference, generated = _align(reference, generated)
    return float(np.sqrt(np.mean(generated**2)) / np.sqrt(np.mean(reference**2)))


ONSET_SECONDS = 0.05


def onset_level_db(reference: np.ndarray, generated: np.ndarray, sample_rate: int) -> float:
    """The RMS of the first ONSET_SECONDS of `generated` against that of `reference`, in dB."""
    n = round(ONSET_SECONDS * sample_rate)

    def level(audio: np.ndarray) -> float:
        return 10 * math.log10(max(float(np.mean(np.square(audio[:n], dtype=np.float64))),
                                   1e-20))

    return level(generated) - level(reference)


def spectral_centroid_hz(audio: np.ndarray, contract: MelContract) -> float:
    """Energy-weighted mean spectral centroid of a whole signal, in Hz."""
    power = _contract_magnitude(audio, contract) ** 2
    freqs = np.linspace(0, contract.sample_rate / 2, power.shape[0])
    return float((freqs[:, None] * power).sum() / power.sum())


def centroid_error_hz(reference: np.ndarray, generated: np.ndarray,
                      contract: MelContract) -> float:
    reference, generated = _align(reference, generated)
    return abs(spectral_centroid_hz(generated, contract)
               - spectral_centroid_hz(reference, contract))


@dataclasses.dataclass(frozen=True)
class AudioMetrics:
    """Every metric of `METRICS` (None: not computed, or missing for the reason in `notes`)."""

    mel_l1_db: float | None = None
    spectral_convergence: float | None = None
    log_spectral_distance_db: float | None = None
    mrstft: float | None = None
    mrstft_auraloss: float | None = None
    mcd_db: float | None = None
    snr_db: float | None = None
    rms_ratio: float | None = None
    onset_level_db: float | None = None
    centroid_error_hz: float | None = None
    f0_error_cents: float | None = None
    voiced_agreement: float | None = None
    visqol_moslqo: float | None = None
    pesq_mos: float | None = None
    cdpam_distance: float | None = None
    notes: dict[str, str] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


Metric = Callable[[np.ndarray, np.ndarray, MelContract], float]
_DIRECT: dict[str, Metric] = {
    "mel_l1_db": mel_l1_db,
    "spectral_convergence": spectral_convergence,
    "log_spectral_distance_db": log_spectral_distance_db,
    "mrstft": lambda ref, gen, contract: mrstft(ref, gen, contract.sample_rate),
    "mrstft_auraloss": lambda ref, gen, contract: mrstft_auraloss(ref, gen,
                                                                  contract.sample_rate),
    "mcd_db": mel_cepstral_distortion_db,
    "snr_db": lambda ref, gen, _: snr_db(ref, gen),
    "rms_ratio": lambda ref, gen, _: rms_ratio(ref, gen),
    "onset_level_db": lambda ref, gen, contract: onset_level_db(ref, gen, contract.sample_rate),
    "centroid_error_hz": centroid_error_hz,
}


def compare_many(reference: np.ndarray, generated: Sequence[np.ndarray],
                 contract: MelContract, *, only: Collection[str] | None = None
                 ) -> list[AudioMetrics]:
    """The metrics of each of `generated` against `reference` (all mono, at the contract's
    rate): all of `METRICS`, or those named in `only`. The optional ones of all signals are
    measured in one batch by the worker (`tnca_jax.optional_metrics`)."""
    names = set(METRICS) if only is None else set(only)
    unknown = names - set(METRICS)
    if unknown:
        raise ValueError(f"unknown metric(s) {', '.join(sorted(unknown))}; choose from "
                         f"{', '.join(METRICS)}")
    optional = (optional_metrics.measure(np.asarray(reference, np.float32),
                                         [np.asarray(x, np.float32) for x in generated],
                                         contract.sample_rate, names & OPTIONAL)
                if names & OPTIONAL else [({}, {})] * len(generated))
    return [AudioMetrics(**{name: _DIRECT[name](reference, audio, contract)
                            for name in names & _DIRECT.keys()}, **values, notes=notes)
            for audio, (values, notes) in zip(generated, optional, strict=True)]


def compare(reference: np.ndarray, generated: np.ndarray, contract: MelContract, *,
            only: Collection[str] | None = None) -> AudioMetrics:
    """The metrics of `generated` against `reference` (both mono, at the contract's rate):
    all of `METRICS`, or those named in `only`."""
    return compare_many(reference, [generated], contract, only=only)[0]
