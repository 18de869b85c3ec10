"""The instruments job: one TNCA for many notes, conditioned on instrument, pitch, loudness and
length; labelling, conditioning, unseen pitches, morphs, glides and regrowth, on tiny models."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import soundfile as sf
from flax import nnx

import tnca_jax
from configs.instruments import get_config
from tests.conftest import ROOT, tiny_instruments_config
from tnca_jax import conditioning, evaluation, generation, tnca_training
from tnca_jax.contract import get_contract
from tnca_jax.errors import ConfigError, UserError
from tnca_jax.model import NOTE_TIME_FEATURES, TNCA, note_seed_state, seed_state
from tnca_jax.modes import train_and_evaluate
from tnca_jax.notes import PitchLabelError, load_note_set
from tnca_jax.priors import SpectrumPrior
from tnca_jax.records import RunMetrics
from tnca_jax.representations import get_representation
from tnca_jax.runs import load_run
from tnca_jax.settings import read_tnca

RATE = 22050
CONTRACT = get_contract("griffinlim_22khz_128band")
MEL = get_representation("mel", CONTRACT)


def corpus_data(paths):
    """The quick config's data section on other recordings."""
    config = get_config("quick")
    config.data.paths = tuple(str(p) for p in paths)
    return read_tnca(config).data


def tone(f0: float, seconds: float = 1.0, harmonics: int = 8) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    wave = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, harmonics + 1))
    return (0.3 * wave * np.minimum(1, 20 * t) * np.minimum(1, 20 * (seconds - t))
            ).astype(np.float32)


# ------------------------------------------------------------------ labels and conditioning
def test_notes_are_labelled_from_their_names_or_by_pyin_and_split_by_pitch(tmp_path):
    sf.write(tmp_path / "violin_C5.wav", tone(523.25), RATE)
    sf.write(tmp_path / "violin_A4.wav", tone(440.0), RATE)  # pitch class A: held out
    sf.write(tmp_path / "violin_take3.wav", tone(392.0), RATE)  # no pitch in the name: G4
    data = corpus_data([tmp_path])
    notes = {n.name: n for n in load_note_set(data, MEL).notes}
    assert notes["violin_C5.wav"].midi == pytest.approx(72, abs=0.06)
    assert notes["violin_C5.wav"].pitch_source == "name+pyin"
    assert notes["violin_A4.wav"].held_out and not notes["violin_C5.wav"].held_out
    labelled = notes["violin_take3.wav"]
    assert labelled.pitch_source == "pyin" and labelled.midi == pytest.approx(67, abs=0.2)
    assert labelled.loudness_db == pytest.approx(notes["violin_C5.wav"].loudness_db, abs=2)
    # A note played 30 cents sharp keeps its name's note and gets pYIN's tuning; without
    # data.tune, the name alone.
    sf.write(tmp_path / "violin_D5.wav", tone(conditioning.midi_to_hz(74.3)), RATE)
    sharp = {n.name: n for n in load_note_set(data, MEL).notes}["violin_D5.wav"]
    assert sharp.midi == pytest.approx(74.3, abs=0.06) and sharp.pitch_source == "name+pyin"
    named = {n.name: n for n in load_note_set(dataclasses.replace(data, tune=False),
                                               MEL).notes}
    assert named["violin_D5.wav"].midi == 74 and named["violin_D5.wav"].pitch_source == "name"
    # Noise has no pitch: refused with one line naming the file and the fix.
    noise = np.random.default_rng(0).normal(0, 0.1, RATE).astype(np.float32)
    sf.write(tmp_path / "violin_breath.wav", noise, RATE)
    with pytest.raises(PitchLabelError, match=r"violin_breath\.wav.*rename it"):
        load_note_set(data, MEL)


def test_a_held_out_instrument_without_training_notes_is_refused(tmp_path):
    sf.write(tmp_path / "violin_C5.wav", tone(523.25), RATE)
    sf.write(tmp_path / "cello_A3.wav", tone(220.0), RATE)
    data = corpus_data([tmp_path])
    with pytest.raises(ConfigError, match="cello, an instrument no training note has"):
        load_note_set(data, MEL)


