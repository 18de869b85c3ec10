"""The music vocoder's training data: recordings concatenated for sampling inside the jitted
step, and segments drawn from them (a file uniformly, then a uniform offset in it), optionally
pitch-shifted so that the vocoder meets every pitch, not only the training notes'.

The held-out split is the project-wide rule of `tnca_jax.corpus` (pitch classes A, C#/Db and F
and unpitched phrases), or the files matching `data.held_out` globs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from tnca_jax import audio as audio_lib
from tnca_jax import corpus, distributed
from tnca_jax.contract import MelContract, SpectralContract
from tnca_jax.errors import ConfigError, MissingFileError

logger = logging.getLogger(__name__)

RESAMPLE_TAPS = 16  # Zero crossings of the windowed-sinc interpolator on each side.


class Corpus(NamedTuple):
    """Training recordings, concatenated (the carry of the vocoder's train step, replicated).

    Attributes:
      audio: [total_samples] float32, every recording after the other.
      starts: [files] int32 offset of each recording in `audio`.
      lengths: [files] int32 samples of each recording.
    """

    audio: jax.Array
    starts: jax.Array
    lengths: jax.Array


@dataclasses.dataclass(frozen=True)
class LoadedCorpus:
    """The training corpus (on the host: each train program places a copy, which its step
    donates) and the files it came from."""

    arrays: Corpus
    files: tuple[corpus.LabelledFile, ...]
    sample_rate: int

    @property
    def seconds(self) -> float:
        return float(np.sum(self.arrays.lengths)) / self.sample_rate

    def fingerprint(self) -> str:
        """A digest of the training audio: a workdir is resumed only by a run on the same."""
        digest = hashlib.sha256()
        digest.update(np.asarray(self.arrays.audio, np.float32).tobytes())
        digest.update(np.asarray(self.arrays.lengths).tobytes())
        return digest.hexdigest()[:16]


def split_files(paths: Sequence[str], held_out: str | Sequence[str]
                ) -> tuple[list[corpus.LabelledFile], list[corpus.LabelledFile]]:
    """(training, held-out) audio files of `paths` (folders or globs), held out by
    `held_out` ("pitch": the project-wide rule; else globs). MissingFileError when a path holds
    no audio, ConfigError when either side is empty."""
    try:
        files = corpus.find_files(paths)
    except FileNotFoundError as err:
        raise MissingFileError(str(err)) from None
    training = [f for f in files if not corpus.is_held_out_file(f, held_out)]
    kept_out = [f for f in files if corpus.is_held_out_file(f, held_out)]
    if not training or not kept_out:
        raise ConfigError(
            f"{len(training)} training and {len(kept_out)} held-out recordings in "
            f"{', '.join(paths)}: both must be non-empty; name files by pitch (e.g. "
            "violin_Bb4.wav; A, C#/Db and F are held out) or list held-out globs in "
            "--config.data.held_out")
    return training, kept_out


def load_corpus(files: Sequence[corpus.LabelledFile], contract: SpectralContract, *,
                trim_db: float | None, min_samples: int) -> LoadedCorpus:
    """The files at the contract's rate, trimmed (each process of a multi-process run reads
    its share, `tnca_jax.distributed.load_shared`); those shorter than `min_samples` are left
    out (with a warning). ConfigError when none is long enough."""
    kept, pieces = [], []
    loaded = distributed.load_shared(
        files, lambda file: audio_lib.load_audio(file.path, contract.sample_rate,
                                                 trim_db=trim_db))
    for file, audio in zip(files, loaded, strict=True):
        if len(audio) < min_samples:
            logger.warning("%s: %.2f s after trimming, shorter than one training segment; left "
                           "out", file.path, len(audio) / contract.sample_rate)
            continue
        kept.append(file)
        pieces.append(audio)
    if not pieces:
        raise ConfigError(f"no training recording lasts one segment ({min_samples} samples) "
                          "after trimming; lower --config.train.segment_frames")
    lengths = np.array([len(p) for p in pieces], np.int64)
    if lengths.sum() >= 2**31:
        raise ConfigError(f"the training corpus holds {lengths.sum()} samples, more than int32 "
                          "indexing allows; train on fewer files")
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    arrays = Corpus(np.concatenate(pieces).astype(np.float32), starts.astype(np.int32),
                    lengths.astype(np.int32))
    return LoadedCorpus(arrays, tuple(kept), contract.sample_rate)


def held_out_notes(files: Sequence[corpus.LabelledFile], contract: MelContract, *,
                   trim_db: float | None, max_seconds: float | None
                   ) -> list[tuple[dict, np.ndarray]]:
    """(labels, mono audio cut to whole frames) of each held-out file, trimmed and capped as a
    TNCA target is (a longer one is cut at a quiet point and faded out)."""
    notes = []
    for file in files:
        audio = audio_lib.load_audio(file.path, contract.sample_rate, trim_db=trim_db,
                                     max_seconds=max_seconds)
        audio = audio[: contract.num_samples(contract.num_frames(len(audio)))]
        notes.append(({"name": f"{file.path.parent.name}/{file.path.name}",
                       "path": str(file.path), "instrument": file.instrument,
                       "midi": file.midi, "held_out": True}, audio))
    return notes


def span_needed(segment_samples: int, max_semitones: float) -> int:
    """Recording samples one segment may read: pitch-shifted up by `max_semitones`, with the
    interpolator's taps on both sides."""
    if not max_semitones:
        return segment_samples
    return math.ceil(segment_samples * 2 ** (max_semitones / 12)) + 2 * RESAMPLE_TAPS + 1


