"""Melodies (`tnca_jax.play`, `--mode=play`), and models that need no workdir: a run exported
as one weights file, and the shipped instruments model."""

from __future__ import annotations

import json
import subprocess
import sys

import librosa
import mido
import numpy as np
import pytest
import soundfile as sf

import tnca_jax
from tests.conftest import ROOT
from tnca_jax import phrases
from tnca_jax.errors import ConfigError, MissingFileError
from tnca_jax.numba_cache import numba_compile_lock
from tnca_jax.runs import SHIPPED_MODEL, load_run

RATE = 22050
# (MIDI pitch, start, duration, velocity): a rest, a legato run, a rest, a softer last note.
MELODY = [(74, 0.2, 0.45, 100), (76, 0.65, 0.45, 100), (79, 1.1, 0.45, 100),
          (72, 1.8, 0.5, 64)]


def write_midi(path, notes, tempo_bpm: float = 90.0) -> None:
    """`notes` as a one-track MIDI file at `tempo_bpm` (480 ticks a beat)."""
    ticks = 480 * tempo_bpm / 60  # ticks a second
    events = sorted([(round(s * ticks), "note_on", p, v) for p, s, _, v in notes]
                    + [(round((s + d) * ticks), "note_off", p, 0) for p, s, d, _ in notes],
                    key=lambda e: (e[0], e[1] == "note_on"))
    track = mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(tempo_bpm))])
    now = 0
    for tick, kind, pitch, velocity in events:
        track.append(mido.Message(kind, note=pitch, velocity=velocity, time=tick - now))
        now = tick
    mido.MidiFile(ticks_per_beat=480, tracks=[track]).save(str(path))


def test_a_midi_file_reads_as_notes_in_seconds(tmp_path):
    write_midi(tmp_path / "melody.mid", MELODY, tempo_bpm=90)
    notes = phrases.read_midi(tmp_path / "melody.mid")
    assert [n.midi for n in notes] == [74, 76, 79, 72]
    np.testing.assert_allclose([n.start for n in notes], [0.2, 0.65, 1.1, 1.8], atol=2e-3)
    np.testing.assert_allclose([n.duration for n in notes], [0.45, 0.45, 0.45, 0.5], atol=2e-3)
    assert [n.velocity for n in notes] == [100, 100, 100, 64]