def test_the_pitch_features_put_a_harmonic_comb_through_the_mel_bands():
    low = conditioning.band_pitch_features(CONTRACT, 110.0, -20.0)
    centres = conditioning.row_frequencies_hz(CONTRACT)
    comb = low[:, 0]
    # Below ~1 kHz the bands are narrower than 110 Hz: bands at a harmonic light up, bands
    # halfway between two are dark.
    on = [np.argmin(np.abs(centres - k * 110)) for k in range(2, 8)]
    off = [np.argmin(np.abs(centres - (k + 0.5) * 110)) for k in range(2, 8)]
    assert np.all(comb[on] > comb[off] + 0.5)
    # Octave RBFs peak at the octave of the row above f0; the height and loudness columns.
    band = np.argmin(np.abs(centres - 440.0))  # two octaves above 110 Hz
    assert np.argmax(low[band, 1:9]) == 3  # centres -1, 0, 1, 2: index 3 is +2 octaves
    assert low[0, 9] == pytest.approx(np.log2(110 / 440)) and low[0, 10] == 0.0
    # Any pitch gets its own features: an unseen one is computed, not looked up.
    assert not np.allclose(conditioning.band_pitch_features(CONTRACT, 116.5, -20.0), low)


def test_instrument_weights_blend_glide_and_refuse_strangers():
    instruments = ("flute", "violin")
    np.testing.assert_allclose(conditioning.instrument_vector({"violin": 3, "flute": 1},
                                                              instruments), [0.25, 0.75])
    glide = conditioning.instrument_weights("violin", instruments, 5, 7, glide_to="flute")
    np.testing.assert_allclose(glide[0], [0, 1])
    np.testing.assert_allclose(glide[4], [1, 0])
    assert np.all(glide[5:] == 0) and np.all(np.diff(glide[:5, 0]) > 0)
    with pytest.raises(ConfigError, match="'oboe' is not one this model was trained on"):
        conditioning.instrument_vector("oboe", instruments)
    assert generation.parse_instrument("violin:0.7,flute:0.3") == {"violin": 0.7, "flute": 0.3}


def test_note_seeds_equal_the_single_note_seed_on_a_full_grid_and_respect_a_short_note():
    mask = jnp.asarray([[1.0] * 12, [1.0] * 7 + [0.0] * 5])
    seeds = np.asarray(note_seed_state(8, 12, 6, mask, spacing=4))
    np.testing.assert_allclose(seeds[0], np.asarray(seed_state(8, 12, 6, spacing=4))[0])
    assert np.all(seeds[1, :, 7:] == 0)  # nothing past the short note's end
    np.testing.assert_allclose(seeds[1, 0, [0, 4], 2], [0, 4 / 7])  # its own clock


def tone_prior(notes: dict[str, list[float]], loudness: float = -20.0
               ) -> SpectrumPrior:
    """The prior of harmonic tones (`tone`) at the MIDI pitches given per instrument."""
    labels = [(name, midi) for name, pitches in notes.items() for midi in pitches]
    spectra = np.stack([np.asarray(MEL.to_unit(MEL.features(jnp.asarray(
        tone(conditioning.midi_to_hz(midi)))))).mean(axis=-1) for _, midi in labels])
    return SpectrumPrior(CONTRACT, MEL.unit_span_db,
                                      tuple(name for name, _ in labels),
                                      np.array([m for _, m in labels]),
                                      np.full(len(labels), loudness), spectra)


def test_the_prior_moves_the_nearest_notes_harmonics_to_an_unseen_pitch():
    prior = tone_prior({"violin": [60.0, 64.0, 67.0], "flute": [72.0]})
    own = prior.spectra[1]
    spectrum, distance = prior.spectrum("violin", 64.0, -20.0)
    np.testing.assert_allclose(spectrum, own, atol=1e-6)  # a note's own pitch: itself
    assert distance == 0.0
    # An unseen pitch: the tones below and above, moved to it, land much closer to its
    # real spectrum than the nearest one held still.
    truth = np.asarray(MEL.to_unit(MEL.features(jnp.asarray(tone(
        conditioning.midi_to_hz(62.0)))))).mean(axis=-1)
    drawn, distance = prior.spectrum("violin", 62.0, -20.0)
    assert distance == 2.0
    moved_error = np.abs(drawn - truth).mean()
    assert moved_error < 0.5 * np.abs(prior.spectra[0] - truth).mean()
    # Leaving a note out draws it from its neighbours; an instrument's only note stays.
    left_out, distance = prior.spectrum("violin", 64.0, -20.0, exclude=1)
    assert distance == 3.0 and not np.allclose(left_out, own)
    assert np.abs(left_out - own).mean() < 0.5 * np.abs(prior.spectra[0] - own).mean()
    alone, distance = prior.spectrum("flute", 72.0, -20.0, exclude=3)
    np.testing.assert_allclose(alone, prior.spectra[3], atol=1e-6)
    # 6 dB louder lifts value 0 by 6 dB of the unit span.
    louder, _ = prior.spectrum("violin", 64.0, -14.0)
    np.testing.assert_allclose(louder - own, 6.0 / MEL.unit_span_db, atol=1e-6)
    # Beyond the highest note: the nearest alone, moved; run.json keeps the table.
    high, distance = prior.spectrum("violin", 70.0, -20.0)
    assert distance == 3.0
    table = json.loads(json.dumps(prior.to_dict()))
    labels = [{"instrument": i, "midi": m, "loudness_db": v}
              for i, m, v in zip(prior.instrument, prior.midi, prior.loudness_db, strict=True)]
    again = SpectrumPrior.from_dict(CONTRACT, labels, table)
    np.testing.assert_allclose(again.spectrum("violin", 70.0, -20.0)[0], high, atol=1e-4)
    with pytest.raises(ValueError, match="no training note of 'oboe'"):
        prior.spectrum("oboe", 60.0, -20.0)


