import json

import numpy as np
import pytest
import soundfile as sf

import tnca_jax
from tnca_jax.contract import ContractMismatchError


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
    result = tnca_jax.generate(trained_workdir, steps=8, seed=0)
    contract = result.contract
    n_frames = json.loads((trained_workdir / "run.json").read_text())["n_frames"]
    assert result.spectrogram.shape == (contract.n_mels, n_frames)
    assert result.audio.dtype == np.float32 and result.audio.shape == (n_frames * 512,)
    assert result.sample_rate == 22050
    assert result.stages.shape[1:] == result.spectrogram.shape
    np.testing.assert_array_equal(result.stages[-1], result.spectrogram)
    assert result.spectrogram.min() >= contract.log_min
    # The same seed grows the same note; the stored audio is that note.
    again = tnca_jax.generate(trained_workdir, steps=8, seed=0)
    np.testing.assert_array_equal(again.audio, result.audio)


def test_generate_from_one_checkpoint(trained_workdir):
    step_dir = sorted((trained_workdir / "checkpoints").iterdir(), key=lambda p: int(p.name))[0]
    result = tnca_jax.generate(step_dir, steps=4, num_stages=2)
    assert result.stages.shape[0] == 2 and result.stage_steps == [2, 4]


def test_generate_refuses_a_vocoder_under_another_contract(trained_workdir):
    from vocoders.griffinlim import GriffinLim

    with pytest.raises(ContractMismatchError):
        GriffinLim(tnca_jax.get_contract("bigvgan_v2_22khz_80band"))(
            tnca_jax.generate(trained_workdir, steps=4).spectrogram,
            contract=tnca_jax.get_contract("griffinlim_22khz_128band"))


def test_generate_on_a_missing_workdir_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a tnca_jax workdir"):
        tnca_jax.generate(tmp_path)
