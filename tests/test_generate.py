import json

import jax
import numpy as np
import pytest
import soundfile as sf
from flax import nnx

import tnca_jax
from tnca_jax import generation, inverse
from tnca_jax.errors import ConfigError
from tnca_jax.generation import load_run
from tnca_jax.refine import Refinement
from tnca_jax.train import create_train_state, restore
from tnca_jax.workdir import Workdir


def test_main_job_writes_every_output(trained_workdir):
    for name in ("target.wav", "generated.wav", "metrics.json", "comparison.png", "growth.png",
                 "train_metrics.jsonl", "run.json"):
        assert (trained_workdir / name).stat().st_size > 0, name
    assert any((trained_workdir / "checkpoints").iterdir())
    report = json.loads((trained_workdir / "metrics.json").read_text())
    for section in ("generated", "ceiling", "static_baseline"):
        assert set(report[section]) >= {"mel_l1_db", "spectral_convergence", "mrstft",
                                        "rms_ratio", "centroid_error_hz"}
    # The vocoder's ceiling on the true spectrogram is far better than the static baseline.
    assert report["ceiling"]["mel_l1_db"] < 1.0 < 5 < report["static_baseline"]["mel_l1_db"]
    assert report["temporal_gain"] == pytest.approx(
        report["static_baseline"]["mel_l1_db"] / report["generated"]["mel_l1_db"])
    audio, rate = sf.read(trained_workdir / "generated.wav")
    assert rate == 22050 and audio.ndim == 1 and np.abs(audio).max() > 0


def test_generate_from_workdir(trained_workdir):
    result = tnca_jax.generate(trained_workdir, steps=8, num_stages=4, seed=0)
    contract = result.contract
    n_frames = json.loads((trained_workdir / "run.json").read_text())["n_frames"]
    assert result.spectrogram.shape == (contract.n_mels, n_frames)
    assert result.audio.dtype == np.float32 and result.audio.shape == (n_frames * 512,)
    assert result.sample_rate == 22050 and result.stage_steps == [2, 4, 6, 8]
    assert result.spectrogram.min() >= contract.log_min
    # Growth kept in stages is the same growth: its last stage is the note grown in one go.
    whole = tnca_jax.generate(trained_workdir, steps=8, num_stages=1, seed=0)
    np.testing.assert_allclose(result.stages[-1], whole.spectrogram, atol=1e-5)
    assert not np.allclose(result.stages[0], result.stages[-1])  # it grew between stages
    # The same seed grows the same note, another seed another one.
    again = tnca_jax.generate(trained_workdir, steps=8, seed=0)
    np.testing.assert_array_equal(again.audio, result.audio)
    other = tnca_jax.generate(trained_workdir, steps=8, seed=1)
    assert not np.array_equal(other.spectrogram, result.spectrogram)


def _params(model) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree.leaves(nnx.state(model, nnx.Param))]


def test_a_checkpoint_given_by_path_is_the_one_loaded(trained_workdir):
    steps = sorted(int(p.name) for p in (trained_workdir / "checkpoints").iterdir())
    assert len(steps) >= 2
    first, latest = load_run(trained_workdir / "checkpoints" / str(steps[0])), load_run(
        trained_workdir)
    assert (first.step, latest.step) == (steps[0], steps[-1])
    graphdef, state, pool = create_train_state(latest.config, latest.representation.n_bins,
                                               latest.n_frames)
    checkpoints = Workdir(trained_workdir).checkpoints(create=False)
    restore(checkpoints, steps[0], state, pool)
    checkpoints.close()
    expected = _params(nnx.merge(graphdef, state)[0])
    for loaded, stored in zip(_params(first.model), expected, strict=True):
        np.testing.assert_array_equal(loaded, stored)
    assert any(not np.array_equal(a, b) for a, b in zip(_params(first.model),
                                                        _params(latest.model), strict=True))
    result = tnca_jax.generate(trained_workdir / "checkpoints" / str(steps[0]), steps=4,
                               num_stages=2)
    assert result.stages.shape[0] == 2 and result.stage_steps == [2, 4]


def test_generate_compiles_once_for_the_same_workdir(trained_workdir):
    tnca_jax.generate(trained_workdir, steps=8)
    compiled = generation._grow_batch._cache_size(), inverse._griffin_lim._cache_size()
    tnca_jax.generate(trained_workdir, steps=8, seed=3)
    assert (generation._grow_batch._cache_size(),
            inverse._griffin_lim._cache_size()) == compiled


def test_bad_refinement_is_refused_before_anything_grows(trained_workdir, monkeypatch):
    monkeypatch.setattr(generation, "render", lambda *a, **k: pytest.fail("grew anyway"))
    with pytest.raises(ConfigError, match="best_of=0 must be at least 1"):
        tnca_jax.generate(trained_workdir, refinement=Refinement(best_of=0))
    with pytest.raises(ConfigError, match="best_of_metric='loudness' is not a metric"):
        tnca_jax.generate(trained_workdir, refinement=Refinement(best_of_metric="loudness"))


def test_generate_on_a_missing_workdir_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a tnca_jax workdir"):
        tnca_jax.generate(tmp_path)
