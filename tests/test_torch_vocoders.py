"""The torch vocoders (BigVGAN, HiFi-GAN) through the DLPack bridge, on tiny random models saved
in their real on-disk formats. Skipped without the `vocoders` extra (see test_no_torch.py)."""

import functools
import json
import re
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vocoders
from tests.conftest import VIOLIN, tiny_config
from tnca_jax import cli, dsp
from tnca_jax import contract as C
from tnca_jax.audio import load_audio

BIGVGAN_PRESETS = [name for name in C.PRESETS if name.startswith("bigvgan_")]

torch = pytest.importorskip("torch")
pytest.importorskip("bigvgan")
from bigvgan.bigvgan import BigVGAN  # noqa: E402
from bigvgan.env import AttrDict  # noqa: E402
from bigvgan.meldataset import hann_window_cache, mel_basis_cache, mel_spectrogram  # noqa: E402

from vocoders import bigvgan, hifigan, torch_bridge  # noqa: E402
from vocoders.torch_bridge import to_jax, to_torch  # noqa: E402


def _weight_normed(module):
    """`module` with torch.nn.utils.weight_norm on every convolution, as jik876 trains it."""
    for layer in module.modules():
        if isinstance(layer, (torch.nn.Conv1d, torch.nn.ConvTranspose1d)):
            torch.nn.utils.weight_norm(layer)
    return module.eval()


@pytest.fixture(scope="module")
def tiny_hifigan(tmp_path_factory):
    """(directory, reference module): a 32-channel V1 HiFi-GAN in jik876's format, random."""
    torch.manual_seed(0)
    config = {**hifigan.V1, "upsample_initial_channel": 32}
    with warnings.catch_warnings():  # torch deprecates the weight_norm the checkpoints use
        warnings.simplefilter("ignore", FutureWarning)
        module = _weight_normed(hifigan.Generator(config))
    directory = tmp_path_factory.mktemp("LJ_tiny")
    torch.save({"generator": module.state_dict()}, directory / "generator_v1")
    (directory / "config.json").write_text(json.dumps(config))
    return directory, module


@pytest.fixture(scope="module")
def tiny_bigvgan(tmp_path_factory):
    """(directory, reference module): a 64-channel BigVGAN v2 22 kHz 80-band, random, saved as
    BigVGAN saves itself (config.json + bigvgan_generator.pt, weight norm kept)."""
    torch.manual_seed(0)
    config = bigvgan.v2_config(C.PRESETS["bigvgan_v2_22khz_80band"], upsample_initial_channel=64)
    with warnings.catch_warnings():  # BigVGAN's use of the deprecated weight_norm
        warnings.simplefilter("ignore", FutureWarning)
        module = BigVGAN(AttrDict(config)).eval()
    directory = tmp_path_factory.mktemp("bigvgan_tiny")
    torch.save({"generator": module.state_dict()}, directory / bigvgan.WEIGHTS_FILE)
    (directory / bigvgan.CONFIG_FILE).write_text(json.dumps(config))
    return directory, module


@functools.cache
def _violin(sample_rate: int) -> np.ndarray:
    return load_audio(VIOLIN, sample_rate, max_seconds=1.0)


def _log_mel(contract: C.MelContract, frames: int) -> jax.Array:
    """The contract's log-mel of `frames` frames of the violin, [1, n_mels, frames]."""
    audio = _violin(contract.sample_rate)[: frames * contract.hop_length]
    return dsp.log_mel(audio, contract)[None]


def _direct(module, log_mel: jax.Array) -> np.ndarray:
    with torch.inference_mode():
        return module(torch.from_numpy(np.array(log_mel)))[:, 0].numpy()


