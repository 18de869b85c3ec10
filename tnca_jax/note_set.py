"""The recordings a conditioned TNCA learns from and is measured against: each note labelled
with its instrument and pitch, trimmed, capped and turned into the representation it grows.

Labels: the instrument is the file name's first word or its folder's name, the pitch the note
name in the file name (`tnca_jax.corpus`), tuned (with `data.tune`) to pYIN's median f0 when
that lies within half a semitone of it: a recording played 30 cents sharp is labelled so; a
file whose name holds no pitch gets pYIN's median f0 over its voiced frames, and one where
pYIN hears no steady pitch either is refused, naming the file. The held-out split is the
project-wide rule (pitch classes A, C#/Db and F of the named note, `tnca_jax.corpus.is_held_out`)
or the files matching `data.held_out` globs.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import functools
import math
from collections.abc import Sequence
from pathlib import Path

import jax.numpy as jnp
import ml_collections
import numpy as np

from tnca_jax import audio as audio_lib
from tnca_jax import corpus, optional_metrics
from tnca_jax.conditioning import (
    NoteSpec,
    SpectrumPrior,
    loudness_db,
    midi_to_hz,
    note_condition,
)
from tnca_jax.errors import ConfigError, MissingFileError
from tnca_jax.model import NoteCondition
from tnca_jax.representations import Representation

MIN_VOICED_FRACTION = 0.3  # pYIN must hear a pitch on this share of frames to label a note


class PitchLabelError(audio_lib.AudioError):
    """A recording whose pitch neither its name nor pYIN can tell."""


@dataclasses.dataclass(frozen=True)
class Note:
    """One labelled recording as a training or evaluation target.

    Attributes:
      name: its path relative to the folder it was found in (for a glob: its folder's name
        and its file name).
      path: the audio file.
      instrument: instrument label.
      midi: pitch as a MIDI number (fractional when pYIN gave or tuned it).
      pitch_source: "name", "name+pyin" (the name's note, pYIN's tuning) or "pyin".
      held_out: never trained on.
      loudness_db: its dynamic level (`tnca_jax.conditioning.loudness_db`).
      audio: mono float32 at the contract's rate, trimmed, capped, whole frames.
      features: [n_values, bins, frames] the representation of `audio`.
    """

    name: str
    path: str
    instrument: str
    midi: float
    pitch_source: str
    held_out: bool
    loudness_db: float
    audio: np.ndarray
    features: np.ndarray

    @property
    def f0_hz(self) -> float:
        return midi_to_hz(self.midi)

    @property
    def n_frames(self) -> int:
        return self.features.shape[-1]

    def to_dict(self) -> dict:
        """The note's labels (for run.json and the reports)."""
        return {"name": self.name, "path": self.path, "instrument": self.instrument,
                "midi": self.midi,
                "pitch_source": self.pitch_source, "held_out": self.held_out,
                "loudness_db": self.loudness_db, "frames": self.n_frames}

    @property
    def spec(self) -> NoteSpec:
        """The note as a conditioned TNCA is asked for it: its own labels and length."""
        return NoteSpec(self.instrument, self.midi, self.loudness_db, self.n_frames)


@dataclasses.dataclass(frozen=True)
class NoteSet:
    """Labelled notes under one representation, on one grid of `grid_frames` frames.

    `instruments` are the labels of the training notes, sorted: row i of the model's
    instrument embedding is instruments[i].
    """

    notes: tuple[Note, ...]
    instruments: tuple[str, ...]
    representation: Representation
    grid_frames: int

    @property
    def training(self) -> tuple[Note, ...]:
        return tuple(n for n in self.notes if not n.held_out)

    @property
    def held_out(self) -> tuple[Note, ...]:
        return tuple(n for n in self.notes if n.held_out)

    def unit(self, notes: Sequence[Note]) -> jnp.ndarray:
        """[N, n_values, bins, grid_frames] the notes normalised to [0, 1], silence (0) past
        each note's end."""
        out = np.zeros((len(notes), self.representation.n_values, self.representation.n_bins,
                        self.grid_frames), np.float32)
        for i, note in enumerate(notes):
            out[i, ..., :note.n_frames] = np.asarray(
                self.representation.to_unit(jnp.asarray(note.features)))
        return jnp.asarray(out)

    @functools.cached_property
    def prior(self) -> SpectrumPrior:
        """The training notes' spectra, from which every note's expected spectrum is drawn."""
        training = self.training
        spectra = np.stack([np.asarray(self.representation.to_unit(jnp.asarray(n.features)))
                            .mean(axis=-1) for n in training])
        return SpectrumPrior(self.representation.contract, self.representation.unit_span_db,
                             tuple(n.instrument for n in training),
                             np.array([n.midi for n in training]),
                             np.array([n.loudness_db for n in training]), spectra)

    def condition(self, notes: Sequence[Note], *, leave_out: bool = False) -> NoteCondition:
        """The notes' own conditions (their instrument, pitch, loudness and length, and their
        prior). `leave_out`: a training note's prior is drawn without it, as that of a pitch
        the model has no note of (`SpectrumPrior.spectrum`)."""
        training = self.training
        exclude = [next((k for k, t in enumerate(training) if t is n), None) if leave_out
                   else None for n in notes]
        return note_condition(self.representation.contract, self.instruments,
                              [n.spec for n in notes], self.grid_frames, self.prior, exclude)


