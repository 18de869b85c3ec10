"""Instrument recordings as a labelled corpus: pitch and instrument from file names, and the
project-wide held-out split.

Held-out rule (every model trained in this project, on every instrument and source): a note
whose pitch class is A, C#/Db or F (MIDI % 4 == 1: every fourth semitone from A) is held out,
and so is a recording with no single pitch in its name (a phrase). The shipped violin A5
(MIDI 81) is therefore held out.

Names understood (pitch from the last note-like token, or an explicit `m<MIDI>` token):
  Violin.arco.ff.sulA.Bb4.stereo   -> violin, Bb4 = 70   (University of Iowa MIS)
  As3, Ds4, C5 in a folder flute/  -> flute, A#3 = 58    (VSCO-2: s = sharp)
  cello_C2_m36                     -> cello, 36           (FluidR3 renders)
  violin_phrase_legato             -> violin, no pitch (held out)
"""

from __future__ import annotations

import dataclasses
import fnmatch
import glob
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".aiff", ".aif", ".mp3")
PITCH_CLASSES = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}
ACCIDENTALS = {"": 0, "#": 1, "s": 1, "\u266f": 1, "b": -1, "\u266d": -1}
_NOTE = re.compile(r"^([A-Ga-g])(#|s|b|\u266f|\u266d)?(-?\d)$")
_MIDI_TOKEN = re.compile(r"^m(\d{1,3})$")
_TOKEN_SPLIT = re.compile(r"[._\-\s]+")


def note_to_midi(note: str) -> int:
    """MIDI number of a note name: "A4" -> 69, "Bb4" -> 70, "C#5"/"Db5" -> 73, "As3" -> 58.

    Raises ValueError for anything else.
    """
    found = _NOTE.match(note.strip())
    if found is None:
        raise ValueError(f"not a note name: {note!r} (expected e.g. A4, Bb4, C#5, As3)")
    letter, accidental, octave = found.groups()
    return 12 * (int(octave) + 1) + PITCH_CLASSES[letter.upper()] + ACCIDENTALS[accidental or ""]


def midi_to_name(midi: float) -> str:
    """The nearest note's name: 69 -> "A4", 70 -> "A#4", 60.3 -> "C4"."""
    number = round(midi)
    names = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
    return f"{names[number % 12]}{number // 12 - 1}"


def midi_from_name(name: str) -> int | None:
    """The pitch a file name states, or None: an `m<MIDI>` token wins, else the last note-name
    token ("Violin.arco.ff.sulA.Bb4.stereo" -> 70, "cello_C2_m36" -> 36, "As3.wav" -> 58)."""
    tokens = _TOKEN_SPLIT.split(Path(name).stem if Path(name).suffix.lower() in AUDIO_SUFFIXES
                                else name)
    for token in tokens:
        found = _MIDI_TOKEN.match(token)
        if found:
            return int(found[1])
    notes = [token for token in tokens if _NOTE.match(token)]
    return note_to_midi(notes[-1]) if notes else None


def is_held_out(midi: int) -> bool:
    """The project-wide held-out rule: pitch classes A, C#/Db and F (MIDI % 4 == 1)."""
    return midi % 4 == 1


@dataclasses.dataclass(frozen=True)
class LabelledFile:
    """One audio file of a corpus, labelled from its name.

    Attributes:
      path: the audio file.
      instrument: lower-case instrument name ("violin"), from the name's first word, or the
        folder's name when the file name starts with a note ("vsco2/flute/A4.wav").
      midi: the stated pitch, or None (a phrase).
    """

    path: Path
    instrument: str
    midi: int | None

    @property
    def held_out(self) -> bool:
        """Held out by the project-wide rule (unpitched recordings too)."""
        return self.midi is None or is_held_out(self.midi)


def describe(path: str | os.PathLike) -> LabelledFile:
    """Label a recording with its instrument and pitch from its path."""
    path = Path(path)
    first = _TOKEN_SPLIT.split(path.stem)[0]
    named = first and not _NOTE.match(first) and not _MIDI_TOKEN.match(first)
    instrument = (first if named else path.parent.name).lower()
    return LabelledFile(path=path, instrument=instrument, midi=midi_from_name(path.name))


def find_files(patterns: Iterable[str | os.PathLike]) -> list[LabelledFile]:
    """Every audio file under the given folders or matching the given globs, sorted, labelled.

    Raises FileNotFoundError naming the patterns when nothing is found.
    """
    patterns = [str(p) for p in patterns]
    found: set[Path] = set()
    for pattern in patterns:
        if os.path.isdir(pattern):
            candidates = glob.glob(os.path.join(pattern, "**", "*"), recursive=True)
        else:
            candidates = glob.glob(pattern, recursive=True)
        found.update(Path(c) for c in candidates
                     if Path(c).suffix.lower() in AUDIO_SUFFIXES and os.path.isfile(c))
    if not found:
        raise FileNotFoundError(f"no audio files ({', '.join(AUDIO_SUFFIXES)}) in or matching "
                                f"{', '.join(patterns) or '(nothing given)'}")
    return [describe(path) for path in sorted(found)]


def matches(path: Path, patterns: Sequence[str]) -> bool:
    """Whether `path` (whole, or its file name) matches one of the globs."""
    return any(fnmatch.fnmatch(str(path), p) or fnmatch.fnmatch(path.name, p)
               for p in patterns)


def is_held_out_file(file: LabelledFile, held_out: str | Sequence[str]) -> bool:
    """Whether `file` is held out: by the project-wide rule (`held_out` "pitch") or by matching
    one of the globs `held_out`."""
    return file.held_out if held_out == "pitch" else matches(file.path, held_out)
