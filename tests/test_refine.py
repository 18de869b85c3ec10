import dataclasses

import numpy as np
import pytest

import tnca_jax
from configs.violin import get_config
from tests.test_vocoders import harmonic_tone
from tnca_jax import contract as C
from tnca_jax import metrics
from tnca_jax.errors import ConfigError
from tnca_jax.generation import render
from tnca_jax.inverse import load_inverse
from tnca_jax.refine import Refinement, Selection, postprocess, select
from tnca_jax.runs import load_run, recording_of
from tnca_jax.settings import read_tnca

CONTRACT = C.get_contract(C.DEFAULT_CONTRACT)
LEVEL = 0.5 * (CONTRACT.log_min + CONTRACT.log_max)


def test_postprocessing_is_off_by_default():
    assert read_tnca(get_config()).generate.refinement == Refinement()
    assert not Refinement().postprocesses
    grown = np.full((CONTRACT.n_mels, 20), LEVEL, np.float32)
    assert postprocess(grown, CONTRACT, Refinement()) is grown


def test_temporal_median_removes_a_one_frame_click_that_gaussian_only_spreads():
    flat = np.full((CONTRACT.n_mels, 20), LEVEL, np.float32)
    click = flat.copy()
    click[:, 10] += 5.0
    grown = np.stack([flat, click])  # two candidates: smoothing must not mix them
    median = postprocess(grown, CONTRACT, Refinement(temporal_median=3))
    np.testing.assert_array_equal(median[1], flat)
    blurred = postprocess(grown, CONTRACT, Refinement(gaussian_sigma=1.0))
    np.testing.assert_allclose(blurred[0], flat, rtol=1e-6)
    assert 0 < blurred[1, :, 10].mean() - LEVEL < 5.0 / 2
    assert blurred[1, :, 11].mean() > LEVEL + 0.1


def test_harmonic_gain_deepens_the_valleys_between_partials():
    bands = np.arange(CONTRACT.n_mels)
    partials = LEVEL + 3.0 * (bands % 6 == 0)[:, None] * np.ones((1, 10), np.float32)
    sharper = postprocess(partials, CONTRACT, Refinement(harmonic_gain=1.0))
    contrast = np.ptp(partials[:, 0]), np.ptp(sharper[:, 0])
    assert contrast[1] > 1.3 * contrast[0]
    loud = postprocess(np.full_like(partials, CONTRACT.log_max) - 3.0 * (bands % 6 != 0)[:, None],
                       CONTRACT, Refinement(harmonic_gain=4.0))
    assert loud.max() <= CONTRACT.log_max and loud.min() >= CONTRACT.log_min


def test_selection_reports_the_gain_over_one_candidate():
    lower = Selection("mel_l1_db", [0, 1, 2], [3.0, 2.0, 4.0], chosen=1).to_dict()
    assert lower["gain_over_first"] == 1.0 and lower["gain_over_mean"] == 1.0
    assert lower["chosen_seed"] == 1 and lower["best"] == 2.0
    higher = Selection("visqol_moslqo", [5, 6], [3.0, 4.0], chosen=1).to_dict()
    assert higher["gain_over_first"] == 1.0 and higher["gain_over_mean"] == 0.5


def test_select_keeps_the_candidate_closest_to_the_reference():
    tone = harmonic_tone(CONTRACT)
    noise = np.random.default_rng(0).standard_normal(len(tone)).astype(np.float32)
    candidates = np.stack([tone + 0.05 * noise, tone + 0.001 * noise, tone + 0.01 * noise])
    selection = select(tone, candidates, [7, 8, 9], CONTRACT, "mel_l1_db")
    assert selection.chosen == 1 and selection.scores[0] > selection.scores[2]


def test_best_of_n_keeps_the_best_grown_candidate(trained_workdir):
    result = tnca_jax.generate(trained_workdir, refinement=Refinement(best_of=3), seed=4)
    selection = result.selection.to_dict()
    assert selection["n"] == 3 and selection["seeds"] == [4, 5, 6]
    assert selection["best"] == min(selection["scores"]) and selection["gain_over_mean"] >= 0
    assert len(set(selection["scores"])) == 3  # the candidates grew differently
    run = load_run(trained_workdir)
    assert metrics.mel_l1_db(recording_of(run).audio, result.audio,
                             run.contract) == selection["best"]
    settings = dataclasses.replace(run.settings.generate, best_of=2)
    with pytest.raises(ConfigError, match="by its recording"):
        render(run, load_inverse(run.representation), settings, 0)


def test_generate_applies_the_postprocessing_to_every_stage(trained_workdir):
    plain = tnca_jax.generate(trained_workdir, growth_steps=6, num_stages=2)
    smoothed = tnca_jax.generate(trained_workdir, growth_steps=6, num_stages=2,
                                 refinement=Refinement(temporal_median=3))
    contract = plain.contract
    np.testing.assert_allclose(smoothed.stages, postprocess(plain.stages, contract,
                                                            Refinement(temporal_median=3)))
    assert not np.array_equal(smoothed.audio, plain.audio)
