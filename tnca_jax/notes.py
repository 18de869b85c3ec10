"""The recordings a TNCA learns from and is measured against, as one `NoteSet` for every job:
one recording for the `note` job (`load_note`), many labelled notes for the `instruments` job
(`load_note_set`); each trimmed, capped, cut to whole frames and turned into the
representation the TNCA grows.

Labels (`instruments`): the instrument is the file name's first word or its folder's name, the
pitch the note name in the file name (`tnca_jax.corpus`), tuned (with `data.tune`) to pYIN's
median f0 when that lies within half a semitone of it: a recording played 30 cents sharp is
labelled so; a file whose name holds no pitch gets pYIN's median f0 over its voiced frames, and
one where pYIN hears no steady pitch either is refused, naming the file. The held-out split is
the project-wide rule (pitch classes A, C#/Db and F of the named note,
`tnca_jax.corpus.is_held_out`) or the files matching `data.held_out` globs, and with
`data.held_out_edges` each instrument's lowest and highest semitones.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
from collections.abc import Sequence
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from tnca_jax import audio as audio_lib
from tnca_jax import corpus, distributed, optional_metrics
from tnca_jax.conditioning import NoteSpec, loudness_db, midi_to_hz, note_condition
from tnca_jax.errors import ConfigError, MissingFileError
from tnca_jax.model import NoteCondition
from tnca_jax.priors import SpectrumPrior
from tnca_jax.representations import Representation
from tnca_jax.settings import CorpusData, NoteData

MIN_VOICED_FRACTION = 0.3  # pYIN must hear a pitch on this share of frames to label a note


class PitchLabelError(audio_lib.AudioError):
    """A recording whose pitch neither its name nor pYIN can tell."""


@dataclasses.dataclass(frozen=True)
class Note:
    """One recording as a training or evaluation target.

    Attributes:
      name: its path relative to the folder it was found in (for a glob: its folder's name
        and its file name).
      path: the audio file.
      instrument: instrument label.
      midi: pitch as a MIDI number (fractional when pYIN gave or tuned it); None where it was
        not asked for (the `note` job).
      pitch_source: "name", "name+pyin" (the name's note, pYIN's tuning), "pyin" or "".
      held_out: never trained on.
      loudness_db: its dynamic level (`tnca_jax.conditioning.loudness_db`).
      audio: mono float32 at the contract's rate, trimmed, capped, whole frames.
      features: [n_values, bins, frames] the representation of `audio`.
      cut: how a recording longer than the cap was cut (None: used whole).
    """

    name: str
    path: str
    instrument: str
    midi: float | None
    pitch_source: str
    held_out: bool
    loudness_db: float
    audio: np.ndarray
    features: np.ndarray
    cut: str | None = None

    @property
    def f0_hz(self) -> float | None:
        return None if self.midi is None else midi_to_hz(self.midi)

    @property
    def n_frames(self) -> int:
        return self.features.shape[-1]

    def to_dict(self) -> dict:
        """The note's labels (for run.json and the reports)."""
        return {"name": self.name, "path": self.path, "instrument": self.instrument,
                "midi": self.midi, "pitch_source": self.pitch_source,
                "held_out": self.held_out, "loudness_db": self.loudness_db,
                "frames": self.n_frames}

    @property
    def spec(self) -> NoteSpec:
        """The note as a conditioned TNCA is asked for it: its own labels and length."""
        return NoteSpec(self.instrument, self.midi, self.loudness_db, self.n_frames)

    @property
    def static_features(self) -> np.ndarray:
        """The recording's per-band time average, held still (the static baseline)."""
        return np.broadcast_to(self.features.mean(axis=-1, keepdims=True), self.features.shape)


@dataclasses.dataclass(frozen=True)
class NoteSet:
    """Notes under one representation, on one grid of `grid_frames` frames.

    `conditioned`: the model is told each note (the `instruments` job); `instruments` are then
    the labels of the training notes, sorted (row i of the model's instrument embedding is
    instruments[i]). A `note` job's set is its one recording, unconditioned, no instruments.
    """

    notes: tuple[Note, ...]
    instruments: tuple[str, ...]
    representation: Representation
    grid_frames: int
    conditioned: bool
    prior_kind: str = "neighbours"

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
    def prior(self) -> SpectrumPrior | None:
        """The training notes' spectra, from which every note's expected spectrum is drawn
        (None when unconditioned)."""
        if not self.conditioned:
            return None
        training = self.training
        spectra = np.stack([np.asarray(self.representation.to_unit(jnp.asarray(n.features)))
                            .mean(axis=-1) for n in training])
        return SpectrumPrior(self.representation.contract, self.representation.unit_span_db,
                             tuple(n.instrument for n in training),
                             np.array([n.midi for n in training]),
                             np.array([n.loudness_db for n in training]), spectra,
                             self.prior_kind)

    def condition(self, notes: Sequence[Note], *, leave_out: bool = False) -> NoteCondition:
        """The notes' own conditions (their instrument, pitch, loudness and length, and their
        prior). `leave_out`: a training note's prior is drawn without it, as that of a pitch
        the model has no note of (`SpectrumPrior.spectrum`)."""
        training = self.training
        exclude = [next((k for k, t in enumerate(training) if t is n), None) if leave_out
                   else None for n in notes]
        return note_condition(self.representation.contract, self.instruments,
                              [n.spec for n in notes], self.grid_frames, self.prior, exclude)

    @functools.cached_property
    def fingerprint(self) -> str:
        """A digest of what training learns from (each training note's name, labels and
        audio): a workdir is resumed only by a run on the same notes."""
        digest = hashlib.sha256()
        for note in self.training:
            digest.update(repr((note.name, note.instrument, note.midi)).encode())
            digest.update(np.ascontiguousarray(note.audio, np.float32).tobytes())
        return digest.hexdigest()[:16]


