"""Loading and writing audio: any soundfile-readable file to mono float32 at a contract rate."""

from __future__ import annotations

import dataclasses
import io
import logging
import os
import re
from pathlib import Path

import numpy as np

from tnca_jax.errors import UserError
from tnca_jax.files import replacing
from tnca_jax.numba_cache import load_librosa

SILENCE_DBFS = -60.0  # Peak level under which a file counts as silent.
FADE_SECONDS = 0.1  # Fade-out where a recording longer than max_seconds is cut.
CUT_MARGIN_SECONDS = 2.0  # Decoded beyond max_seconds, to find the sound's end and a quiet cut.
DC_WARN_DBFS = -40.0  # A DC offset above this level is removed with a warning (else silently).
# What a note is, at the least: NOTE_SECONDS of frames (NOTE_FRAME samples, hop NOTE_HOP) whose
# RMS is within NOTE_RANGE_DB of the loudest frame's. A click is a few frames, silence none.
NOTE_SECONDS = 0.1
NOTE_RANGE_DB = 40.0
NOTE_FRAME, NOTE_HOP = 1024, 256
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

    The mono signal's DC offset (its mean) is removed before anything looks at its level.

    Accepted with a logged warning: clipped audio (kept as it is: a clipped recording is still
    the note to grow), float audio above full scale (scaled to peak 1), rates below
    `sample_rate` (nothing above their Nyquist frequency) and a DC offset above -40 dBFS.

    Raises:
      AudioError: missing, unreadable, truncated, non-finite, silent (or only a DC offset) or
        empty audio, and audio that holds no note: less than `NOTE_SECONDS` of sound within
        `NOTE_RANGE_DB` of its loudest moment (a click in silence). The one-line message names
        the file, the problem and the fix.
    """
    librosa = load_librosa()
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
    offset = float(np.mean(audio, dtype=np.float64))
    audio = audio - np.float32(offset)
    if file_rate != sample_rate:
        audio = librosa.resample(audio, orig_sr=file_rate, target_sr=sample_rate)
    peak = float(np.max(np.abs(audio), initial=0.0))
    if peak <= 10 ** (SILENCE_DBFS / 20):
        mixed = f" after mixing its {channels} channels to mono" if channels > 1 else ""
        if abs(offset) > 10 ** (SILENCE_DBFS / 20):
            raise AudioError(f"{path} holds only a constant (DC) offset of {offset:.3g}{mixed}, "
                             "no sound; give a recording of a note")
        raise AudioError(f"{path} is silent{mixed} (peak {_dbfs(peak):.0f} dBFS); give a "
                         "recording of a note")
    if abs(offset) > 10 ** (DC_WARN_DBFS / 20):
        logger.warning("%s has a DC offset of %.3g (%.0f dBFS): removed", path, offset,
                       _dbfs(abs(offset)))
    if trim_db is not None:
        audio, _ = librosa.effects.trim(audio, top_db=trim_db, frame_length=2048, hop_length=512)
    _require_a_note(audio, sample_rate, path)
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
                  f"{FADE_SECONDS * 1000:.0f} ms fade-out (--config.data.max_seconds sets the cap)")


def _dbfs(level: float) -> float:
    return 20 * np.log10(max(level, 1e-12))


def _require_a_note(audio: np.ndarray, sample_rate: int, path: Path) -> None:
    """Refuse audio with less than NOTE_SECONDS of sound near its loudest moment (see the
    constants): a click, a burst or a pop in silence is not a note to grow. Audio shorter than
    that altogether is left to the callers' length checks."""
    librosa = load_librosa()

    if len(audio) < NOTE_SECONDS * sample_rate:
        return
    rms = librosa.feature.rms(y=audio, frame_length=NOTE_FRAME, hop_length=NOTE_HOP,
                              center=True)[0]
    loud = rms >= rms.max(initial=0.0) * 10 ** (-NOTE_RANGE_DB / 20)
    sounding = (int(loud.sum()) - 1) * NOTE_HOP / sample_rate  # frames overlap: count hops
    if sounding < NOTE_SECONDS:
        raise AudioError(
            f"{path} holds no sustained sound: only {1000 * max(sounding, 0):.0f} ms of it lie "
            f"within {NOTE_RANGE_DB:.0f} dB of its loudest moment (a click or a pop in "
            f"silence?), a note needs {1000 * NOTE_SECONDS:.0f} ms; give a recording of a note")


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


def fit_full_scale(audio: np.ndarray) -> np.ndarray:
    """Rendered notes [..., samples], each whose peak exceeds full scale (1.0) scaled down by
    one gain to peak at full scale; the others as they are. A normalisation, not a limiter: the
    waveform keeps its shape. (A recording is never above full scale here: `load_audio` scales
    a float file that is, so a note above it is the renderer's overshoot.)"""
    audio = np.asarray(audio, np.float32)
    peak = np.max(np.abs(audio), axis=-1, keepdims=True, initial=0.0)
    return np.where(peak > 1.0, audio / np.maximum(peak, 1.0), audio).astype(np.float32)


def write_wav(path: str | os.PathLike, audio: np.ndarray, sample_rate: int) -> None:
    """Write mono float audio as 16-bit PCM WAV, atomically (temp file then rename). Encoded
    in memory first, so that a failed write raises the OS's error (libsndfile would say only
    "System error"). Audio holding NaN or Inf (a broken renderer) is refused, not written
    (AudioError): a result is never silence or noise made of it."""
    import soundfile as sf

    if not np.all(np.isfinite(audio)):
        raise AudioError(f"the audio for {path} holds NaN or Inf (the renderer failed); not "
                         "written")
    encoded = io.BytesIO()
    sf.write(encoded, np.clip(np.asarray(audio, np.float32), -1.0, 1.0), sample_rate,
             subtype="PCM_16", format="WAV")
    with replacing(Path(path)) as tmp:
        tmp.write_bytes(encoded.getvalue())