def sample_segments(data: Corpus, key: jax.Array, batch_size: int, segment_samples: int,
                    max_semitones: float = 0.0) -> jax.Array:
    """[batch, segment_samples] segments: a file uniformly, then a uniform offset in it.

    With `max_semitones`, each segment is pitch-shifted by a uniform random amount in
    [-max_semitones, max_semitones] (resampled by windowed-sinc interpolation, band-limited
    when shifting up; duration changes with pitch, as on a tape).
    """
    file_key, offset_key, shift_key = jax.random.split(key, 3)
    files = jax.random.randint(file_key, (batch_size,), 0, data.starts.shape[0])
    span = span_needed(segment_samples, max_semitones)
    room = (data.lengths[files] - span + 1).astype(jnp.float32)
    offsets = jnp.floor(jax.random.uniform(offset_key, (batch_size,)) * room).astype(jnp.int32)
    first = data.starts[files] + offsets
    if not max_semitones:
        return jax.vmap(lambda s: jax.lax.dynamic_slice(data.audio, (s,),
                                                        (segment_samples,)))(first)
    semitones = jax.random.uniform(shift_key, (batch_size, 1), minval=-max_semitones,
                                   maxval=max_semitones)
    rate = 2.0 ** (semitones / 12)  # recording samples per output sample
    position = RESAMPLE_TAPS + jnp.arange(segment_samples) * rate  # [B, L], from `first`
    whole = jnp.floor(position).astype(jnp.int32)
    taps = jnp.arange(-RESAMPLE_TAPS + 1, RESAMPLE_TAPS + 1)
    distance = (position - whole)[..., None] - taps  # [B, L, 2 * taps]
    stretch = jnp.maximum(rate, 1.0)[..., None]  # low-pass below the new Nyquist
    kernel = (jnp.sinc(distance / stretch) / stretch
              * (0.5 + 0.5 * jnp.cos(jnp.pi * jnp.clip(distance / (RESAMPLE_TAPS * stretch),
                                                       -1.0, 1.0))))
    samples = data.audio[first[:, None, None] + whole[..., None] + taps]
    return jnp.sum(samples * kernel, axis=-1)