def formant_tone(midi: float, seconds: float = 1.0) -> np.ndarray:
    """A harmonic tone whose partials pass a fixed resonance at 2 kHz (a body that stays put
    while the pitch moves: source and filter)."""
    f0 = conditioning.midi_to_hz(midi)
    t = np.arange(int(seconds * RATE)) / RATE
    wave = sum(np.sin(2 * np.pi * k * f0 * t) * (0.05 + np.exp(-((k * f0 - 2000) / 400) ** 2))
               for k in range(1, int(8000 / f0)))
    return (0.1 * wave / np.max(np.abs(wave))).astype(np.float32)


def test_the_source_filter_prior_keeps_the_body_in_place_beyond_the_range():
    pitches = [60.0, 62.0, 64.0, 67.0, 69.0]
    spectra = np.stack([np.asarray(MEL.to_unit(MEL.features(jnp.asarray(formant_tone(m)))))
                        .mean(axis=-1) for m in pitches])
    kinds = {kind: SpectrumPrior(CONTRACT, MEL.unit_span_db, ("violin",) * len(pitches),
                                 np.array(pitches), np.full(len(pitches), -20.0), spectra,
                                 kind) for kind in ("neighbours", "source_filter")}
    for below in (55.0, 53.0):  # five and seven semitones below the lowest note
        truth = np.asarray(MEL.to_unit(MEL.features(jnp.asarray(formant_tone(below)))))
        truth = truth.mean(axis=-1)
        errors = {kind: np.abs(prior.spectrum("violin", below, -20.0)[0] - truth).mean()
                  for kind, prior in kinds.items()}
        assert errors["source_filter"] < 0.95 * errors["neighbours"], errors
    # At a training note's own pitch both are that note; inside the range they agree closely.
    for prior in kinds.values():
        np.testing.assert_allclose(prior.spectrum("violin", 64.0, -20.0)[0], spectra[2],
                                   atol=1e-5)


def test_a_notes_condition_carries_its_prior_and_the_priors_distance():
    prior = tone_prior({"violin": [60.0, 64.0], "flute": [72.0]})
    condition = conditioning.note_condition(
        CONTRACT, ("flute", "violin"), [conditioning.NoteSpec("violin", 64.0, -20.0, 10),
                                        conditioning.NoteSpec("violin", 62.0, -20.0, 10)], 12,
        prior, exclude=[1, None])
    assert condition.prior.shape == (2, 2, 1, CONTRACT.n_mels)
    np.testing.assert_allclose(condition.prior[0, 1], prior.spectrum("violin", 64.0, -20.0,
                                                                     exclude=1)[0])
    np.testing.assert_allclose(condition.prior[1, 0], prior.spectrum("flute", 62.0, -20.0)[0])
    distances = np.asarray(condition.pitch[:, :, -1])
    np.testing.assert_allclose(distances, [[4 / 12] * CONTRACT.n_mels,
                                           [2 / 12] * CONTRACT.n_mels])


def test_the_pool_grows_every_note_with_its_own_and_its_left_out_prior():
    targets = tnca_training.pool_targets(256, 10, 0.5)
    assert targets.shape == (256,) and set(targets) == set(range(20))
    assert np.mean(targets >= 10) == pytest.approx(0.5, abs=0.05)
    assert set(tnca_training.pool_targets(256, 10, 0.0)) == set(range(10))
    assert set(tnca_training.pool_targets(256, 10, 1.0)) == set(range(10, 20))