def load_note(data: NoteData, representation: Representation) -> NoteSet:
    """The `note` job's recording (trimmed, capped, whole frames) as a set of one
    unconditioned note. AudioError (one line) for a recording that cannot be a target."""
    contract = representation.contract
    recording = audio_lib.load_recording(data.audio_path, contract.sample_rate,
                                         trim_db=data.trim_db, max_seconds=data.max_seconds)
    audio, rate = recording.audio, contract.sample_rate
    # Two analysis frames, and more samples than the reflect padding, at the very least.
    frames_needed = max(2 * contract.hop_length, contract.pad + 1) / rate
    # min_seconds judges the recording's sound, not what max_seconds kept of it.
    if recording.source_seconds < data.min_seconds:
        raise audio_lib.AudioError(
            f"{data.audio_path} has {recording.source_seconds:.3f} s of sound after trimming, "
            f"but --config.data.min_seconds={data.min_seconds} asks for "
            f"{data.min_seconds:.3f} s; give a longer note or lower min_seconds")
    if len(audio) < frames_needed * rate:
        kept = "" if recording.cut is None else " (--config.data.max_seconds kept that much)"
        raise audio_lib.AudioError(
            f"{data.audio_path} gives {len(audio) / rate:.3f} s of sound{kept}, but two "
            f"analysis frames of contract {contract.name!r} need {frames_needed:.3f} s; give "
            "a longer note" + (" or raise max_seconds" if kept else ""))
    audio = audio[: contract.num_samples(contract.num_frames(len(audio)))]
    labels = corpus.describe(data.audio_path)
    note = Note(name=Path(data.audio_path).name, path=str(data.audio_path),
                instrument=labels.instrument, midi=None, pitch_source="", held_out=False,
                loudness_db=loudness_db(audio, contract), audio=audio,
                features=np.asarray(representation.features(audio)), cut=recording.cut)
    return NoteSet(notes=(note,), instruments=(), representation=representation,
                   grid_frames=note.n_frames, conditioned=False)


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


def hold_out_edges(notes: list[Note], semitones: int) -> list[Note]:
    """`notes` with each instrument's notes within `semitones` of its lowest and highest
    pitch (among the notes not held out already) held out too."""
    edge = set()
    for instrument in {n.instrument for n in notes}:
        pitches = [n.midi for n in notes if n.instrument == instrument and not n.held_out]
        if pitches:
            low, high = min(pitches), max(pitches)
            edge |= {i for i, n in enumerate(notes) if n.instrument == instrument
                     and (n.midi < low + semitones or n.midi > high - semitones)}
    return [dataclasses.replace(n, held_out=True) if i in edge else n
            for i, n in enumerate(notes)]


def load_note_set(data: CorpusData, representation: Representation,
                  prior_kind: str = "neighbours") -> NoteSet:
    """The recordings of `data.paths` (folders or globs), less those matching `data.exclude`,
    labelled and split, at most `data.max_seconds` each, as a conditioned set whose prior is
    drawn as `prior_kind` says (`tnca_jax.priors`).

    Raises MissingFileError when nothing is found, PitchLabelError for a note whose pitch
    cannot be told, ConfigError when there is no training note or a held-out note's
    instrument is not among the training notes'.
    """
    try:
        files = corpus.find_files(data.paths)
    except FileNotFoundError as err:
        raise MissingFileError(str(err)) from None
    roots = [Path(p) for p in data.paths]
    wanted = [file for file in files if not corpus.matches(file.path, data.exclude)]
    notes = distributed.load_shared(
        wanted, lambda file: _labelled_note(file, data, representation, roots))
    if data.held_out_edges:
        notes = hold_out_edges(notes, data.held_out_edges)
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
                   grid_frames=max(n.n_frames for n in notes), conditioned=True,
                   prior_kind=prior_kind)


def _labelled_note(file: corpus.LabelledFile, data: CorpusData, representation: Representation,
                   roots: Sequence[Path]) -> Note:
    """One file of a corpus read, labelled (pitch, held out or not) and analysed."""
    contract = representation.contract
    sound = audio_lib.load_recording(file.path, contract.sample_rate,
                                     trim_db=data.trim_db, max_seconds=data.max_seconds)
    audio = sound.audio[: contract.num_samples(contract.num_frames(len(sound.audio)))]
    midi, source = file.midi, "name"
    if midi is not None and data.tune:
        played = pyin_midi(audio, contract.sample_rate)
        if played is not None and abs(played - midi) < 0.5:
            midi, source = played, "name+pyin"
    if midi is None:
        midi, source = pyin_midi(audio, contract.sample_rate), "pyin"
        if midi is None:
            raise PitchLabelError(
                f"cannot tell the pitch of {file.path}: its name holds no note (e.g. "
                "violin_A4.wav, cello_m48.wav) and pYIN hears no steady pitch in it; "
                "rename it or leave it out with --config.data.exclude")
    held_out = (corpus.is_held_out(round(midi) if file.midi is None else file.midi)
                if data.held_out == "pitch" else corpus.matches(file.path, data.held_out))
    root = next((r for r in roots if r.is_dir() and file.path.is_relative_to(r)), None)
    name = str(file.path.relative_to(root) if root
               else Path(file.path.parent.name) / file.path.name)
    return Note(name=name, path=str(file.path), instrument=file.instrument,
                midi=float(midi), pitch_source=source, held_out=held_out,
                loudness_db=loudness_db(audio, contract), audio=audio,
                features=np.asarray(representation.features(audio)), cut=sound.cut)
