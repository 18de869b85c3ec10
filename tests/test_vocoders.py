import jax.numpy as jnp
import numpy as np
import pytest

import vocoders
from tnca_jax import contract as C
from tnca_jax import dsp, metrics


def harmonic_tone(contract: C.MelContract, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(seconds * contract.sample_rate)) / contract.sample_rate
    tone = sum(0.3 / k * np.sin(2 * np.pi * 440.0 * k * t + k) for k in range(1, 8))
    envelope = np.minimum(1.0, t / 0.05) * np.exp(-1.5 * t)
    return (tone * envelope).astype(np.float32)


@pytest.mark.parametrize("name", [C.DEFAULT_CONTRACT, "bigvgan_v2_22khz_80band"])
def test_griffinlim_recovers_a_harmonic_tone(name):
    contract = C.get_contract(name)
    tone = harmonic_tone(contract)
    vocoder = vocoders.load("griffinlim", contract=contract)
    audio = np.asarray(vocoder(dsp.log_mel(tone, contract), contract=contract))[0]
    assert audio.shape == (contract.num_samples(contract.num_frames(len(tone))),)
    scores = metrics.compare(tone, audio, contract)
    assert scores.mel_l1_db < 1.5
    assert scores.centroid_error_hz < 60
    assert 0.8 < scores.rms_ratio < 1.2
    # Far closer than noise with the same mel envelope would be.
    noise = np.random.default_rng(0).standard_normal(len(tone)).astype(np.float32) * 0.1
    assert scores.mrstft < 0.5 * metrics.mrstft(tone, noise, contract.sample_rate)


def test_vocoder_refuses_a_spectrogram_under_another_contract():
    vocoder = vocoders.load("griffinlim")
    other = C.PRESETS["bigvgan_v2_22khz_80band"]
    with pytest.raises(C.ContractMismatchError, match=other.name):
        vocoder(jnp.zeros((1, vocoder.contract.n_mels, 10)) - 5.0, contract=other)


def test_prototype_power_db_mel_is_refused_not_vocoded():
    """The prototype's bug: a power-dB mel (ref=max, values in [-80, 0]) handed to a vocoder
    that expects the natural log of a magnitude mel."""
    bigvgan_like = vocoders.load("griffinlim", contract="bigvgan_v2_22khz_80band")
    prototype = C.PRESETS["prototype_power_db"]
    tone = harmonic_tone(prototype)
    power_db = np.asarray(dsp.log_mel(tone, prototype))
    power_db = np.maximum(power_db - power_db.max(), -80.0)  # power_to_db(ref=max, top_db=80)
    with pytest.raises(C.ContractMismatchError, match="another convention"):
        bigvgan_like(power_db[None])  # no declared contract: caught by its values
    with pytest.raises(C.ContractMismatchError, match=r"magnitude_power|padding"):
        bigvgan_like(power_db[None], contract=prototype)


def test_vocoder_checks_band_count_and_finiteness():
    vocoder = vocoders.load("griffinlim")
    with pytest.raises(C.ContractMismatchError, match="expects"):
        vocoder(jnp.zeros((1, 80, 10)) - 5.0)
    bad = np.full((1, vocoder.contract.n_mels, 10), -5.0, np.float32)
    bad[0, 3, 4] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        vocoder(bad)


def test_unknown_vocoder_is_an_error():
    with pytest.raises(ValueError, match="unknown vocoder"):
        vocoders.load("wavenet")
