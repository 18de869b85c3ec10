"""Loading and writing audio: any soundfile-readable file to mono float32 at a contract rate."""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from pathlib import Path

import numpy as np

from tnca_jax.errors import UserError
from tnca_jax.files import replacing

SILENCE_DBFS = -60.0  # Peak level under which a file counts as silent.
FADE_SECONDS = 0.1  # Fade-out where a recording longer than max_seconds is cut.
CUT_MARGIN_SECONDS = 2.0  # Decoded beyond max_seconds, to find the sound's end and a quiet cut.
CLIP_LEVEL = 0.999  # A sample at or above this magnitude sits at full scale.
CLIP_FRACTION = 1e-3  # More samples than this at full scale: the recording clipped.
# Data sizes that streaming writers leave in a WAV header when the length is unknown.
_UNKNOWN_DATA_SIZES = (0, 0xFFFFFFFF)

logger = logging.getLogger(__name__)


class AudioError(UserError, ValueError):
    """Audio that cannot be used as a training target or reference."""


@dataclasses.dataclass(frozen=True)
class Recording:
    """A recording as loaded: `audio` (mono float32 at the asked rate), how long the trimmed
    sound was before any cut (`source_seconds`), and how it was cut (`cut`, None if whole)."""

    audio: np.ndarray
    source_seconds: float
    cut: str | None = None


def load_audio(path: str | os.PathLike, sample_rate: int, *, trim_db: float | None = 60.0,
               max_seconds: float | None = None) -> np.ndarray:
    """`load_recording(...).audio`: the waveform alone."""
    return load_recording(path, sample_rate, trim_db=trim_db, max_seconds=max_seconds).audio


def load_recording(path: str | os.PathLike, sample_rate: int, *,
                   trim_db: float | None = 60.0, max_seconds: float | None = None
                   ) -> Recording:
    """Read a file as mono float32 at `sample_rate`.

    Any soundfile-readable file (WAV/FLAC/OGG..., 8/16/24/32-bit or float, any rate and
    channel count): channels are mixed down by averaging; the result is resampled (soxr) to the
    target rate; with `trim_db`, leading and trailing audio more than `trim_db` below the peak
    is cut; with `max_seconds`, longer sound is cut at its quietest point in the last quarter
    before `max_seconds` and faded out (`cut_quietly`), and only about that much of a
    longer file is decoded (from one second before its first block above the trim level).

    Accepted with a logged warning: clipped audio (kept as it is: a clipped recording is still
    the note to grow), float audio above full scale (scaled to peak 1) and rates below
    `sample_rate` (nothing above their Nyquist frequency).

    Raises:
      AudioError: missing, unreadable, truncated, non-finite, silent or empty audio, with a
        one-line message that names the file, the problem and the fix.
    """
    import librosa
    import soundfile as sf

    path = Path(path)
    if not path.exists():
        raise AudioError(f"audio file not found: {path}")
    if path.is_dir():
        raise AudioError(f"audio path is a directory, not a file: {path}")
    try:
        path.open("rb").close()  # libsndfile would say only "System error".
    except OSError as err:
        raise AudioError(f"cannot read {path} ({err.strerror}); fix its permissions or copy "
                         "it somewhere readable") from None
    try:
        with sf.SoundFile(str(path)) as file:
            _require_complete(file, path)
            data = _read_used_part(file, path, trim_db, max_seconds)
            file_rate, channels = file.samplerate, file.channels
            read_all = file.tell() >= file.frames
    except AudioError:
        raise
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as err:
        raise AudioError(f"cannot read {path} as audio ({err}); give a readable "
                         "WAV/FLAC/OGG file") from None
    if data.size == 0:
        raise AudioError(f"{path} contains no samples; give a recording of a note")
    data = _fix_level(data, path)
    if file_rate < sample_rate:
        logger.warning("%s is sampled at %d Hz, below %d Hz: it holds nothing above %g Hz",
                       path, file_rate, sample_rate, file_rate / 2)
    audio = data.mean(axis=1)
    if file_rate != sample_rate:
        audio = librosa.resample(audio, orig_sr=file_rate, target_sr=sample_rate)
    peak = float(np.max(np.abs(audio), initial=0.0))
    if peak <= 10 ** (SILENCE_DBFS / 20):
        mixed = f" after mixing its {channels} channels to mono" if channels > 1 else ""
        raise AudioError(f"{path} is silent{mixed} (peak {20 * np.log10(max(peak, 1e-12)):.0f} "
                         "dBFS); give a recording of a note")
    if trim_db is not None:
        audio, _ = librosa.effects.trim(audio, top_db=trim_db, frame_length=2048, hop_length=512)
    source_seconds = len(audio) / sample_rate
    cut = None
    if max_seconds is not None and len(audio) > round(max_seconds * sample_rate):
        audio, cut = cut_quietly(audio, sample_rate, max_seconds)
        length = (f"{source_seconds:.2f} s" if read_all
                  else f"more than {max_seconds + CUT_MARGIN_SECONDS:g} s")
        cut = f"{path} has {length} of sound; {cut}"
    return Recording(np.ascontiguousarray(audio, dtype=np.float32), source_seconds, cut)