def pyin_midi(audio: np.ndarray, sample_rate: int) -> float | None:
    """The median pYIN pitch (MIDI) over voiced frames, or None when fewer than
    MIN_VOICED_FRACTION of the frames are voiced (run in the optional-metrics worker: a crash
    in pYIN's native code cannot take the caller down)."""
    [result] = optional_metrics.run_tasks([optional_metrics.Task(
        optional_metrics.pyin_f0, (np.asarray(audio, np.float32), sample_rate))])
    if isinstance(result, optional_metrics.Missing):
        return None
    f0, voiced = result
    if not voiced.size or voiced.mean() < MIN_VOICED_FRACTION:
        return None
    return float(69 + 12 * math.log2(np.median(f0[voiced]) / 440.0))


def _matches(path: Path, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatch(str(path), p) or fnmatch.fnmatch(path.name, p)
               for p in patterns)


def load_note_set(data: ml_collections.ConfigDict, representation: Representation
                  ) -> NoteSet:
    """The recordings of `data.paths` (folders or globs), less those matching `data.exclude`,
    labelled and split, at most `data.max_seconds` each.

    Raises MissingFileError when nothing is found, PitchLabelError for a note whose pitch
    cannot be told, ConfigError when there is no training note or a held-out note's
    instrument is not among the training notes'.
    """
    try:
        recordings = corpus.find_recordings(data.paths)
    except FileNotFoundError as err:
        raise MissingFileError(str(err)) from None
    exclude = tuple(data.get("exclude", ()) or ())
    held_out_globs = None if data.held_out == "pitch" else tuple(data.held_out)
    contract = representation.contract
    roots = [Path(p) for p in data.paths]
    notes = []
    for recording in recordings:
        if _matches(recording.path, exclude):
            continue
        sound = audio_lib.load_recording(recording.path, contract.sample_rate,
                                         trim_db=data.trim_db, max_seconds=data.max_seconds)
        audio = sound.audio[: contract.num_samples(contract.num_frames(len(sound.audio)))]
        midi, source = recording.midi, "name"
        if midi is not None and data.get("tune", False):
            played = pyin_midi(audio, contract.sample_rate)
            if played is not None and abs(played - midi) < 0.5:
                midi, source = played, "name+pyin"
        if midi is None:
            midi, source = pyin_midi(audio, contract.sample_rate), "pyin"
            if midi is None:
                raise PitchLabelError(
                    f"cannot tell the pitch of {recording.path}: its name holds no note (e.g. "
                    "violin_A4.wav, cello_m48.wav) and pYIN hears no steady pitch in it; "
                    "rename it or leave it out with --config.data.exclude")
        held_out = (_matches(recording.path, held_out_globs) if held_out_globs is not None
                    else corpus.is_held_out(round(midi) if recording.midi is None
                                            else recording.midi))
        root = next((r for r in roots if r.is_dir() and recording.path.is_relative_to(r)), None)
        name = str(recording.path.relative_to(root) if root
                   else Path(recording.path.parent.name) / recording.path.name)
        notes.append(Note(name=name, path=str(recording.path), instrument=recording.instrument,
                          midi=float(midi),
                          pitch_source=source, held_out=held_out,
                          loudness_db=loudness_db(audio, contract), audio=audio,
                          features=np.asarray(representation.features(audio))))
    training = [n for n in notes if not n.held_out]
    if not training:
        raise ConfigError(f"no training note among the {len(notes)} recordings of "
                          f"{', '.join(data.paths)} (all held out or excluded)")
    instruments = tuple(sorted({n.instrument for n in training}))
    strangers = sorted({n.instrument for n in notes if n.instrument not in instruments})
    if strangers:
        raise ConfigError(f"held-out notes of {', '.join(strangers)}, an instrument no "
                          "training note has; add training notes of it or exclude them")
    return NoteSet(notes=tuple(notes), instruments=instruments, representation=representation,
                   grid_frames=max(n.n_frames for n in notes))