@pytest.mark.parametrize("name", BIGVGAN_PRESETS)
def test_log_mel_equals_bigvgan_mel_spectrogram(name, monkeypatch):
    """Our JAX log-mel is BigVGAN's own `mel_spectrogram`: to 1e-4 everywhere in float64 (its
    filter and window caches filled in float64 with the values it computes), and to 1e-4 in
    float32 within 60 dB of the peak (float32 FFT round-off reaches 1e-3 far below it)."""
    contract = C.PRESETS[name]
    audio = load_audio(VIOLIN, contract.sample_rate, max_seconds=0.5).astype(np.float64)
    args = dict(n_fft=contract.n_fft, num_mels=contract.n_mels,
                sampling_rate=contract.sample_rate, hop_size=contract.hop_length,
                win_size=contract.win_length, fmin=contract.fmin, fmax=contract.fmax)
    reference32 = mel_spectrogram(torch.from_numpy(audio[None]).float(), **args)[0].numpy()
    single = np.asarray(dsp.log_mel(audio.astype(np.float32), contract))
    assert single.shape == reference32.shape == (contract.n_mels,
                                                 len(audio) // contract.hop_length)
    loud = contract.to_db(reference32) > contract.to_db(reference32).max() - 60
    np.testing.assert_allclose(single[loud], reference32[loud], atol=1e-4)
    np.testing.assert_allclose(single, reference32, atol=5e-3)

    key = "_".join(str(args[k]) for k in ("n_fft", "num_mels", "sampling_rate", "hop_size",
                                          "win_size", "fmin", "fmax")) + "_cpu"
    assert key in mel_basis_cache  # the key BigVGAN used above: its float32 entries
    monkeypatch.setitem(mel_basis_cache, key, mel_basis_cache[key].double())
    monkeypatch.setitem(hann_window_cache, key, torch.hann_window(contract.win_length,
                                                                  dtype=torch.float64))
    reference64 = mel_spectrogram(torch.from_numpy(audio[None]), **args)[0].numpy()
    with jax.enable_x64(True):
        exact = np.asarray(dsp.log_mel(jnp.asarray(audio), contract))
    np.testing.assert_allclose(exact, reference64, atol=1e-4)
    assert reference64.max() > reference64.min() + 5  # a real signal, not floor only


def test_bigvgan_loads_from_a_local_directory(tiny_bigvgan):
    directory, reference = tiny_bigvgan
    vocoder = vocoders.load("bigvgan", str(directory))
    assert vocoder.name == "bigvgan" and vocoder.contract.name == directory.name
    assert vocoder.contract.first_difference(C.PRESETS["bigvgan_v2_22khz_80band"]) is None
    assert not any("weight_g" in key for key in vocoder.generator.state_dict())
    log_mel = jnp.concatenate([_log_mel(vocoder.contract, 12)] * 2)
    audio = vocoder(log_mel, contract=C.PRESETS["bigvgan_v2_22khz_80band"])
    assert isinstance(audio, jax.Array) and audio.shape == (2, 12 * 256)
    np.testing.assert_allclose(np.asarray(audio), _direct(reference, log_mel), atol=1e-5)
    assert 0 < float(jnp.abs(audio).max()) <= 1


def test_bigvgan_512x_renders_hop_512():
    contract = C.PRESETS["bigvgan_v2_44khz_128band_512x"]
    config = bigvgan.v2_config(contract, upsample_initial_channel=64)
    assert config["upsample_rates"] == [8, 4, 2, 2, 2, 2]
    vocoder = bigvgan.from_config(config, name="tiny_512x")
    assert vocoder.contract.first_difference(contract) is None
    assert vocoder(_log_mel(contract, 6)).shape == (1, 6 * 512)


@pytest.mark.skipif(torch.cuda.is_available(), reason="builds the kernel where CUDA is present")
def test_bigvgan_cuda_kernel_falls_back_without_cuda():
    config = bigvgan.v2_config(C.PRESETS["bigvgan_v2_24khz_100band"], upsample_initial_channel=64)
    with pytest.warns(UserWarning, match="use_cuda_kernel needs a CUDA device"):
        vocoder = bigvgan.from_config(config, name="tiny", use_cuda_kernel=True)
    assert not vocoder.generator.h["use_cuda_kernel"]


def test_hifigan_loads_jik876_checkpoints(tiny_hifigan):
    directory, reference = tiny_hifigan
    for path in (directory, directory / "generator_v1"):
        vocoder = vocoders.load("hifigan", str(path))
        assert vocoder.contract.first_difference(C.PRESETS["hifigan_v1_22khz"]) is None
        log_mel = _log_mel(vocoder.contract, 20)
        audio = vocoder(log_mel)
        assert audio.shape == (1, 20 * 256)
        # Weight norm folded at load: the same numbers as the weight-normed module.
        np.testing.assert_allclose(np.asarray(audio), _direct(reference, log_mel), atol=1e-5)


def test_bridge_is_zero_copy_on_cpu(tiny_hifigan):
    array = jnp.arange(12.0, dtype=jnp.float32).reshape(3, 4)
    tensor = to_torch(array)
    assert tensor.data_ptr() == array.unsafe_buffer_pointer()
    back = to_jax(tensor * 2, array)
    assert isinstance(back, jax.Array)
    np.testing.assert_array_equal(np.asarray(back), 2 * np.asarray(array))

    vocoder = vocoders.load("hifigan", str(tiny_hifigan[0]))
    seen = {}
    vocoder.generator.register_forward_pre_hook(
        lambda _, args: seen.update(mel=args[0].data_ptr()))
    vocoder.generator.register_forward_hook(
        lambda _, args, out: seen.update(audio=out.data_ptr()))
    log_mel = _log_mel(vocoder.contract, 8)
    audio = vocoder(log_mel)
    assert seen == {"mel": log_mel.unsafe_buffer_pointer(),
                    "audio": audio.unsafe_buffer_pointer()}


def test_bridge_host_copy_fallback_gives_the_same_audio(tiny_hifigan, monkeypatch):
    """The path of TPU and sharded arrays: copies through the host, same numbers."""
    vocoder = vocoders.load("hifigan", str(tiny_hifigan[0]))
    log_mel = _log_mel(vocoder.contract, 8)
    shared = np.asarray(vocoder(log_mel))
    monkeypatch.setattr(torch_bridge, "shares_memory", lambda _: False)
    assert to_torch(log_mel).data_ptr() != log_mel.unsafe_buffer_pointer()
    np.testing.assert_array_equal(np.asarray(vocoder(log_mel)), shared)


def test_power_db_mel_is_refused_not_vocoded(tiny_bigvgan):
    """The prototype's bug: power_to_db(ref=max) values in [-80, 0] handed to BigVGAN."""
    vocoder = vocoders.load("bigvgan", str(tiny_bigvgan[0]))
    prototype = C.PRESETS["prototype_power_db"]
    power_db = np.asarray(_log_mel(prototype, 20))
    power_db = np.maximum(power_db - power_db.max(), -80.0)
    with pytest.raises(C.ContractMismatchError, match="another convention"):
        vocoder(power_db)
    with pytest.raises(C.ContractMismatchError, match="prototype_power_db"):
        vocoder(power_db, contract=prototype)


def test_missing_files_are_clear_errors(tmp_path, tiny_hifigan):
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        vocoders.load("bigvgan", str(tmp_path))
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"bigvgan_generator\.pt"):
        vocoders.load("bigvgan", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="no generator checkpoint"):
        vocoders.load("hifigan", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="no BigVGAN directory"):
        vocoders.load("bigvgan", str(tmp_path / "absent"))
    lone = tmp_path / "lone" / "generator_v1"
    lone.parent.mkdir()
    lone.write_bytes((tiny_hifigan[0] / "generator_v1").read_bytes())
    with pytest.raises(FileNotFoundError, match=r"no config\.json beside it"):
        vocoders.load("hifigan", str(lone))
    with pytest.raises(ValueError, match="needs its weights"):
        vocoders.load("hifigan")