def conditioned_model() -> tuple[TNCA, conditioning.NoteCondition]:
    model = TNCA(CONTRACT.n_mels, channels=8, hidden=16, instruments=2,
                 pitch_features=conditioning.PITCH_FEATURES,
                 note_time_features=NOTE_TIME_FEATURES, rngs=nnx.Rngs(0))
    params = nnx.state(model, nnx.Param)
    noisy = jax.tree.map(lambda x: 0.3 * jax.random.normal(jax.random.key(x.size), x.shape),
                         params)
    nnx.update(model, noisy)
    condition = conditioning.note_condition(
        CONTRACT, ("flute", "violin"),
        [conditioning.NoteSpec("violin", 72.0, -20.0, 30),
         conditioning.NoteSpec({"violin": 0.5, "flute": 0.5}, 60.0, -30.0, 20),
         conditioning.NoteSpec("flute", 60.0, -30.0, 20)], 30,
        tone_prior({"violin": [72.0], "flute": [60.0]}))
    return model, condition


def test_cells_past_a_notes_end_stay_dead_while_it_grows():
    model, condition = conditioned_model()
    state = model.seed(30, condition=condition)
    for step in range(6):
        state = model(state, jax.random.key(step), condition)
    alive = np.asarray(state[..., 1] > 0.1)
    assert alive[0].mean() > 0.2 and alive[1, :, :20].mean() > 0.2  # it grows ...
    assert not alive[1, :, 20:].any()  # ... but never past the end of the shorter note
    shown = np.asarray(model.spectrogram(state, condition))
    assert np.all(shown[1, ..., 20:] == 0)  # silence there


# ------------------------------------------------------------------ a trained tiny model
def test_the_instruments_job_trains_measures_and_reports(instruments_workdir):
    report = RunMetrics.from_dict(json.loads((instruments_workdir / "metrics.json").read_text()))
    assert report.job == "instruments" and report.extra["instruments"] == ["flute", "violin"]
    log = [json.loads(line) for line in (instruments_workdir / "train_metrics.jsonl").open()]
    assert log[-1]["grid_l1_db"] < 0.5 * log[0]["grid_l1_db"]  # it learned
    rows = {n.name: n for n in report.notes}
    assert any(n.held_out for n in rows.values()) and any(not n.held_out for n in rows.values())
    for note in rows.values():
        generated = note.generated
        assert note.temporal_gain == pytest.approx(note.static_baseline.mel_l1_db
                                                   / generated.mel_l1_db)
        assert 0 < generated.mel_l1_db < 40 and generated.mrstft > 0 and generated.rms_ratio > 0
        # Each note is measured beside the vocoder's ceiling on its own recording.
        assert note.ceiling.mel_l1_db < generated.mel_l1_db
    assert set(report.summary) == {"held_out", "seen"}
    for demo in report.demos:
        audio, rate = sf.read(instruments_workdir / demo["file"])
        assert rate == RATE and audio.ndim == 1 and 0 < np.abs(audio).max() <= 1.0
    kinds = {d["kind"] for d in report.demos}
    assert kinds == {"note", "morph", "glide", "regrown"}
    page = (instruments_workdir / "report.html").read_text()
    assert page.count("<audio") == len(report.demos)
    assert all(f'data-note="{name}"' in page for name in rows)
    for entry in report.regrowth:
        assert entry["ratio"] == pytest.approx(entry["regrown_mel_l1_db"]
                                               / entry["undamaged_mel_l1_db"])


def test_a_morph_moves_brightness_and_noisiness_monotonically(instruments_workdir):
    """The violin -> flute blend of a small trained model: its spectral centroid and its
    harmonic-to-noise ratio move monotonically with the blend weight."""
    run = load_run(instruments_workdir)
    inverse = tnca_jax.inverse.load_inverse(run.representation)
    curve = evaluation.morph_curve(run, inverse, "violin", "flute", 76.0, run.frames(0.8),
                                   growth_steps=16, seed=0)
    for key in ("centroid_hz", "hnr_db"):
        steps = np.diff(curve[key])
        assert np.all(steps > 0) or np.all(steps < 0), (key, curve[key])
    assert curve["centroid_hz"][0] != pytest.approx(curve["centroid_hz"][-1], rel=0.05)


