"""The harmonic music vocoder: f0 from a log-mel, the harmonic source and its comb, the f0
path through the network, and the adversarial losses and their gradients."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tests.conftest import VIOLIN
from tests.test_music_vocoder import CONTRACT, tiny_config
from tnca_jax import audio as audio_lib
from tnca_jax.dsp import log_mel, stft
from tnca_jax.errors import ConfigError, VocoderError
from vocoders import discriminators as disc
from vocoders import music as nv
from vocoders import music_train as vt
from vocoders.harmonic import estimate_f0, harmonic_source

RATE = CONTRACT.sample_rate
BIN_HZ = RATE / CONTRACT.n_fft


def tone(f0: float, seconds: float = 1.0, harmonics: int = 12, vibrato_cents: float = 0.0
         ) -> np.ndarray:
    """Harmonics of `f0` with amplitudes 1 / h (and a 5 Hz vibrato), whole frames."""
    t = np.arange(int(seconds * RATE) // CONTRACT.hop_length * CONTRACT.hop_length) / RATE
    frequency = f0 * 2 ** (vibrato_cents / 1200 * np.sin(2 * np.pi * 5 * t))
    phase = 2 * np.pi * np.cumsum(frequency) / RATE
    return 0.1 * sum(np.sin(h * phase) / h for h in range(1, harmonics + 1)
                     if h * f0 < RATE / 2).astype(np.float32)


def frame_f0(f0: float, frames: int, vibrato_cents: float = 0.0) -> np.ndarray:
    centres = (np.arange(frames) + 0.5) * CONTRACT.hop_length / RATE
    return f0 * 2 ** (vibrato_cents / 1200 * np.sin(2 * np.pi * 5 * centres))


@pytest.mark.parametrize("f0, vibrato", [(98.0, 0.0), (311.13, 30.0), (1661.2, 0.0)])
def test_f0_is_read_off_the_log_mel_to_a_few_cents(f0, vibrato):
    features = log_mel(tone(f0, vibrato_cents=vibrato), CONTRACT)
    estimate, voiced = estimate_f0(nv.mel_envelope(features, CONTRACT), CONTRACT)
    inner = slice(2, -2)  # the reflect-padded ends
    truth = frame_f0(f0, features.shape[-1], vibrato)[inner]
    error = np.abs(1200 * np.log2(np.asarray(estimate)[inner] / truth))
    assert np.asarray(voiced)[inner].all()
    assert np.median(error) < 8.0 and error.max() < 25.0, error


def test_noise_is_unvoiced_and_the_octave_below_is_rejected():
    def estimate(audio):
        return estimate_f0(nv.mel_envelope(log_mel(audio, CONTRACT), CONTRACT), CONTRACT)

    noise = np.random.default_rng(0).normal(scale=0.1, size=RATE // 512 * 512)
    assert np.mean(np.asarray(estimate(noise.astype(np.float32))[1])) < 0.1
    # A faint component an octave below a strong note (as in a real flute recording) does not
    # pull the estimate down.
    f0, voiced = estimate(tone(880.0, harmonics=4) + 0.015 * tone(440.0, harmonics=1))
    assert np.mean(np.asarray(voiced)) > 0.9
    assert abs(1200 * np.log2(np.median(np.asarray(f0)) / 880.0)) < 10


def test_the_harmonic_source_puts_its_partials_at_multiples_of_f0():
    frames = 40
    f0 = jnp.full((1, frames), 311.13)
    voiced = jnp.arange(frames)[None] < 30  # the last 10 frames unvoiced
    source = np.asarray(harmonic_source(f0, voiced, CONTRACT))[0]
    assert source.shape == (frames * CONTRACT.hop_length,) and np.abs(source).max() < 1.001
    assert np.all(source[30 * CONTRACT.hop_length:] == 0)
    magnitude = np.abs(np.asarray(stft(source, CONTRACT)))[:, 10]
    peaks = [k for k in range(1, len(magnitude) - 1)
             if magnitude[k] >= magnitude[k - 1] and magnitude[k] > magnitude[k + 1]
             and magnitude[k] > 0.1 * magnitude.max()]
    harmonic = np.array(peaks) * BIN_HZ / 311.13
    assert len(peaks) == int(RATE / 2 / 311.13)  # every partial below Nyquist, no other
    np.testing.assert_allclose(harmonic, np.round(harmonic), atol=0.5 * BIN_HZ / 311.13)


def test_the_shaped_comb_keeps_the_energy_of_every_band_wider_than_f0():
    f0 = jnp.full((1, 12), 311.13)
    comb, phasor = nv.harmonic_comb(f0, jnp.ones((1, 12), bool), CONTRACT)
    partials = np.asarray(comb) > nv.COMB_FLOOR  # a phase is defined there
    np.testing.assert_allclose(np.abs(np.asarray(phasor))[partials], 1.0, atol=1e-3)
    shaped = np.asarray(nv.shaped_comb(1.0 * comb, f0, CONTRACT))[0, :, 6]
    basis = CONTRACT.mel_basis
    change_db = 10 * np.log10((basis @ np.exp(2 * shaped)) / basis.sum(axis=1))
    wide = (basis > 0).sum(axis=1) * BIN_HZ > 311.13
    assert wide.sum() >= 20 and np.abs(change_db[wide]).max() < 3.5
    assert 20 / np.log(10) * (shaped.max() - shaped.min()) > 40  # deep valleys between partials


def harmonic_model(seed: int = 0) -> nv.MusicVocoder:
    return nv.MusicVocoder(CONTRACT, nv.Architecture(dim=32, intermediate=64, layers=2,
                                                     harmonic=True), rngs=nnx.Rngs(seed))


def test_a_given_f0_is_used_and_an_estimated_one_matches_it_on_a_steady_note():
    audio = audio_lib.load_audio(VIOLIN, RATE, trim_db=60.0, max_seconds=1.0)
    features = log_mel(audio[: len(audio) // 512 * 512], CONTRACT)[None]
    model = harmonic_model()
    estimated, voiced = model.pitch(features)
    assert np.mean(np.asarray(voiced)) > 0.8
    f0 = float(np.median(np.asarray(estimated)[np.asarray(voiced)]))
    assert abs(1200 * np.log2(f0 / 880.0)) < 50  # the shipped violin is an A5
    given = model(features, f0=jnp.full(features.shape[:1] + features.shape[-1:], f0))
    off = model(features, f0=jnp.full(features.shape[:1] + features.shape[-1:], f0 * 1.06))
    unvoiced = model(features, f0=jnp.zeros(features.shape[:1] + features.shape[-1:]))
    assert np.all(np.isfinite(np.asarray(unvoiced)))
    assert float(jnp.abs(given - off).max()) > 1e-3  # the f0 reaches the audio
    with pytest.raises(VocoderError, match="not harmonic"):
        nv.MusicVocoder(CONTRACT, nv.Architecture(dim=32, intermediate=64, layers=2),
                        rngs=nnx.Rngs(0))(features, f0=jnp.zeros((1, features.shape[-1])))


def test_a_harmonic_weights_file_round_trips_and_another_architecture_is_refused(tmp_path):
    model = harmonic_model()
    nv.save_weights(model, tmp_path / "h.safetensors")
    loaded = nv.load_weights(tmp_path / "h.safetensors")
    assert loaded.architecture.harmonic
    features = log_mel(tone(440.0, 0.5), CONTRACT)[None]
    np.testing.assert_array_equal(np.asarray(model(features)), np.asarray(loaded(features)))
    # Weights of a harmonic network under a non-harmonic architecture's metadata: refused.
    settings = tiny_config()
    settings.model.harmonic = False
    settings.train.init_weights = str(tmp_path / "h.safetensors")
    with pytest.raises(ConfigError, match="architecture"):
        vt.new_trainee(vt.read_vocoder(settings))


def test_adversarial_losses_have_their_fixed_points():
    real = [(jnp.ones((2, 3)), [jnp.ones((2, 4))])]
    fake = [(jnp.zeros((2, 3)), [jnp.ones((2, 4))])]
    assert float(disc.discriminator_loss(real, fake)) == 0.0  # a perfect discriminator
    assert float(disc.generator_loss(real)) == 0.0  # a vocoder that fools it
    assert float(disc.generator_loss(fake)) == 1.0
    assert float(disc.feature_matching_loss(real, fake)) == 0.0
    assert float(disc.feature_matching_loss(
        real, [(jnp.zeros((2, 3)), [jnp.full((2, 4), 3.0)])])) == 2.0


def test_each_adversarial_term_trains_only_its_own_side():
    config = tiny_config()
    config.train.adversarial_weight = 1.0
    config.train.feature_matching_weight = 1.0
    config.model.harmonic = False  # the routing does not depend on it
    settings = vt.read_vocoder(config)
    trainee = vt.new_trainee(settings)
    assert isinstance(trainee.discriminators, disc.Discriminators)
    segments = jnp.asarray(np.stack([tone(311.13, 0.2), tone(523.25, 0.2)]))
    features = log_mel(segments, CONTRACT)
    terms = ("discriminator", "adversarial", "feature_matching")

    @nnx.jit  # the three gradients in one program: one compilation, not one per eager op
    def gradient_sizes(trainee):
        sizes = {}
        for term in terms:
            grads = nnx.grad(lambda t, term=term: vt.vocoder_losses(
                t.vocoder, segments, features, settings.train, t.discriminators)[term])(trainee)
            sizes[term] = {part: sum(jnp.sum(jnp.abs(g)) for g in jax.tree.leaves(grads[part]))
                           for part in ("vocoder", "discriminators")}
        return sizes

    sizes = gradient_sizes(trainee)
    assert float(sizes["discriminator"]["vocoder"]) == 0.0
    assert float(sizes["discriminator"]["discriminators"]) > 0.0
    for term in ("adversarial", "feature_matching"):
        assert float(sizes[term]["vocoder"]) > 0.0, term
        assert float(sizes[term]["discriminators"]) == 0.0, term


def test_feature_matching_without_discriminators_is_refused():
    config = tiny_config()
    config.train.feature_matching_weight = 1.0
    with pytest.raises(ConfigError, match="adversarial_weight"):
        vt.read_vocoder(config)