def test_hub_id_that_cannot_be_fetched_is_a_clear_error(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(FileNotFoundError, match="Hugging Face hub could not provide it"):
        vocoders.load("bigvgan", "nvidia/bigvgan_v2_24khz_100band_256x")


def test_train_ceiling_and_generate_follow_the_vocoder_contract(tmp_path, tiny_hifigan,
                                                                tiny_bigvgan):
    """--config.vocoder=hifigan trains on HiFi-GAN's contract; --mode=generate re-renders with
    it; --mode=ceiling measures another vocoder (BigVGAN) before training."""
    from tnca_jax.modes import train_and_evaluate
    from tnca_jax.settings import read_tnca

    config = tiny_config(iterations=2)
    config.vocoder, config.vocoder_path = "hifigan", str(tiny_hifigan[0])
    report = train_and_evaluate(read_tnca(config), tmp_path, progress=False)
    run = json.loads((tmp_path / "run.json").read_text())
    assert C.SpectralContract.from_dict(run["contract"]).first_difference(
        C.PRESETS["hifigan_v1_22khz"]) is None
    assert report.vocoder == "hifigan" and run["contract"]["n_mels"] == 80

    assert cli.run("generate", config, str(tmp_path)) == 0
    generated = json.loads((tmp_path / "generated_hifigan.json").read_text())
    assert generated["note"]["ceiling"] == report.note.ceiling.to_dict()  # same vocoder, note
    assert set(generated["note"]) >= {"generated", "ceiling", "static_baseline"}

    config.vocoder, config.vocoder_path = "bigvgan", str(tiny_bigvgan[0])
    assert cli.run("ceiling", config, str(tmp_path)) == 0
    ceiling = json.loads((tmp_path / "ceiling_bigvgan.json").read_text())
    assert ceiling["contract"]["fmax"] is None and ceiling["vocoder"] == "bigvgan"
    assert ceiling["notes"][0]["ceiling"]["mel_l1_db"] > 0  # a random model: measured, not good
    assert (tmp_path / "ceiling_bigvgan.wav").stat().st_size > 0


@pytest.mark.parametrize("damage,message", [
    (lambda data: data[: len(data) // 2], "is not a readable torch checkpoint (truncated, corrupt"),
    (lambda data: b"", "is empty (0 bytes): copy or download the checkpoint again"),
], ids=["truncated", "empty"])
def test_a_damaged_vocoder_checkpoint_is_one_clear_line(damage, message, tmp_path, tiny_bigvgan,
                                                        tiny_hifigan, capsys):
    for name, source, weights in (("bigvgan", tiny_bigvgan[0], bigvgan.WEIGHTS_FILE),
                                  ("hifigan", tiny_hifigan[0], "generator_v1")):
        directory = tmp_path / name
        directory.mkdir()
        (directory / "config.json").write_text((source / "config.json").read_text())
        (directory / weights).write_bytes(damage((source / weights).read_bytes()))
        with pytest.raises(ValueError, match=re.escape(message)):
            vocoders.load(name, str(directory))
        config = tiny_config()
        config.vocoder, config.vocoder_path = name, str(directory)
        assert cli.run("ceiling", config, str(tmp_path / "run")) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0] and "weights_only" not in err[0], err
