"""Melodies: an instruments model plays a phrase, from a MIDI file or a list of notes.

`tnca_jax.play(...)` and `--mode=play` take a MIDI file (read with mido) or a list of
(pitch, start, duration, velocity): pitch a note name or MIDI number, start and duration in
seconds, velocity 1-127 (the note's loudness: `VELOCITY_DB` dB per doubling of velocity about
the instrument's own level at velocity 100). Every note is grown by the model (all notes of a
phrase in a few batches, each note with its own randomness whatever else is grown beside it),
rendered, and placed at its start. Each note is grown `JOIN_SECONDS` longer than it lasts and
faded out over that time, and faded in over `FADE_IN_SECONDS`: a note that follows another
without a gap (legato) crossfades with it, and no note starts or stops with a click.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tnca_jax.conditioning import InstrumentSpec, pitch_to_midi
from tnca_jax.contract import SpectralContract
from tnca_jax.errors import ConfigError, MissingFileError
from tnca_jax.generation import (
    check_seconds,
    grow_features,
    instrument_loudness,
    note_spec,
    parse_instrument,
    render_features,
)
from tnca_jax.inverse import Inverse, load_inverse
from tnca_jax.runs import Run, load_run
from tnca_jax.settings import MAX_NOTE_SECONDS

VELOCITY_DB = 12.0  # loudness change per doubling of the velocity, about velocity 100
JOIN_SECONDS = 0.05  # a note's fade-out after its end: the crossfade into the next
FADE_IN_SECONDS = 0.005
MAX_NOTES = 2000
MAX_PHRASE_SECONDS = 600.0
BATCH = 16  # notes grown together
# A legato phrase (D major, up and down): what --mode=play plays without a MIDI file.
DEMO = tuple((name, 0.4 * i, 0.4, 96) for i, name in enumerate(
    ("D4", "F#4", "A4", "D5", "C#5", "B4", "A4", "F#4", "G4", "E4", "D4")))


@dataclasses.dataclass(frozen=True)
class PhraseNote:
    """One note of a phrase: MIDI pitch, start and duration in seconds, velocity 1-127."""

    midi: float
    start: float
    duration: float
    velocity: int


@dataclasses.dataclass(frozen=True)
class Phrase:
    """A played phrase: its audio (mono, at most full scale), rate, notes and contract."""

    audio: np.ndarray
    sample_rate: int
    notes: tuple[PhraseNote, ...]
    instrument: InstrumentSpec
    contract: SpectralContract


def read_midi(path: str | os.PathLike) -> list[PhraseNote]:
    """The notes of a MIDI file (every track and channel; tempo changes followed). A note
    switched on again before its note-off ends there. MissingFileError or ConfigError (one
    line) for a file that is not there or cannot be read as MIDI."""
    import mido

    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"MIDI file not found: {path}")
    try:
        midi = mido.MidiFile(str(path))
        messages = list(midi)  # times in seconds, tempo applied
    except (OSError, EOFError, ValueError, KeyError, IndexError) as err:
        raise ConfigError(f"cannot read {path} as a MIDI file ({err})") from None
    now, sounding, notes = 0.0, {}, []
    for message in messages:
        now += message.time
        if message.type not in ("note_on", "note_off"):
            continue
        key = (message.channel, message.note)
        if key in sounding:
            start, velocity = sounding.pop(key)
            if now > start:
                notes.append(PhraseNote(float(message.note), start, now - start, velocity))
        if message.type == "note_on" and message.velocity > 0:
            sounding[key] = (now, message.velocity)
    if not notes:
        raise ConfigError(f"{path} holds no note")
    return sorted(notes, key=lambda n: (n.start, n.midi))


def phrase_notes(notes: str | os.PathLike | Sequence) -> list[PhraseNote]:
    """A MIDI file's notes, or a list of (pitch, start, duration, velocity), checked before
    anything is allocated (ConfigError naming the first that cannot be played)."""
    if isinstance(notes, str | os.PathLike):
        parsed = read_midi(notes)
    else:
        parsed = []
        for i, note in enumerate(notes):
            try:
                pitch, start, duration, velocity = note
            except (TypeError, ValueError):
                raise ConfigError(f"note {i} ({note!r}) must be (pitch, start, duration, "
                                  "velocity)") from None
            if not all(isinstance(x, int | float) and not isinstance(x, bool)
                       and math.isfinite(x) for x in (start, duration, velocity)):
                raise ConfigError(f"note {i} ({note!r}): start, duration and velocity must be "
                                  "numbers")
            parsed.append(PhraseNote(pitch_to_midi(pitch), float(start), float(duration),
                                     int(velocity)))
    if not parsed or len(parsed) > MAX_NOTES:
        raise ConfigError(f"a phrase holds 1 to {MAX_NOTES} notes, not {len(parsed)}")
    for i, note in enumerate(parsed):
        if not (note.start >= 0 and 0 < note.duration <= MAX_NOTE_SECONDS
                and 1 <= note.velocity <= 127 and 0 < note.midi < 128):
            raise ConfigError(f"note {i} ({note}): start at or after 0, a duration up to "
                              f"{MAX_NOTE_SECONDS:g} s and a velocity of 1-127, please")
    end = max(n.start + n.duration for n in parsed)
    if end > MAX_PHRASE_SECONDS:
        raise ConfigError(f"the phrase lasts {end:.0f} s, more than {MAX_PHRASE_SECONDS:g} s")
    return parsed


def velocity_db(velocity: int) -> float:
    """The loudness change (dB) of `velocity` against velocity 100."""
    return VELOCITY_DB * math.log2(velocity / 100)


def render_phrase(run: Run, inverse: Inverse, notes: Sequence[PhraseNote],
                  instrument: InstrumentSpec, *, growth_steps: int, seed: int) -> np.ndarray:
    """The phrase's audio: every note grown, rendered, faded and added at its start."""
    rate = run.contract.sample_rate
    spec = parse_instrument(instrument)
    names = [spec] if isinstance(spec, str) else list(spec)
    base = float(np.mean([instrument_loudness(run, name) for name in names]))
    requests = [note_spec(run, spec, n.midi, run.frames(n.duration + JOIN_SECONDS),
                          loudness=base + velocity_db(n.velocity)) for n in notes]
    audio = []
    for first in range(0, len(requests), BATCH):
        grown = grow_features(run, requests[first:first + BATCH], seeds=[seed],
                              growth_steps=growth_steps, num_stages=1)
        audio += render_features(inverse, [g[-1] for g in grown])
    end = max(round((n.start + n.duration + JOIN_SECONDS) * rate) for n in notes)
    out = np.zeros(end + 1, np.float32)
    fade_in, fade_out = round(FADE_IN_SECONDS * rate), round(JOIN_SECONDS * rate)
    for note, sound in zip(notes, audio, strict=True):
        length = min(len(sound), round((note.duration + JOIN_SECONDS) * rate))
        sound = sound[:length].copy()
        sound[:fade_in] *= _raised_cosine(min(fade_in, length))
        tail = min(fade_out, length)
        sound[length - tail:] *= _raised_cosine(tail)[::-1]
        start = round(note.start * rate)
        out[start:start + length] += sound
    peak = float(np.max(np.abs(out)))
    return out / peak if peak > 1.0 else out


