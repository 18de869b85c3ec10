import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.conftest import VIOLIN
from tnca_jax import losses
from tnca_jax.audio import load_audio
from tnca_jax.inverse import Inverse, load_inverse
from tnca_jax.representations import get_representation


@pytest.fixture(scope="module")
def violin():
    audio = load_audio(VIOLIN, 22050, max_seconds=1.0)
    return jnp.asarray(audio[: len(audio) // 512 * 512])  # Whole frames of hop 256 and 512.


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
    for kind, contract in (("mag_if", "stft_22khz_1024"), ("stft", "stft_22khz_1024"),
                           ("mel", "griffinlim_22khz_128band")):
        rep = get_representation(kind, contract)
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
    with pytest.raises(ValueError, match="representation='wavelet' is unknown"):
        get_representation("wavelet", "bigvgan_v2_22khz_80band")
    with pytest.raises(ValueError, match="natural log of the magnitude"):
        get_representation("stft", "griffinlim_22khz_128band")


def test_each_inverse_renders_the_true_features_close_to_the_recording(violin):
    """The Inverse a run renders with (`load_inverse`): the vocoder for mel, Griffin-Lim for
    stft, the exact inverse STFT for mag_if (the ceiling of each representation)."""
    import vocoders

    noise_distance = float(losses.mrstft_distance(
        violin, 0.05 * jax.random.normal(jax.random.key(1), violin.shape), 22050))
    for kind, contract, bound in (("mel", "griffinlim_22khz_128band", 2.0),
                                  ("stft", "stft_22khz_1024", 0.5),
                                  ("mag_if", "stft_22khz_1024", 0.01)):
        inverse = load_inverse(kind, contract=contract)
        rep = inverse.representation
        assert rep == get_representation(kind, contract)
        audio = inverse(rep.features(violin)[None])[0]
        distance = float(losses.mrstft_distance(violin, audio, 22050))
        assert distance < bound < noise_distance, kind
    with pytest.raises(ValueError, match="renders itself"):
        Inverse(get_representation("mag_if", "stft_22khz_1024"), vocoders.load("griffinlim"))


@pytest.mark.parametrize(("kind", "inverse_name", "ceiling_bound"),
                         [("stft", "griffinlim", 0.5), ("mag_if", "istft", 0.01)])
def test_a_linear_run_trains_with_the_audio_loss_and_renders_itself(tmp_path, kind,
                                                                     inverse_name, ceiling_bound):
    """The whole job on a linear-frequency config: the audio loss is finite, generate() picks
    the representation's own inverse and refuses a mel vocoder, run.json records a linear
    contract (no mel fields), the metrics name the representation and compare with mel runs
    under the default mel contract."""
    import soundfile as sf

    import tnca_jax
    from tests.conftest import tiny_config
    from tnca_jax import metrics
    from tnca_jax.contract import DEFAULT_CONTRACT, get_contract
    from tnca_jax.modes import train_and_evaluate
    from tnca_jax.runs import load_run
    from tnca_jax.settings import read_tnca
    from tnca_jax.workdir import Workdir

    config = tiny_config(iterations=2)
    config.representation, config.contract = kind, "stft_22khz_1024"
    config.train.audio_weight = 0.05
    config.train.waveform_weight = 0.1 if kind == "mag_if" else 0.0
    config.data.max_seconds = config.data.min_seconds = 0.3
    report = train_and_evaluate(read_tnca(config), tmp_path, progress=False)
    measured = report.note
    assert report.representation == kind and report.vocoder == inverse_name
    assert measured.ceiling.mrstft < ceiling_bound  # the inverse on the true features
    assert measured.generated.mrstft > measured.ceiling.mrstft
    assert ("snr_db" in measured.generated.notes) == (kind == "stft")  # phase grown?
    run = load_run(tmp_path)
    assert run.contract.kind == "linear" and "n_mels" not in run.contract.to_dict()
    assert all(np.isfinite(record["loss"]) for record in Workdir(tmp_path).read_log())
    note = tnca_jax.generate(tmp_path, growth_steps=4, num_stages=2)
    values = 2 if kind == "mag_if" else 1
    assert note.features.shape == (values, 513, note.spectrogram.shape[1])
    assert note.audio.shape == (note.spectrogram.shape[1] * 256,)
    with pytest.raises(ValueError, match="applies to mel only"):
        tnca_jax.generate(tmp_path, growth_steps=4, vocoder="bigvgan", vocoder_path="x")
    # Its mel metrics are measured under the default mel contract, as a mel run's are.
    recording, generated = (sf.read(tmp_path / name, dtype="float32")[0]
                            for name in ("target.wav", "generated.wav"))
    assert measured.generated.mel_l1_db == pytest.approx(
        metrics.mel_l1_db(recording, generated, get_contract(DEFAULT_CONTRACT)), rel=0.02)


def test_the_audio_loss_train_step_jits_on_cpu_without_torch():
    """The train step with the audio loss for every representation: one jit on CPU, finite
    loss, torch never imported."""
    import subprocess
    import sys
    import textwrap

    from tests.conftest import ROOT

    script = textwrap.dedent("""
        import sys
        import chex
        import jax
        from tests.conftest import tiny_config
        from tnca_jax import tnca_training, training
        from tnca_jax.modes import load_notes, new_inverse
        from tnca_jax.settings import read_tnca

        def counted(step, mesh, **kw):  # chex raises on a second trace
            return training.jit_train_step(chex.assert_max_traces(step, n=1), mesh, **kw)

        tnca_training.jit_train_step = counted
        for kind, contract in (("mel", "griffinlim_22khz_128band"),
                               ("stft", "stft_22khz_1024"), ("mag_if", "stft_22khz_1024")):
            chex.clear_trace_counter()  # each representation's step traced once
            config = tiny_config()
            config.representation, config.contract = kind, contract
            config.data.max_seconds = config.data.min_seconds = 0.3
            config.train.audio_weight = 0.05
            settings = read_tnca(config)
            notes = load_notes(settings, new_inverse(settings))
            targets = tnca_training.Targets.create(notes, with_audio=True)
            mesh = training.data_mesh({})
            graphdefs, state, pool = tnca_training.create_train_state(
                settings, notes, targets, mesh=mesh)
            step = tnca_training.make_train_step(graphdefs, settings, targets,
                                                 notes.representation, mesh)
            for _ in range(2):
                state, pool, metrics = step(state, pool)
            print(kind, jax.devices()[0].platform, bool(metrics["finite"]))
        print("torch" in sys.modules)
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:4] == ["mel cpu True", "stft cpu True", "mag_if cpu True",
                                           "False"]


def test_representation_config_errors_are_named():
    from tests.conftest import tiny_config
    from tnca_jax.errors import ConfigError
    from tnca_jax.settings import read_tnca

    config = tiny_config()
    config.representation = "stft"
    with pytest.raises(ConfigError, match=r"natural log of the magnitude.*stft_22khz_1024"):
        read_tnca(config)
    config = tiny_config()
    config.train.waveform_weight = 1.0
    with pytest.raises(ConfigError, match=r"waveform_weight=1\.0 needs a representation that "
                                          "grows the phase"):
        read_tnca(config)
    config = tiny_config()
    config.representation = "wavelet"
    with pytest.raises(ConfigError, match="representation='wavelet' must be one of"):
        read_tnca(config)
