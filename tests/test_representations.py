import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.conftest import VIOLIN
from tnca_jax import losses
from tnca_jax.audio import load_audio
from tnca_jax.representations import get_representation


@pytest.fixture(scope="module")
def violin():
    audio = load_audio(VIOLIN, 22050, max_seconds=1.0)
    return jnp.asarray(audio[: len(audio) // 256 * 256])


def test_mag_if_inverts_a_recording_exactly(violin):
    rep = get_representation("mag_if", "bigvgan_v2_22khz_80band")
    features = rep.features(violin)
    assert features.shape == (2, 513, len(violin) // 256)
    rebuilt = rep.audio(rep.from_unit(rep.to_unit(features)), jax.random.key(0))
    assert float(jnp.max(jnp.abs(rebuilt - violin))) < 1e-3  # magnitude floor 1e-5 only
    assert float(losses.mrstft_distance(violin, rebuilt, 22050)) < 0.01


@pytest.mark.parametrize(("kind", "contract", "bound"), [
    ("stft", "bigvgan_v2_22khz_80band", 0.5), ("mel", "griffinlim_22khz_128band", 2.0)])
def test_magnitude_representations_invert_close_to_the_recording(violin, kind, contract, bound):
    rep = get_representation(kind, contract)
    rebuilt = rep.audio(rep.features(violin), jax.random.key(0), griffinlim_iterations=64)
    noise = 0.05 * jax.random.normal(jax.random.key(1), violin.shape)
    distance = float(losses.mrstft_distance(violin, rebuilt, 22050))
    assert distance < bound < float(losses.mrstft_distance(violin, noise, 22050))


def test_audio_loss_gradient_is_finite_and_nonzero(violin):
    for kind in ("mag_if", "stft"):
        rep = get_representation(kind, "bigvgan_v2_22khz_80band")
        unit = rep.to_unit(rep.features(violin)) * 0.9

        def loss(unit, rep=rep):
            audio = rep.audio(rep.from_unit(unit), jax.random.key(0), griffinlim_iterations=2)
            return losses.mrstft_distance(violin, audio, 22050)

        grad = jax.grad(loss)(unit)
        assert bool(jnp.all(jnp.isfinite(grad))) and float(jnp.abs(grad).max()) > 0, kind


def test_spectral_losses_on_known_cases():
    x = jnp.asarray(np.random.default_rng(0).random((3, 16, 20)), jnp.float32)
    assert float(losses.multiscale_l1(x, x)) == 0 and float(losses.temporal_l1(x, x)) == 0
    assert float(losses.multiscale_l1(x, x + 0.5)) == pytest.approx(0.5)
    assert float(losses.temporal_l1(x, x + 0.5)) == pytest.approx(0.0, abs=1e-6)  # no change
    ramp = x + jnp.arange(20.0) * 0.1
    assert float(losses.temporal_l1(x, ramp)) == pytest.approx(0.1, abs=1e-5)
    assert float(losses.waveform_l1(x[0, 0], x[0, 0] + 1)) == pytest.approx(1.0)


def test_unknown_representation_is_an_error():
    with pytest.raises(ValueError, match="unknown representation"):
        get_representation("wavelet", "bigvgan_v2_22khz_80band")
    with pytest.raises(ValueError, match="natural log of the magnitude"):
        get_representation("stft", "griffinlim_22khz_128band")
