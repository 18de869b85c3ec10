import importlib.util
import io

import numpy as np
import pytest

from tests.conftest import VIOLIN
from tests.test_vocoders import harmonic_tone
from tnca_jax import contract as C
from tnca_jax import metrics, plots
from tnca_jax.audio import load_audio

CONTRACT = C.get_contract(C.DEFAULT_CONTRACT)
HAS_VISQOL = importlib.util.find_spec("visqol") is not None
HAS_PESQ = importlib.util.find_spec("pesq") is not None
HAS_CDPAM = importlib.util.find_spec("cdpam") is not None


def _tone(f0: float, seconds: float = 1.2) -> np.ndarray:
    """A bowed-string-like tone: 7 partials of f0, 50 ms attack, steady, at the contract rate."""
    t = np.arange(int(seconds * CONTRACT.sample_rate)) / CONTRACT.sample_rate
    tone = sum(0.3 / k * np.sin(2 * np.pi * f0 * k * t + k) for k in range(1, 8))
    return (tone * np.minimum(1.0, t / 0.05)).astype(np.float32)


def test_identical_audio_scores_ideal():
    tone = harmonic_tone(CONTRACT)
    scores = metrics.compare(tone, tone, CONTRACT)
    assert scores.mel_l1_db == 0 and scores.spectral_convergence == 0 and scores.mrstft == 0
    assert scores.mrstft_auraloss == 0
    assert scores.log_spectral_distance_db == 0 and scores.mcd_db == 0
    assert scores.snr_db == metrics.SNR_MAX_DB
    assert scores.rms_ratio == 1 and scores.centroid_error_hz == 0
    assert scores.f0_error_cents == 0 and scores.voiced_agreement == 1
    if HAS_VISQOL:
        assert scores.visqol_moslqo == pytest.approx(4.73, abs=0.02)
    # The perceptual extra (PESQ, CDPAM): measured where installed, else missing with a note.
    if HAS_PESQ:
        assert scores.pesq_mos == pytest.approx(4.64, abs=0.01)
    else:
        assert scores.pesq_mos is None and "not installed" in scores.notes["pesq_mos"]
    if HAS_CDPAM:
        assert scores.cdpam_distance == pytest.approx(0.0, abs=1e-4)
    else:
        assert scores.cdpam_distance is None and "not installed" in scores.notes["cdpam_distance"]
    assert set(scores.to_dict()) == {*metrics.METRICS, "notes"}


def test_metrics_move_the_right_way():
    tone = harmonic_tone(CONTRACT)
    rng = np.random.default_rng(0)
    slightly = tone + 0.001 * rng.standard_normal(len(tone)).astype(np.float32)
    badly = tone + 0.05 * rng.standard_normal(len(tone)).astype(np.float32)
    small, large = (metrics.compare(tone, x, CONTRACT) for x in (slightly, badly))
    assert 0 < small.mel_l1_db < large.mel_l1_db
    assert 0 < small.mrstft < large.mrstft
    assert 0 < small.mrstft_auraloss < large.mrstft_auraloss
    assert small.spectral_convergence < large.spectral_convergence
    assert 0 < small.log_spectral_distance_db < large.log_spectral_distance_db
    assert 0 < small.mcd_db < large.mcd_db
    assert large.snr_db < small.snr_db < metrics.SNR_MAX_DB
    assert large.centroid_error_hz > 500  # white noise brightens the tone
    if HAS_VISQOL:
        assert 1 < large.visqol_moslqo < small.visqol_moslqo < 4.7
    if HAS_PESQ:
        assert 1 < large.pesq_mos < small.pesq_mos < 4.64
    if HAS_CDPAM:
        assert 0 < small.cdpam_distance < large.cdpam_distance
    assert metrics.rms_ratio(tone, 2 * tone) == np.float32(2.0)
    # Broadband noise sits far above the 80 dB floor in every band: twice as loud is 6.02 dB
    # in mel L1 and log-spectral distance, and nothing in mel-cepstral distortion (c0 is out).
    noise = 0.1 * rng.standard_normal(CONTRACT.sample_rate).astype(np.float32)
    louder = metrics.compare(noise, 2 * noise, CONTRACT,
                             only={"mel_l1_db", "log_spectral_distance_db", "mcd_db"})
    assert louder.mel_l1_db == pytest.approx(6.02, abs=0.01)
    assert louder.log_spectral_distance_db == pytest.approx(6.02, abs=0.01)
    assert louder.mcd_db < 1e-3 and louder.snr_db is None  # only the three were computed


