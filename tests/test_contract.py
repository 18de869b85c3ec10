import dataclasses

import jax
import jax.numpy as jnp
import librosa
import numpy as np
import pytest

from tests.conftest import VIOLIN
from tnca_jax import contract as C
from tnca_jax import dsp
from tnca_jax.audio import load_audio


def librosa_log_mel(audio: np.ndarray, contract: C.MelContract) -> np.ndarray:
    """BigVGAN's recipe written with librosa: reflect pad, center=False STFT, Slaney mel, log."""
    padded = np.pad(audio, (contract.pad, contract.pad), mode="reflect")
    spec = librosa.stft(padded, n_fft=contract.n_fft, hop_length=contract.hop_length,
                        win_length=contract.win_length, window="hann", center=False)
    mag = np.sqrt(np.abs(spec) ** 2 + dsp.MAGNITUDE_EPS) ** contract.magnitude_power
    basis = librosa.filters.mel(sr=contract.sample_rate, n_fft=contract.n_fft,
                                n_mels=contract.n_mels, fmin=contract.fmin,
                                fmax=contract.mel_fmax, htk=False, norm="slaney",
                                dtype=np.float64)
    return np.log(np.maximum(basis @ mag, contract.log_floor))


@pytest.mark.parametrize("name", ["bigvgan_v2_22khz_80band", "bigvgan_v2_24khz_100band",
                                  "bigvgan_v2_44khz_128band", "griffinlim_22khz_128band",
                                  "hifigan_v1_22khz"])
def test_log_mel_matches_librosa(name):
    """Same recipe, same numbers: to 1e-4 in float64; in float32 to FFT round-off, which is
    ~1e-7 of a frame's peak and so reaches ~1e-3 in the log only 60+ dB below it."""
    contract = C.get_contract(name)
    audio = load_audio(VIOLIN, contract.sample_rate, max_seconds=0.5).astype(np.float64)
    reference = librosa_log_mel(audio, contract)
    with jax.enable_x64(True):
        exact = np.asarray(dsp.log_mel(jnp.asarray(audio), contract))
    assert exact.shape == (contract.n_mels, len(audio) // contract.hop_length)
    np.testing.assert_allclose(exact, reference, atol=1e-4)
    single = np.asarray(dsp.log_mel(audio.astype(np.float32), contract))
    assert single.dtype == np.float32
    np.testing.assert_allclose(single, reference, atol=5e-3)
    level_db = np.asarray(contract.to_db(reference))
    loud = level_db > level_db.max() - 60
    np.testing.assert_allclose(single[loud], reference[loud], atol=1e-4)
    assert reference.max() > reference.min() + 5  # real signal, not a floor-only spectrogram


def test_bigvgan_presets_follow_bigvgan_conventions():
    preset = C.PRESETS["bigvgan_v2_24khz_100band"]
    assert (preset.sample_rate, preset.n_fft, preset.hop_length, preset.n_mels) == (
        24000, 1024, 256, 100)
    assert preset.log == "ln" and preset.log_floor == 1e-5 and preset.magnitude_power == 1
    assert preset.pad == (1024 - 256) // 2
    assert preset.log_min == pytest.approx(np.log(1e-5))
    assert C.PRESETS["hifigan_v1_22khz"].fmax == 8000


def test_empty_mel_filters_are_rejected():
    with pytest.raises(C.ContractError, match="mel filters are empty"):
        C.MelContract(name="too_many_bands", sample_rate=44100, n_fft=1024,
                           hop_length=256, win_length=1024, n_mels=256)


@pytest.mark.parametrize("change", [{"fmax": 30000.0}, {"hop_length": 0}, {"win_length": 4096},
                                    {"log_floor": 0.0}])
def test_invalid_contracts_are_rejected(change):
    with pytest.raises(C.ContractError):
        dataclasses.replace(C.PRESETS["bigvgan_v2_22khz_80band"], **change)


def test_mismatch_names_both_contracts_and_the_field():
    a, b = C.PRESETS["bigvgan_v2_22khz_80band"], C.PRESETS["bigvgan_v2_22khz_80band_fmax8k"]
    with pytest.raises(C.ContractMismatchError, match="fmax") as err:
        a.require_same(b)
    assert a.name in str(err.value) and b.name in str(err.value)
    a.require_same(dataclasses.replace(a, name="renamed"))  # names alone do not matter


def test_stft_istft_round_trip_is_exact():
    contract = C.get_contract(C.DEFAULT_CONTRACT)
    audio = load_audio(VIOLIN, contract.sample_rate, max_seconds=0.5)
    rebuilt = dsp.istft(dsp.stft(jnp.asarray(audio), contract), contract, len(audio))
    assert float(jnp.max(jnp.abs(rebuilt - audio))) < 1e-5


def test_audio_shorter_than_a_frame_is_refused():
    contract = C.get_contract(C.DEFAULT_CONTRACT)
    with pytest.raises(ValueError, match="shorter than one analysis frame"):
        dsp.log_mel(jnp.zeros(100), contract)