def test_a_blend_mixes_what_each_instrument_grows_and_a_note_ignores_its_batch(
        instruments_workdir):
    run = load_run(instruments_workdir)
    frames = run.frames(0.8)
    spec = generation.note_spec
    violin, flute, mix, glide = generation.grow_features(run, [
        spec(run, "violin", 70, frames), spec(run, "flute", 70, frames),
        spec(run, {"violin": 0.3, "flute": 0.7}, 70, frames),
        spec(run, "violin", 70, frames, glide_to="flute")], seeds=[0], growth_steps=16,
        num_stages=2)
    power = 0.3 * np.exp(violin) + 0.7 * np.exp(flute)  # ln of a power mel: a crossfade
    np.testing.assert_allclose(mix, np.log(np.maximum(power, CONTRACT.log_floor)), rtol=1e-5,
                               atol=1e-4)
    assert np.all(mix <= np.maximum(violin, flute) + 1e-4)
    assert np.all(mix >= np.minimum(violin, flute) - 1e-4)
    np.testing.assert_allclose(glide[..., 0], violin[..., 0], atol=1e-4)  # starts as a violin
    np.testing.assert_allclose(glide[..., -1], flute[..., -1], atol=1e-4)  # ends as a flute
    [alone] = generation.grow_features(run, [spec(run, "violin", 70, frames)], seeds=[0],
                                       growth_steps=16, num_stages=2)
    # The batch does not change a note (to float rounding of another vectorisation: 1e-3 of a
    # natural-log unit is 0.004 dB).
    np.testing.assert_allclose(alone, violin, atol=1e-3)


def test_generate_grows_unseen_pitches_lengths_blends_and_glides(instruments_workdir):
    note = tnca_jax.generate(instruments_workdir, instrument="violin", pitch="F#4", seconds=0.7)
    frames = CONTRACT.num_frames(round(0.7 * RATE))
    assert note.spectrogram.shape == (CONTRACT.n_mels, frames)
    assert note.audio.shape == (frames * CONTRACT.hop_length,)
    again = tnca_jax.generate(instruments_workdir, instrument="violin", pitch="F#4", seconds=0.7)
    np.testing.assert_array_equal(again.audio, note.audio)
    higher = tnca_jax.generate(instruments_workdir, instrument="violin", pitch="F#5", seconds=0.7)
    assert not np.allclose(higher.spectrogram, note.spectrogram)
    blend = tnca_jax.generate(instruments_workdir, instrument={"violin": 0.5, "flute": 0.5},
                              pitch=70, seconds=0.7)
    glide = tnca_jax.generate(instruments_workdir, instrument="violin", glide_to="flute", pitch=70,
                              seconds=0.7)
    assert np.isfinite(blend.audio).all() and np.isfinite(glide.audio).all()
    for bad, match in (({"instrument": "oboe"}, "'oboe' is not one"),
                       ({"pitch": "H4"}, "not a note name"),
                       ({"seconds": -1.0}, "must be a positive number"),
                       ({"seconds": 1e5}, "at most 60"),
                       ({"instrument": {"violin": float("nan")}}, "must be finite"),
                       ({"loudness_db": 400}, "between -120 and 20"),
                       ({"refinement": tnca_jax.refine.Refinement(best_of=3)},
                        "best-of-N picks among candidates of a note run")):
        with pytest.raises(UserError, match=match):
            tnca_jax.generate(instruments_workdir, **{"pitch": "A4", **bad})


def test_an_erased_block_of_frames_regrows(instruments_workdir):
    run = load_run(instruments_workdir)
    spec = generation.note_spec(run, "violin", "C5", run.frames(0.8))
    [(kept, erased, regrown)] = generation.grow_features(
        run, [spec], seeds=[0], growth_steps=16, num_stages=1, erase=tnca_jax.Erase(0.25, 8))
    hole = generation.centred_hole(spec.frames, spec.frames, 0.25) > 0
    silent = CONTRACT.log_min
    assert np.all(erased[0][:, hole] == pytest.approx(silent))  # erased: silence there
    assert np.mean(regrown[0][:, hole] > silent + 1) > 0.9  # grown back
    assert np.abs(regrown[0] - kept[0]).mean() < np.abs(erased[0] - kept[0]).mean()
    result = tnca_jax.generate(instruments_workdir, pitch="C5", seconds=0.8,
                               erase=tnca_jax.Erase(0.25, 8), growth_steps=16)
    assert result.stages.shape[0] == 3 and result.stage_steps == [24, 8, 24]


