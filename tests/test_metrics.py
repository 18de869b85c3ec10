import numpy as np

from tests.test_vocoders import harmonic_tone
from tnca_jax import contract as C
from tnca_jax import metrics

CONTRACT = C.get_contract(C.DEFAULT_CONTRACT)


def test_identical_audio_scores_ideal():
    tone = harmonic_tone(CONTRACT)
    scores = metrics.compare(tone, tone, CONTRACT)
    assert scores.mel_l1_db == 0 and scores.spectral_convergence == 0 and scores.mrstft == 0
    assert scores.rms_ratio == 1 and scores.centroid_error_hz == 0


def test_metrics_move_the_right_way():
    tone = harmonic_tone(CONTRACT)
    rng = np.random.default_rng(0)
    slightly = tone + 0.001 * rng.standard_normal(len(tone)).astype(np.float32)
    badly = tone + 0.05 * rng.standard_normal(len(tone)).astype(np.float32)
    small, large = (metrics.compare(tone, x, CONTRACT) for x in (slightly, badly))
    assert 0 < small.mel_l1_db < large.mel_l1_db
    assert 0 < small.mrstft < large.mrstft
    assert small.spectral_convergence < large.spectral_convergence
    assert large.centroid_error_hz > 500  # white noise brightens the tone
    assert metrics.rms_ratio(tone, 2 * tone) == np.float32(2.0)
    # Broadband noise sits far above the 80 dB floor in every band: twice as loud is 6.02 dB.
    noise = 0.1 * rng.standard_normal(CONTRACT.sample_rate).astype(np.float32)
    assert abs(metrics.mel_l1_db(noise, 2 * noise, CONTRACT) - 6.02) < 0.01