def test_snr_of_a_known_error():
    tone = harmonic_tone(CONTRACT)
    assert metrics.snr_db(tone, 1.1 * tone) == pytest.approx(20.0, abs=1e-3)
    assert metrics.snr_db(tone, np.zeros_like(tone)) == pytest.approx(0.0, abs=1e-9)


def test_a_semitone_up_is_100_cents():
    a4, up = _tone(440.0), _tone(440.0 * 2 ** (1 / 12))
    scores = metrics.compare(a4, up, CONTRACT,
                             only={"f0_error_cents", "voiced_agreement", "mcd_db"})
    assert scores.f0_error_cents == pytest.approx(100.0, abs=3.0)
    assert scores.voiced_agreement > 0.9 and scores.mcd_db > 1.0
    a_fifth_up = metrics.compare(a4, _tone(660.0), CONTRACT, only={"f0_error_cents"})
    assert a_fifth_up.f0_error_cents == pytest.approx(702.0, abs=5.0)


def test_voicing_agreement_of_a_note_cut_in_half():
    tone = _tone(440.0)
    half = tone.copy()
    half[len(tone) // 2:] = 0
    scores = metrics.compare(tone, half, CONTRACT, only={"voiced_agreement"})
    assert scores.voiced_agreement == pytest.approx(0.5, abs=0.1)


def test_missing_values_say_why():
    tone = _tone(440.0)
    unvoiced = metrics.compare(tone, np.zeros_like(tone), CONTRACT, only={"f0_error_cents"})
    assert unvoiced.f0_error_cents is None and unvoiced.voiced_agreement == 0
    assert "no frame is voiced" in unvoiced.notes["f0_error_cents"]
    short = _tone(440.0, seconds=0.5)
    visqol = metrics.compare(short, short, CONTRACT, only={"visqol_moslqo"})
    assert visqol.visqol_moslqo is None
    assert ("smaller than minimum patch" if HAS_VISQOL else "not installed") in (
        visqol.notes["visqol_moslqo"])
    with pytest.raises(ValueError, match="unknown metric"):
        metrics.compare(short, short, CONTRACT, only={"pesq_nb"})


def test_badness_orders_every_metric_towards_its_ideal():
    assert metrics.badness("mel_l1_db", 1.0) < metrics.badness("mel_l1_db", 2.0)
    assert metrics.badness("visqol_moslqo", 4.0) < metrics.badness("visqol_moslqo", 3.0)
    assert metrics.badness("rms_ratio", 0.5) == pytest.approx(metrics.badness("rms_ratio", 2.0))
    assert metrics.badness("rms_ratio", 1.0) < metrics.badness("rms_ratio", 1.1)
    assert metrics.badness("f0_error_cents", None) == np.inf


def test_comparison_figure_shows_the_mel_l1_it_reports():
    tone = harmonic_tone(CONTRACT)
    noisy = tone + 0.01 * np.random.default_rng(2).standard_normal(len(tone)).astype(np.float32)
    png = io.BytesIO()
    drawn = plots.comparison(png, tone, noisy, CONTRACT, title="test")
    assert drawn == pytest.approx(metrics.mel_l1_db(tone, noisy, CONTRACT), rel=1e-6)
    assert png.getvalue()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("damage", ["noise", "late and quieter", "another note"])
def test_the_auraloss_mrstft_is_auralosss_own_number(damage):
    """The figure published vocoders report is auraloss's MultiResolutionSTFTLoss with its
    defaults: ours must equal it, on a real recording against three kinds of difference."""
    import auraloss  # the test extra's (it brings torch)
    import torch

    violin = load_audio(VIOLIN, CONTRACT.sample_rate, max_seconds=1.0)
    other = {"noise": violin + 0.01 * np.random.default_rng(0).standard_normal(len(violin)),
             "late and quieter": 0.7 * np.roll(violin, 300),
             "another note": _tone(440.0, 1.0)}[damage][: len(violin)].astype(np.float32)
    theirs = float(auraloss.freq.MultiResolutionSTFTLoss()(
        torch.from_numpy(other)[None, None], torch.from_numpy(violin)[None, None]))
    ours = metrics.mrstft_auraloss(violin, other, CONTRACT.sample_rate)
    assert ours == pytest.approx(theirs, rel=1e-4)
    # Not today's mrstft: frames centred and the log floored at 1e-4, not 1e-5.
    assert abs(metrics.mrstft(violin, other, CONTRACT.sample_rate) - ours) > 1e-3 * ours