def test_a_run_keeps_its_prior_and_a_hand_edited_run_json_is_refused(instruments_workdir,
                                                                       tmp_path):
    run = load_run(instruments_workdir)
    notes = load_note_set(read_tnca(tiny_instruments_config()).data, MEL)
    np.testing.assert_allclose(run.prior.spectra, notes.prior.spectra, atol=1e-5)
    assert run.prior.instrument == tuple(n.instrument for n in notes.training)
    # The envelope was fitted before training and training left it as it was.
    np.testing.assert_allclose(run.model.conditioner.level_time[...],
                               tnca_training.fit_envelopes(notes), atol=1e-6)
    edited = tmp_path / "edited"
    shutil.copytree(instruments_workdir, edited)
    description = json.loads((edited / "run.json").read_text())
    for change in ({"prior": None}, {"grid_frames": "many"}, {"settings": {"job": "note"}}):
        (edited / "run.json").write_text(json.dumps({**description, **change}))
        with pytest.raises(UserError, match=r"run\.json is damaged or was edited"):
            tnca_jax.generate(edited, pitch="A4")
    (edited / "run.json").write_text("{not json")
    with pytest.raises(UserError, match=r"run\.json is damaged"):
        tnca_jax.generate(edited, pitch="A4")


def test_a_workdir_trained_on_other_notes_is_not_resumed(instruments_workdir):
    config = tiny_instruments_config()
    config.data.exclude = ("*phrase*", "*sulA.D5*")  # one training note fewer
    before = sorted(p.name for p in (instruments_workdir / "checkpoints").iterdir())
    with pytest.raises(UserError, match=r"training notes \(5 there, 4 here"):
        train_and_evaluate(read_tnca(config), instruments_workdir, progress=False)
    config = tiny_instruments_config()
    config.train.learning_rate = 1e-3
    with pytest.raises(UserError, match=r"train.learning_rate \(0.002 there, 0.001 here\)"):
        train_and_evaluate(read_tnca(config), instruments_workdir, progress=False)
    assert sorted(p.name for p in (instruments_workdir / "checkpoints").iterdir()) == before


def test_main_py_generate_and_growth_modes_of_the_timbre_job(instruments_workdir):
    config = f"{ROOT / 'configs' / 'instruments.py'}:quick"
    common = [sys.executable, str(ROOT / "main.py"), f"--config={config}",
              f"--workdir={instruments_workdir}", "--config.generate.growth_steps=8",
              "--config.generate.num_stages=2"]
    done = subprocess.run([*common, "--mode=generate",
                           "--config.generate.instrument=violin:0.6,flute:0.4",
                           "--config.generate.pitch=G4", "--config.generate.seconds=0.5"],
                          capture_output=True, text=True, cwd=ROOT, check=True)
    summary = json.loads(done.stdout)
    audio, rate = sf.read(summary["wav"])
    assert rate == RATE and len(audio) == CONTRACT.num_frames(round(0.5 * RATE)) * 512
    assert summary["instrument"] == {"violin": 0.6, "flute": 0.4} and summary["midi"] == 67
    grown = subprocess.run([*common, "--mode=growth", "--config.generate.glide_to=flute"],
                           capture_output=True, text=True, cwd=ROOT, check=True)
    assert (instruments_workdir / "growth.wav").stat().st_size > 0, grown.stderr
    bad = subprocess.run([*common, "--mode=generate", "--config.generate.instrument=oboe"],
                         capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].startswith(
        "error: instrument 'oboe' is not one this model was trained on")


def test_the_quick_config_is_the_documented_corpus():
    notes = load_note_set(read_tnca(get_config("quick")).data, MEL)
    assert notes.instruments == ("flute", "violin")
    assert len(notes.training) == 10 and len(notes.held_out) == 4
    assert not any(n.held_out for n in notes.training)
    assert tnca_training.fit_envelopes(notes).shape == (2, 1, CONTRACT.n_mels,
                                                       NOTE_TIME_FEATURES)
    # Each training note is a target twice: with its own spectrum as its prior, and with the
    # prior drawn from the other notes (as an unseen pitch's is).
    targets = tnca_training.Targets.create(notes)
    assert targets.unit.shape[0] == 20
    for k, note in enumerate(notes.training):
        own = np.asarray(MEL.to_unit(jnp.asarray(note.features))).mean(axis=-1)
        i = notes.instruments.index(note.instrument)
        np.testing.assert_allclose(targets.condition.prior[k, i], own, atol=1e-5)
        assert np.all(targets.condition.pitch[k, :, -1] == 0)
        assert not np.allclose(targets.condition.prior[10 + k, i], own, atol=1e-3)
        assert np.all(targets.condition.pitch[10 + k, :, -1] > 0)