def cut_quietly(audio: np.ndarray, sample_rate: int, max_seconds: float
                ) -> tuple[np.ndarray, str]:
    """Cut `audio` to at most `max_seconds` where it is quietest, and fade it out.

    The cut falls at the 20 ms window of least energy among those ending in the last quarter
    before `max_seconds` (a note's own gap or decay, if it has one there), and the last
    `FADE_SECONDS` before it fade out on a raised cosine, so that the cut never clicks.
    Returns the cut audio and a sentence saying what was kept.
    """
    window, hop = round(0.02 * sample_rate), round(0.005 * sample_rate)
    end = round(max_seconds * sample_rate)
    start = round(0.75 * end)
    ends = np.arange(max(start, window), end + 1, hop)
    energy = np.array([np.sum(audio[e - window:e].astype(np.float64) ** 2) for e in ends])
    cut = int(ends[np.argmin(energy)])
    kept = audio[:cut].copy()
    fade = min(round(FADE_SECONDS * sample_rate), cut)
    kept[cut - fade:] *= (0.5 + 0.5 * np.cos(np.linspace(0, np.pi, fade))).astype(kept.dtype)
    return kept, (f"kept the first {cut / sample_rate:.2f} s, cut at its quietest point in "
                  f"{start / sample_rate:.2f}-{max_seconds:.2f} s with a "
                  f"{FADE_SECONDS * 1000:.0f} ms fade-out (--config.max_seconds sets the cap)")


def _require_complete(file, path: Path) -> None:
    """Refuse a WAV whose data chunk is shorter than its header declares (a cut-off copy)."""
    found = re.search(r"^data\s*:\s*(\d+) \(should be (\d+)\)", file.extra_info, re.MULTILINE)
    if found is None:
        return
    declared, present = int(found[1]), int(found[2])
    if declared not in _UNKNOWN_DATA_SIZES and present < declared:
        raise AudioError(f"{path} is truncated: it holds {present / declared:.0%} of the audio "
                         "its header declares; copy or export it again")


def _read_used_part(file, path: Path, trim_db: float | None,
                    max_seconds: float | None) -> np.ndarray:
    """[frames, channels] float32 of the part of an open file that `load_audio` can use.

    A first pass over one-second blocks checks every sample for NaN/Inf and finds the first
    block above the trim level; the second reads from one block before it, `max_seconds` plus
    two blocks (everything without a cap).
    """
    block = file.samplerate
    peaks = np.array([np.max(np.abs(chunk), initial=0.0)
                      for chunk in file.blocks(block, dtype="float32", always_2d=True)])
    if not np.all(np.isfinite(peaks)):
        raise AudioError(f"{path} contains NaN or Inf samples; re-export it as PCM audio")
    level = 0.0 if trim_db is None or peaks.size == 0 else peaks.max() * 10 ** (-trim_db / 20)
    onset = int(np.argmax(peaks > level)) if peaks.size else 0
    file.seek(max(onset - 1, 0) * block)
    frames = (-1 if max_seconds is None
              else round((max_seconds + CUT_MARGIN_SECONDS) * file.samplerate) + block)
    return file.read(frames, dtype="float32", always_2d=True)


def _fix_level(data: np.ndarray, path: Path) -> np.ndarray:
    """Scale float audio above full scale down to peak 1; warn about clipped audio."""
    peak = float(np.max(np.abs(data)))
    if peak > 1.0:
        logger.warning("%s peaks at %.2f, above full scale: scaled to peak 1", path, peak)
        return data / peak
    clipped = float(np.mean(np.abs(data) >= CLIP_LEVEL))
    if clipped > CLIP_FRACTION:
        logger.warning("%s is clipped (%.1f%% of samples at full scale); training on it as it "
                       "is", path, 100 * clipped)
    return data


def write_wav(path: str | os.PathLike, audio: np.ndarray, sample_rate: int) -> None:
    """Write mono float audio as 16-bit PCM WAV, atomically (temp file then rename)."""
    import soundfile as sf

    with replacing(Path(path)) as tmp:
        sf.write(str(tmp), np.clip(np.asarray(audio, np.float32), -1.0, 1.0), sample_rate,
                 subtype="PCM_16", format="WAV")