def _raised_cosine(length: int) -> np.ndarray:
    return (0.5 - 0.5 * np.cos(np.pi * (np.arange(length) + 0.5) / max(length, 1))
            ).astype(np.float32)


def play(notes: str | os.PathLike | Sequence, *, instrument: InstrumentSpec = "violin",
         model: str | os.PathLike | None = None, growth_steps: int | None = None,
         seed: int | None = None, vocoder: str = "griffinlim",
         vocoder_path: str | None = None) -> Phrase:
    """Play a phrase with an instruments model (None: the shipped one; else a workdir, a
    checkpoint or a weights file): `notes` a MIDI file or a list of (pitch, start, duration,
    velocity); `instrument` a name or a blend ({"violin": 0.7, "flute": 0.3}). Every argument
    is checked before anything grows (`tnca_jax.UserError`)."""
    parsed = phrase_notes(notes)
    for note in parsed:
        check_seconds(note.duration)
    run = load_run(model)
    if not run.conditioned:
        raise ConfigError(f"{model} holds a note run: play needs an instruments model")
    note_spec(run, instrument, parsed[0].midi, 2)  # the instrument, checked
    for name, value in (("growth_steps", growth_steps), ("seed", seed)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value < (1 if name == "growth_steps" else 0)):
            raise ConfigError(f"{name}={value!r} must be a whole number"
                              + (" of at least 1" if name == "growth_steps" else ""))
    inverse = load_inverse(run.representation, vocoder, vocoder_path)
    audio = render_phrase(run, inverse, parsed, instrument,
                          growth_steps=growth_steps or run.settings.generate.growth_steps,
                          seed=run.settings.seed if seed is None else seed)
    return Phrase(audio, run.contract.sample_rate, tuple(parsed), instrument, run.contract)
