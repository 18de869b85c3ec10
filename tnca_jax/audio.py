"""Loading and writing audio: any soundfile-readable file to mono float32 at a contract rate."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

SILENCE_DBFS = -60.0  # Peak level under which a file counts as silent.


class AudioError(ValueError):
    """Audio that cannot be used as a training target or reference."""


def load_audio(path: str | os.PathLike, sample_rate: int, *, trim_db: float | None = 60.0,
               max_seconds: float | None = None) -> np.ndarray:
    """Read a file as mono float32 at `sample_rate`.

    Multichannel audio is mixed down by averaging; the result is resampled (soxr) to the target
    rate; with `trim_db`, leading and trailing audio more than `trim_db` below the peak is cut;
    with `max_seconds`, the result is cut to that length.

    Raises:
      AudioError: missing, unreadable, non-finite, silent or too short audio, with a one-line
        message that names the file and the problem.
    """
    import librosa
    import soundfile as sf

    path = Path(path)
    if not path.exists():
        raise AudioError(f"audio file not found: {path}")
    if path.is_dir():
        raise AudioError(f"audio path is a directory, not a file: {path}")
    try:
        data, file_rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as err:
        raise AudioError(f"cannot read {path} as audio ({err}); give a WAV/FLAC/OGG file") from None
    if data.size == 0:
        raise AudioError(f"{path} contains no samples")
    if not np.all(np.isfinite(data)):
        raise AudioError(f"{path} contains NaN or Inf samples; re-export it as PCM audio")
    audio = data.mean(axis=1)
    if file_rate != sample_rate:
        audio = librosa.resample(audio, orig_sr=file_rate, target_sr=sample_rate)
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    if peak <= 10 ** (SILENCE_DBFS / 20):
        raise AudioError(f"{path} is silent (peak {20 * np.log10(max(peak, 1e-12)):.0f} dBFS); "
                         "give a recording of a note")
    if trim_db is not None:
        audio, _ = librosa.effects.trim(audio, top_db=trim_db, frame_length=2048, hop_length=512)
    if max_seconds is not None:
        audio = audio[: round(max_seconds * sample_rate)]
    return np.ascontiguousarray(audio, dtype=np.float32)


def write_wav(path: str | os.PathLike, audio: np.ndarray, sample_rate: int) -> None:
    """Write mono float audio as 16-bit PCM WAV, atomically (temp file then rename)."""
    import soundfile as sf

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    sf.write(str(tmp), np.clip(np.asarray(audio, np.float32), -1.0, 1.0), sample_rate,
             subtype="PCM_16", format="WAV")
    os.replace(tmp, path)