@pytest.mark.parametrize("notes,message", [
    ([], "1 to 2000 notes"),
    ([("A4", 0.0, 0.0, 100)], "a duration up to 60"),
    ([("A4", -1.0, 0.5, 100)], "start at or after 0"),
    ([("A4", 0.0, 0.5, 200)], "a velocity of 1-127"),
    ([("H4", 0.0, 0.5, 100)], "not a note name"),
    ([("A4", 0.0, 0.5)], "must be (pitch, start, duration, velocity)"),
    ([("A4", 700.0, 0.5, 100)], "more than 600 s"),
    ([("A4", float("nan"), 0.5, 100)], "must be numbers"),
])
def test_a_phrase_that_cannot_be_played_is_one_line(notes, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        phrases.phrase_notes(notes)


def test_a_file_that_is_not_midi_is_one_line(tmp_path):
    with pytest.raises(MissingFileError, match="MIDI file not found"):
        phrases.read_midi(tmp_path / "nope.mid")
    (tmp_path / "text.mid").write_text("not midi at all")
    with pytest.raises(ConfigError, match=r"cannot read .*text\.mid as a MIDI file"):
        phrases.read_midi(tmp_path / "text.mid")


def _onsets(audio: np.ndarray) -> np.ndarray:
    with numba_compile_lock():  # librosa's numba code, compiled here in the test's process
        return librosa.onset.onset_detect(y=audio, sr=RATE, units="time", backtrack=True,
                                          hop_length=64)


def test_a_written_midi_file_plays_in_tune_on_time_and_without_clicks(tmp_path):
    """The shipped model plays a MIDI file (a model trained a few iterations grows notes
    too rough to be in tune)."""
    write_midi(tmp_path / "melody.mid", MELODY)
    phrase = tnca_jax.play(tmp_path / "melody.mid", instrument="violin")
    audio = phrase.audio
    assert phrase.sample_rate == RATE and np.isfinite(audio).all()
    assert np.max(np.abs(audio)) <= 1.0
    assert len(audio) >= round((1.8 + 0.5) * RATE)
    for pitch, start, duration, _ in MELODY:  # each note's pitch (its middle), by pYIN
        middle = audio[round((start + 0.1) * RATE):round((start + duration - 0.05) * RATE)]
        with numba_compile_lock():
            f0, voiced, _ = librosa.pyin(middle, fmin=200, fmax=1200, sr=RATE,
                                         frame_length=2048)
        played = 1200 * np.log2(np.nanmedian(f0[voiced]) / librosa.midi_to_hz(pitch))
        assert abs(played) < 25, (pitch, played)
    detected = _onsets(audio)  # each note starts within 30 ms of the file's onset
    for _, start, _, _ in MELODY:
        assert np.min(np.abs(detected - start)) < 0.03, (start, detected)
    # No click where one note hands over to the next: the sample-to-sample jump around each
    # join is no larger than within the notes.
    jumps = np.abs(np.diff(audio))
    typical = np.percentile(jumps[jumps > 0], 99.9)
    for _, start, duration, _ in MELODY[:3]:
        join = round((start + duration) * RATE)
        assert jumps[join - 256:join + 256].max() <= 1.5 * typical


def test_mode_play_writes_the_phrase_and_its_piano_roll(instruments_workdir, tmp_path):
    write_midi(tmp_path / "tune.mid", MELODY[:2])
    done = subprocess.run(
        [sys.executable, "main.py", "--config=configs/instruments.py:quick",
         f"--workdir={instruments_workdir}", "--mode=play", f"--config.generate.midi="
         f"{tmp_path / 'tune.mid'}", "--config.generate.growth_steps=8"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout)
    audio, rate = sf.read(summary["wav"])
    assert rate == RATE and summary["notes"] == 2 and len(audio) > 0.9 * RATE
    page = (instruments_workdir / "play_tune.html").read_text()
    assert page.count("data:audio/wav;base64,") == 1 and "data:image/png;base64," in page


def test_an_exported_run_generates_without_its_workdir(instruments_workdir, tmp_path):
    from tests.conftest import tiny_instruments_config
    from tnca_jax import cli

    assert cli.run("export", tiny_instruments_config(), str(instruments_workdir)) == 0
    weights = instruments_workdir / "model.safetensors"
    copied = tmp_path / "violin_and_flute.safetensors"
    copied.write_bytes(weights.read_bytes())
    from_file = tnca_jax.generate(copied, instrument="flute", pitch="G5", seconds=0.5)
    from_workdir = tnca_jax.generate(instruments_workdir, instrument="flute", pitch="G5",
                                     seconds=0.5)
    np.testing.assert_allclose(from_file.audio, from_workdir.audio, atol=1e-5)
    run = load_run(copied)
    assert run.workdir is None and run.instruments == ("flute", "violin")
    damaged = tmp_path / "damaged.safetensors"
    damaged.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(tnca_jax.UserError, match=r"damaged\.safetensors"):
        load_run(damaged)


def test_the_shipped_model_plays_right_after_install(tmp_path):
    """No workdir, no training: the shipped instruments model."""
    assert SHIPPED_MODEL.is_file() and SHIPPED_MODEL.stat().st_size < 30e6
    run = load_run(None)
    assert {"violin", "flute", "cello"} <= set(run.instruments)
    note = tnca_jax.generate(instrument="violin", pitch="C4", seconds=1.0, growth_steps=8)
    assert note.audio.shape == (run.frames(1.0) * 512,) and np.abs(note.audio).max() > 0
    done = subprocess.run(
        [sys.executable, "main.py", "--config=configs/instruments.py",
         f"--workdir={tmp_path / 'out'}", "--mode=generate", "--config.generate.pitch=C4",
         "--config.generate.seconds=0.5", "--config.generate.growth_steps=8"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "using the shipped model" in done.stderr
    assert sf.read(json.loads(done.stdout)["wav"])[1] == RATE
