"""generate() and what a note run writes."""

import json

import chex
import jax
import numpy as np
import pytest
import soundfile as sf
from flax import nnx

import tnca_jax
from tnca_jax import generation
from tnca_jax.errors import ConfigError
from tnca_jax.records import RunMetrics
from tnca_jax.refine import Refinement
from tnca_jax.runs import load_run
from tnca_jax.training import restore_model
from tnca_jax.workdir import Workdir


def test_main_job_writes_every_output(trained_workdir):
    for name in ("target.wav", "generated.wav", "ceiling.wav", "metrics.json",
                 "comparison.png", "growth.png", "train_metrics.jsonl", "run.json"):
        assert (trained_workdir / name).stat().st_size > 0, name
    assert any((trained_workdir / "checkpoints").iterdir())
    report = RunMetrics.from_dict(json.loads((trained_workdir / "metrics.json").read_text()))
    note = report.note
    for section in (note.generated, note.ceiling, note.static_baseline):
        assert None not in (section.mel_l1_db, section.spectral_convergence, section.mrstft,
                            section.rms_ratio, section.centroid_error_hz)
    # The vocoder's ceiling on the true spectrogram is far better than the static baseline.
    assert note.ceiling.mel_l1_db < 1.0 < 5 < note.static_baseline.mel_l1_db
    assert note.temporal_gain == pytest.approx(
        note.static_baseline.mel_l1_db / note.generated.mel_l1_db)
    assert report.summary["seen"]["mel_l1_db"]["mean"] == note.generated.mel_l1_db
    audio, rate = sf.read(trained_workdir / "generated.wav")
    assert rate == 22050 and audio.ndim == 1 and np.abs(audio).max() > 0


def test_generate_from_workdir(trained_workdir):
    result = tnca_jax.generate(trained_workdir, growth_steps=8, num_stages=4, seed=0)
    contract = result.contract
    frames = json.loads((trained_workdir / "run.json").read_text())["grid_frames"]
    assert result.spectrogram.shape == (contract.n_mels, frames)
    assert result.audio.dtype == np.float32 and result.audio.shape == (frames * 512,)
    assert result.sample_rate == 22050 and result.stage_steps == [2, 4, 6, 8]
    assert result.spectrogram.min() >= contract.log_min
    # Growth kept in stages is the same growth: its last stage is the note grown in one go.
    whole = tnca_jax.generate(trained_workdir, growth_steps=8, num_stages=1, seed=0)
    np.testing.assert_allclose(result.stages[-1], whole.spectrogram, atol=1e-5)
    assert not np.allclose(result.stages[0], result.stages[-1])  # it grew between stages
    # The same seed grows the same note, another seed another one.
    again = tnca_jax.generate(trained_workdir, growth_steps=8, seed=0)
    np.testing.assert_array_equal(again.audio, result.audio)
    other = tnca_jax.generate(trained_workdir, growth_steps=8, seed=1)
    assert not np.array_equal(other.spectrogram, result.spectrogram)
    # A note run regrows what is erased, too.
    regrown = tnca_jax.generate(trained_workdir, growth_steps=8,
                                erase=tnca_jax.Erase(0.25, at_step=4))
    assert regrown.stages.shape[0] == 3 and regrown.stage_steps == [12, 4, 12]


def _params(model) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree.leaves(nnx.state(model, nnx.Param))]


def test_a_checkpoint_given_by_path_is_the_one_loaded(trained_workdir):
    steps = sorted(int(p.name) for p in (trained_workdir / "checkpoints").iterdir())
    assert len(steps) >= 2
    first, latest = load_run(trained_workdir / "checkpoints" / str(steps[0])), load_run(
        trained_workdir)
    assert (first.step, latest.step) == (steps[0], steps[-1])
    expected = load_run(trained_workdir).model
    restore_model(Workdir(trained_workdir), steps[0], expected)
    for loaded, stored in zip(_params(first.model), _params(expected), strict=True):
        np.testing.assert_array_equal(loaded, stored)
    assert any(not np.array_equal(a, b) for a, b in zip(_params(first.model),
                                                        _params(latest.model), strict=True))
    result = tnca_jax.generate(trained_workdir / "checkpoints" / str(steps[0]), growth_steps=4,
                               num_stages=2)
    assert result.stages.shape[0] == 2 and result.stage_steps == [2, 4]


def test_generate_grows_with_one_compiled_grower_per_shape(trained_workdir, monkeypatch):
    # chex counts the grower's traces: a second generate() on the same run, with another
    # seed, traces nothing again.
    counted = chex.assert_max_traces(generation._grow.__wrapped__, n=1)
    monkeypatch.setattr(generation, "_grow", jax.jit(counted, static_argnames=(
        "graphdef", "frames", "steps", "num_stages")))
    first = tnca_jax.generate(trained_workdir, growth_steps=8)
    second = tnca_jax.generate(trained_workdir, growth_steps=8, seed=3)
    assert not np.array_equal(first.audio, second.audio)


def test_bad_requests_are_refused_before_anything_grows(trained_workdir, monkeypatch):
    monkeypatch.setattr(generation, "render", lambda *a, **k: pytest.fail("grew anyway"))
    with pytest.raises(ConfigError, match="best_of=0 must be at least 1"):
        tnca_jax.generate(trained_workdir, refinement=Refinement(best_of=0))
    with pytest.raises(ConfigError, match="best_of_metric='loudness' is not a metric"):
        tnca_jax.generate(trained_workdir, refinement=Refinement(best_of_metric="loudness"))
    with pytest.raises(ConfigError, match=r"growth_steps=2\.5 must be a whole number"):
        tnca_jax.generate(trained_workdir, growth_steps=2.5)
    with pytest.raises(ConfigError, match="fraction must be in"):
        tnca_jax.generate(trained_workdir, erase=tnca_jax.Erase(1.5))
    with pytest.raises(ConfigError, match="instrument, pitch apply to instruments runs only"):
        tnca_jax.generate(trained_workdir, instrument="violin", pitch="A4")


def test_generate_on_a_missing_workdir_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a tnca_jax workdir"):
        tnca_jax.generate(tmp_path)
