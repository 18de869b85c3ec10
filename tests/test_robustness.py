"""Robust by default: odd recordings, bad configs, unwritable workdirs, NaN steps, determinism.

Failing runs go through `cli.run` (what main.py calls) against the session's trained workdir,
whose files must come out byte for byte as they went in.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import tracemalloc
import warnings
from pathlib import Path

import jax
import ml_collections
import numpy as np
import pytest
import soundfile as sf
from flax import nnx

import tnca_jax
import vocoders
from tests.conftest import ROOT, VIOLIN, tiny_config, train_note
from tnca_jax import ContractMismatchError, cli
from tnca_jax.audio import load_audio
from tnca_jax.contract import MelContract
from tnca_jax.errors import WorkdirWriteError
from tnca_jax.settings import read_tnca
from tnca_jax.training import NonFiniteError
from tnca_jax.workdir import Workdir

RATE = 22050


def file_hashes(directory: Path) -> dict[str, str]:
    return {str(path.relative_to(directory)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(directory.rglob("*")) if path.is_file()}


def tone(rate: int, seconds: float = 1.0, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(round(rate * seconds)) / rate
    return (amplitude * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32)


def dominant_hz(audio: np.ndarray, rate: int = RATE) -> float:
    return float(np.argmax(np.abs(np.fft.rfft(audio))) * rate / len(audio))


@contextlib.contextmanager
def unprivileged():
    """Run the body without root's power to ignore file permissions (as `nobody` if root)."""
    if os.geteuid() != 0:
        yield
        return
    os.seteuid(65534)
    try:
        yield
    finally:
        os.seteuid(0)


@pytest.fixture
def shared_tmp():
    """A temporary directory that `nobody` can enter (pytest's tmp_path is root-only)."""
    path = Path(tempfile.mkdtemp())
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


# ------------------------------------------------------------------ recordings that work
@pytest.mark.parametrize("rate,subtype,channels", [
    (RATE, "PCM_U8", 1), (RATE, "PCM_24", 1), (RATE, "PCM_32", 1), (RATE, "FLOAT", 1),
    (RATE, "DOUBLE", 1), (8000, "PCM_16", 1), (96000, "PCM_24", 2), (44100, "PCM_16", 6)])
def test_any_depth_rate_and_channel_count_loads_as_the_same_note(tmp_path, rate, subtype,
                                                                 channels):
    path = tmp_path / "note.wav"
    sf.write(path, np.repeat(tone(rate)[:, None], channels, axis=1), rate, subtype=subtype)
    audio = load_audio(path, RATE, trim_db=None)
    assert audio.dtype == np.float32 and abs(len(audio) - RATE) <= 1
    assert dominant_hz(audio) == pytest.approx(440.0, abs=1.0)
    quantisation = 1 / 64 if subtype == "PCM_U8" else 1e-3
    assert np.max(np.abs(audio)) == pytest.approx(0.5, abs=quantisation)


def test_clipped_audio_is_kept_with_a_warning(tmp_path, caplog):
    path = tmp_path / "clipped.wav"
    sf.write(path, np.clip(tone(RATE, amplitude=2.0), -1, 1), RATE, subtype="PCM_16")
    with caplog.at_level(logging.WARNING, logger="tnca_jax.audio"):
        audio = load_audio(path, RATE, trim_db=None)
    assert "is clipped (66." in caplog.text  # a sine at twice full scale: 2/3 of it clipped
    assert len(audio) == RATE and np.max(np.abs(audio)) > 0.999


def test_a_dc_offset_is_removed_with_a_warning(tmp_path, caplog):
    path = tmp_path / "offset.wav"
    sf.write(path, 0.3 + tone(RATE, amplitude=0.3), RATE, subtype="FLOAT")
    with caplog.at_level(logging.WARNING, logger="tnca_jax.audio"):
        audio = load_audio(path, RATE, trim_db=None)
    assert "has a DC offset of 0.3 (-10 dBFS): removed" in caplog.text
    assert abs(float(np.mean(audio))) < 1e-6
    assert np.max(np.abs(audio)) == pytest.approx(0.3, abs=1e-3)


def test_float_audio_above_full_scale_is_scaled_to_peak_one(tmp_path, caplog):
    path = tmp_path / "hot.wav"
    sf.write(path, tone(RATE, amplitude=4.0), RATE, subtype="FLOAT")
    with caplog.at_level(logging.WARNING, logger="tnca_jax.audio"):
        audio = load_audio(path, RATE, trim_db=None)
    assert "peaks at 4.00" in caplog.text
    assert np.max(np.abs(audio)) == pytest.approx(1.0, abs=1e-4)


def test_a_file_far_longer_than_the_cap_is_decoded_only_where_used(tmp_path):
    rate = 8000
    twenty_minutes = np.zeros(20 * 60 * rate, np.float32)
    twenty_minutes[300 * rate: 302 * rate] = tone(rate, seconds=2.0)  # a note at 5 minutes
    path = tmp_path / "long.wav"
    sf.write(path, twenty_minutes, rate, subtype="PCM_16")
    sf.write(tmp_path / "short.wav", tone(rate), rate)
    load_audio(tmp_path / "short.wav", RATE)  # lazy imports allocate too: not measured
    tracemalloc.start()
    try:
        audio = load_audio(path, RATE, max_seconds=1.0)
        peak_bytes = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert 0.75 * RATE <= len(audio) <= RATE  # cut quietly within the cap's last quarter
    assert dominant_hz(audio) == pytest.approx(440.0, abs=2.0)
    assert peak_bytes < twenty_minutes.nbytes / 8  # decoding it all would take 38 MB


def test_a_long_recording_is_cut_at_a_quiet_point_and_faded_out(tmp_path):
    """A 10 s note with a 50 ms gap at 3.4 s, capped at 4 s: cut in the gap, the last 100 ms
    faded to silence, and a sentence that says what was kept."""
    from tnca_jax.audio import load_recording

    note = tone(RATE, seconds=10.0)
    note[round(3.40 * RATE):round(3.45 * RATE)] = 0.0
    sf.write(tmp_path / "long.wav", note, RATE, subtype="PCM_16")
    recording = load_recording(tmp_path / "long.wav", RATE, trim_db=None, max_seconds=4.0)
    kept = len(recording.audio) / RATE
    assert 3.40 < kept <= 3.45
    assert np.max(np.abs(recording.audio[-10:])) < 1e-3  # faded out: no click
    assert np.max(np.abs(recording.audio[: round(3.2 * RATE)])) > 0.49  # the rest untouched
    assert recording.cut == (f"{tmp_path / 'long.wav'} has more than 6 s of sound; kept the "
                             f"first {kept:.2f} s, cut at its quietest point in 3.00-4.00 s with "
                             "a 100 ms fade-out (--config.data.max_seconds sets the cap)")
    whole = load_recording(tmp_path / "long.wav", RATE, trim_db=None, max_seconds=None)
    assert whole.cut is None and len(whole.audio) == len(note)


# ------------------------------------------------------------------ bad input at the CLI
def _write(data: np.ndarray, subtype: str = "FLOAT"):
    def make(path: Path) -> Path:
        sf.write(path, np.asarray(data, np.float32), RATE, subtype=subtype)
        return path
    return make


def _truncated(path: Path) -> Path:
    sf.write(path, tone(RATE), RATE, subtype="PCM_16")
    path.write_bytes(path.read_bytes()[:30000])
    return path


def _cut_after_header(path: Path) -> Path:
    sf.write(path, tone(RATE), RATE, subtype="PCM_16")
    path.write_bytes(path.read_bytes()[:44])
    return path


def _text(path: Path) -> Path:
    path.write_text("not audio\n" * 100)
    return path


def _directory(path: Path) -> Path:
    path.mkdir()
    return path


BAD_AUDIO = {
    "missing": (lambda path: path, "audio file not found"),
    "directory": (_directory, "is a directory, not a file"),
    "not audio": (_text, "Format not recognised"),
    "truncated": (_truncated, "is truncated: it holds 68% of the audio"),
    "cut after the header": (_cut_after_header, "is truncated: it holds 0% of the audio"),
    "empty": (_write(np.zeros(0)), "contains no samples"),
    "all zero": (_write(np.zeros(RATE)), "is silent (peak -240 dBFS)"),
    "near silent": (_write(tone(RATE, amplitude=1e-4)), "is silent (peak -80 dBFS)"),
    "stereo that cancels": (_write(np.stack([tone(RATE), -tone(RATE)], axis=1), "PCM_16"),
                            "is silent after mixing its 2 channels to mono"),
    "shorter than a frame": (_write(tone(RATE, seconds=0.01)),
                             "two analysis frames of contract 'griffinlim_22khz_128band' need"),
    "dc offset only": (_write(np.full(RATE, 0.25)), "holds only a constant (DC) offset of 0.25, "
                       "no sound"),
    "a click then silence": (_write(np.r_[0.9, np.zeros(2 * RATE)]), "holds no sustained sound: "
                             "only 23 ms of it lie within 40 dB of its loudest moment"),
    "nan": (_write(np.r_[tone(RATE), np.nan]), "contains NaN or Inf samples"),
    "inf": (_write(np.r_[tone(RATE), -np.inf]), "contains NaN or Inf samples"),
}


def run_cli(config: ml_collections.ConfigDict, workdir: Path, capsys) -> tuple[int, list[str]]:
    code = cli.run("train", config, str(workdir))
    return code, capsys.readouterr().err.strip().splitlines()


def assert_refused(config, trained_workdir: Path, fresh: Path | None, capsys,
                   message: str) -> None:
    """Exit 2 with one `error:` line containing `message`; the trained workdir is untouched,
    a new one (`fresh`) is never created."""
    before = file_hashes(trained_workdir)
    for workdir in [trained_workdir] + ([fresh] if fresh else []):
        code, err = run_cli(config, workdir, capsys)
        assert code == 2 and len(err) == 1 and err[0].startswith("error: "), err
        assert message in err[0]
    assert file_hashes(trained_workdir) == before
    assert fresh is None or not fresh.exists()


@pytest.mark.parametrize("case", sorted(BAD_AUDIO))
def test_bad_audio_is_refused_before_the_workdir_is_touched(case, tmp_path, trained_workdir,
                                                            capsys):
    make, message = BAD_AUDIO[case]
    config = tiny_config()
    config.data.min_seconds = 0.0
    config.data.audio_path = str(make(tmp_path / "input.wav"))
    assert_refused(config, trained_workdir, tmp_path / "new_run", capsys, message)


def test_unreadable_audio_is_refused(shared_tmp, trained_workdir, capsys):
    audio = shared_tmp / "locked.wav"
    shutil.copy(VIOLIN, audio)
    audio.chmod(0)
    config = tiny_config()
    config.data.audio_path = str(audio)
    with unprivileged():
        code, err = run_cli(config, shared_tmp / "run", capsys)
    assert code == 2 and err == [f"error: cannot read {audio} (Permission denied); fix its "
                                 "permissions or copy it somewhere readable"]
    assert not (shared_tmp / "run").exists()


def _set(**values):
    """A config edit: dotted keys (double underscores) to values."""
    def edit(config: ml_collections.ConfigDict) -> None:
        for key, value in values.items():
            *parents, leaf = key.split("__")
            node = config
            for parent in parents:
                node = node[parent]
            node[leaf] = value
    return edit


def _custom_contract(**fields):
    def edit(config: ml_collections.ConfigDict) -> None:
        config.unlock()
        del config["contract"]
        config.contract = ml_collections.ConfigDict(
            {"name": "mine", "sample_rate": RATE, "n_fft": 1024, "hop_length": 256,
             "win_length": 1024, **fields})
    return edit


BAD_CONFIGS = {
    "zero iterations": (_set(train__iterations=0), "--config.train.iterations=0 must be at "
                        "least 1"),
    "negative iterations": (_set(train__iterations=-5), "--config.train.iterations=-5"),
    "zero min steps": (_set(train__min_growth_steps=0),
                       "--config.train.min_growth_steps=0 must be at least"),
    "min above max steps": (_set(train__min_growth_steps=9, train__max_growth_steps=6),
                            "--config.train.min_growth_steps=9 exceeds "
                            "--config.train.max_growth_steps=6"),
    "zero growth steps": (_set(generate__growth_steps=0),
                          "--config.generate.growth_steps=0 must be at least"),
    "batch above pool": (_set(train__batch_size=8), "--config.train.batch_size=8 must be "
                         "between 1 and --config.train.pool_size=4"),
    "negative learning rate": (_set(train__learning_rate=-1e-3),
                               "--config.train.learning_rate=-0.001 must be a positive"),
    "zero checkpoint interval": (_set(train__checkpoint_every=0),
                                 "--config.train.checkpoint_every=0"),
    "warm-up as long as the run": (_set(train__warmup_iterations=3),
                                   "--config.train.warmup_iterations=3 must be at least 0 and "
                                   "below --config.train.iterations=3"),
    "zero memory budget": (_set(train__memory_budget_gb=0.0),
                           "--config.train.memory_budget_gb=0.0 must be positive"),
    "too few channels": (_set(model__channels=2), "--config.model.channels=2 must be at least "
                         "4 (value, alpha, clock and a hidden channel)"),
    "no audio path": (_set(data__audio_path=""),
                      "--config.data.audio_path='' must name a recording"),
    "an absurd note length": (_set(data__max_seconds=1e5), "--config.data.max_seconds=100000.0 "
                              "must be positive and at most 60"),
    "held-out globs for one note": (_set(job="instruments"), "--config.eval is missing"),
    "unknown contract": (_set(contract="bigvgan_v3"), "unknown contract 'bigvgan_v3'; choose "
                         "one of"),
    "n_mels too many for n_fft": (_custom_contract(n_mels=256, n_fft=512, win_length=512),
                                  "39 of 256 mel filters are empty"),
    "fmax above nyquist": (_custom_contract(fmax=16000.0), "fmax=16000; lower fmax"),
    "unknown contract field": (_custom_contract(bands=80), "unknown fields bands"),
    "unknown vocoder": (_set(vocoder="wavenet"), "unknown vocoder 'wavenet'; choose one of"),
    "weights for a weight-free vocoder": (_set(vocoder_path="/x/bigvgan"),
                                          "griffinlim has no weights: drop vocoder_path"),
    "learned vocoder without weights": (_set(vocoder="bigvgan"), "bigvgan needs its weights: "
                                        "set vocoder_path (--config.vocoder_path)"),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_config_is_refused_before_the_workdir_is_touched(case, tmp_path, trained_workdir,
                                                             capsys):
    edit, message = BAD_CONFIGS[case]
    config = tiny_config()
    edit(config)
    assert_refused(config, trained_workdir, tmp_path / "new_run", capsys, message)


def _another_recording(config: ml_collections.ConfigDict) -> None:
    config.data.audio_path = str(ROOT / "data" / "iowa_mis" / "violin" /
                                 "Violin.arco.ff.sulA.B4.stereo.flac")


@pytest.mark.parametrize("edit,message", [
    (_set(contract="bigvgan_v2_22khz_80band"), "holds a run with another contract (n_fft "
     "differs)"),
    (_set(data__max_seconds=1.0), "holds a run with another training notes (1 there, 1 here; "
     "their audio differs)"),
    (_another_recording, "holds a run with another training notes (1 there, 1 here; their "
     "audio differs)"),
    (_set(model__hidden=24), "holds a run with another model.hidden (16 there, 24 here)"),
    (_set(seed=3), "holds a run with another seed (0 there, 3 here)"),
    (_set(job="instruments"), "--config.eval is missing"),
], ids=["contract", "recording cut", "another recording", "model", "seed", "job"])
def test_a_trained_workdir_refuses_a_config_it_cannot_resume(edit, message, trained_workdir,
                                                             capsys):
    config = tiny_config()
    edit(config)
    assert_refused(config, trained_workdir, None, capsys, message)


def test_a_custom_contract_in_the_config_is_built_from_its_fields():
    config = tiny_config()
    _custom_contract(n_mels=64)(config)
    assert read_tnca(config).spectral_contract == MelContract(
        name="mine", sample_rate=RATE, n_fft=1024, hop_length=256, win_length=1024, n_mels=64)


# ------------------------------------------------------------------ learned vocoders
@pytest.fixture(scope="module")
def tiny_bigvgan(tmp_path_factory) -> Path:
    """A random 64-channel BigVGAN v2 (22 kHz, 80 bands) saved as BigVGAN saves itself."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("bigvgan")
    from bigvgan.bigvgan import BigVGAN
    from bigvgan.env import AttrDict

    from vocoders import bigvgan

    config = bigvgan.v2_config(tnca_jax.PRESETS["bigvgan_v2_22khz_80band"],
                               upsample_initial_channel=64)
    directory = tmp_path_factory.mktemp("bigvgan_tiny")
    with warnings.catch_warnings():  # BigVGAN's own use of the deprecated weight_norm
        warnings.simplefilter("ignore", FutureWarning)
        model = BigVGAN(AttrDict(config))
    torch.save({"generator": model.state_dict()}, directory / bigvgan.WEIGHTS_FILE)
    (directory / bigvgan.CONFIG_FILE).write_text(json.dumps(config))
    return directory


def test_a_vocoder_directory_without_its_files_is_refused(tmp_path, trained_workdir, capsys):
    pytest.importorskip("bigvgan")
    empty = tmp_path / "bigvgan"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=r"has no config\.json"):
        vocoders.load("bigvgan", str(empty))
    config = tiny_config()
    config.vocoder, config.vocoder_path = "bigvgan", str(empty)
    assert_refused(config, trained_workdir, tmp_path / "new_run", capsys,
                   f"BigVGAN directory {empty} has no config.json")


def test_a_vocoder_under_another_contract_than_the_workdir_is_refused(tiny_bigvgan, tmp_path,
                                                                      trained_workdir, capsys):
    before = file_hashes(trained_workdir)
    with pytest.raises(ContractMismatchError, match="the trained TNCA's spectrogram is under "
                       "contract 'griffinlim_22khz_128band' but 'bigvgan_tiny0' is required"):
        tnca_jax.generate(trained_workdir, vocoder="bigvgan", vocoder_path=str(tiny_bigvgan))
    assert file_hashes(trained_workdir) == before
    config = tiny_config()
    config.vocoder, config.vocoder_path = "bigvgan", str(tiny_bigvgan)
    for mode, message in (("train", "holds a run with another contract (n_fft differs)"),
                          ("generate", "under contract 'griffinlim_22khz_128band'")):
        code = cli.run(mode, config, str(trained_workdir))
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and message in err[0], err
    assert file_hashes(trained_workdir) == before


# ------------------------------------------------------------------ generate() and vocoders
def _damaged_run_file(workdir: Path) -> Path:
    (workdir / "run.json").write_text('{"config": ')
    return workdir


def _no_checkpoint(workdir: Path) -> Path:
    shutil.rmtree(workdir / "checkpoints")
    return workdir


@pytest.mark.parametrize("where,kwargs,error,message", [
    (lambda w, t: t / "nowhere", {}, FileNotFoundError, "neither a tnca_jax workdir"),
    (lambda w, t: w / "target.wav", {}, FileNotFoundError, "neither a tnca_jax workdir"),
    (lambda w, t: w / "checkpoints" / "99", {}, FileNotFoundError, "has no checkpoint 99; it has"),
    (lambda w, t: _damaged_run_file(shutil.copytree(w, t / "copy")), {}, ValueError,
     "run.json is damaged (Expecting value"),
    (lambda w, t: _no_checkpoint(shutil.copytree(w, t / "copy")), {}, FileNotFoundError,
     "has no checkpoint yet: train first"),
    (lambda w, t: w, {"growth_steps": 0}, ValueError, "growth_steps=0 must be at least 1"),
    (lambda w, t: w, {"growth_steps": -3}, ValueError, "growth_steps=-3 must be at least 1"),
    (lambda w, t: w, {"growth_steps": 2.5}, ValueError, "growth_steps=2.5 must be a whole"),
    (lambda w, t: w, {"num_stages": 0}, ValueError, "num_stages=0 must be at least 1"),
    (lambda w, t: w, {"vocoder": "wavenet"}, ValueError, "unknown vocoder 'wavenet'"),
    (lambda w, t: w, {"vocoder_path": str(ROOT)}, ValueError, "griffinlim has no weights"),
], ids=["missing", "a file", "missing step", "damaged run.json", "no checkpoint", "zero steps",
        "negative steps", "fractional steps", "zero stages", "unknown vocoder", "vocoder path"])
def test_generate_refuses_bad_input_and_writes_nothing(where, kwargs, error, message,
                                                       trained_workdir, tmp_path):
    before = file_hashes(trained_workdir)
    with pytest.raises(error, match=message.replace("(", r"\(").replace(".", r"\.")):
        tnca_jax.generate(where(trained_workdir, tmp_path), **kwargs)
    assert file_hashes(trained_workdir) == before


@pytest.mark.parametrize("name,path,message", [
    ("griffinlim", "x", "griffinlim has no weights"),
    ("hifigan_v9", None, "unknown vocoder 'hifigan_v9'"),
])
def test_vocoders_load_refuses_bad_names_and_paths(name, path, message):
    with pytest.raises(ValueError, match=message):
        vocoders.load(name, path)


# ------------------------------------------------------------------ unwritable workdirs
def test_read_only_workdir_is_refused_before_anything_is_written(shared_tmp, capsys):
    read_only = shared_tmp / "read_only"
    read_only.mkdir()
    read_only.chmod(0o555)
    with unprivileged():
        code, err = run_cli(tiny_config(), read_only, capsys)
    assert code == 2 and err == [f"error: cannot write to workdir {read_only} (Permission "
                                 "denied); choose a writable --workdir"]
    assert list(read_only.iterdir()) == []


def test_workdir_under_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    code, err = run_cli(tiny_config(), tmp_path / "file" / "run", capsys)
    assert code == 2 and err == [f"error: cannot write to workdir {tmp_path / 'file' / 'run'} "
                                 "(Not a directory); choose a writable --workdir"]


# orbax's writer thread of the failed save may outlive its event loop and say so when collected.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_failed_checkpoint_write_stops_the_run_and_keeps_the_last_checkpoint(tmp_path):
    """Disk full, simulated by a file-size limit: the checkpoint write fails in the kernel."""
    config = tiny_config(iterations=6)
    config.train.checkpoint_every = 1
    train_note(config, tmp_path, stop_at=2)
    checkpoint_two = file_hashes(tmp_path / "checkpoints" / "2")
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, limits[1]))  # the pool needs 800 kB
    try:
        with pytest.raises(WorkdirWriteError) as failure:
            train_note(config, tmp_path)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, previous_handler)
    assert str(failure.value) == (
        f"writing {tmp_path / 'checkpoints'} failed (File too large); the last good checkpoint "
        f"is at iteration 2, a rerun resumes from it: free disk space or make {tmp_path} "
        "writable, then rerun the same command")
    assert Workdir(tmp_path).checkpoints().latest() == 2
    assert file_hashes(tmp_path / "checkpoints" / "2") == checkpoint_two
    # With space again, the same call resumes and finishes.
    train_note(config, tmp_path)
    assert Workdir(tmp_path).checkpoints().latest() == 6
    assert [json.loads(line)["iteration"] for line in
            (tmp_path / "train_metrics.jsonl").read_text().splitlines()] == [1, 2, 3, 4, 5, 6]


# ------------------------------------------------------------------ training faults
@pytest.mark.filterwarnings("ignore:overflow encountered in cast")  # 1e39 as float32, on purpose
def test_a_non_finite_step_is_rejected_named_and_never_checkpointed(tmp_path):
    config = tiny_config(iterations=12)
    config.train.log_every = config.train.checkpoint_every = 5
    train_note(config, tmp_path, stop_at=5)
    checkpoint_five = file_hashes(tmp_path / "checkpoints" / "5")
    config.train.learning_rate = 1e39  # inf in float32: finite gradients, infinite updates
    with pytest.raises(NonFiniteError, match=r"non-finite loss, gradient or update at "
                       r"iteration 6 \(the iteration was rejected, 3 retries at lower rates "
                       r"too\); the last good checkpoint is at iteration 5"):
        train_note(config, tmp_path)
    assert Workdir(tmp_path).checkpoints().latest() == 5
    assert file_hashes(tmp_path / "checkpoints" / "5") == checkpoint_five
    assert [record["iteration"] for record in Workdir(tmp_path).read_log()] == [5]
    # Retried from checkpoint 5 at half, a quarter and an eighth of the rate before giving up.
    assert [(r["iteration"], r["rejected_iteration"], r["learning_rate_scale"])
            for r in Workdir(tmp_path).read_retries()] == [(5, 6, 0.5), (5, 6, 0.25),
                                                             (5, 6, 0.125)]
    config.train.learning_rate = 1e-3
    model = train_note(config, tmp_path)
    params = jax.tree.leaves(nnx.state(model, nnx.Param))
    assert all(np.all(np.isfinite(p)) for p in params)


def test_resume_drops_a_log_line_cut_by_a_kill(tmp_path):
    config = tiny_config(iterations=4)
    log = tmp_path / "train_metrics.jsonl"
    log.write_text('{"iteration": 1, "loss": 0.5}\n{"iteration": 2, "lo')  # killed: no checkpoint
    train_note(config, tmp_path, stop_at=2)
    with log.open("a") as file:
        file.write('{"iteration": 3, "loss": 0.')  # killed mid-line after checkpoint 2
    train_note(config, tmp_path)
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["iteration"] for r in records] == [1, 2, 3, 4] and "grid_l1_db" in records[0]


# ------------------------------------------------------------------ determinism
def test_same_config_and_seed_give_identical_generated_wav_bytes(trained_workdir, tmp_path):
    from tnca_jax.modes import train_and_evaluate

    train_and_evaluate(read_tnca(tiny_config()), tmp_path, progress=False)
    for name in ("generated.wav", "target.wav", "metrics.json"):
        assert (tmp_path / name).read_bytes() == (trained_workdir / name).read_bytes(), name


# ------------------------------------------------------------------ main.py itself
def test_main_py_bad_config_is_one_line_and_debug_shows_the_traceback(trained_workdir):
    before = file_hashes(trained_workdir)
    command = [sys.executable, "main.py", "--config=configs/violin.py:quick",
               f"--workdir={trained_workdir}", "--config.train.iterations=0"]
    plain = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert plain.returncode == 2
    assert plain.stderr.strip().splitlines() == [
        "error: --config.train.iterations=0 must be at least 1"]
    debug = subprocess.run([*command, "--debug"], cwd=ROOT, capture_output=True, text=True,
                           timeout=300)
    assert debug.returncode != 0 and "Traceback" in debug.stderr
    assert "ConfigError: --config.train.iterations=0" in debug.stderr
    assert file_hashes(trained_workdir) == before


@pytest.mark.parametrize("flag,line", [
    ("--config.train.iteratons=5", "error: --config.train.iteratons: no config key 'iteratons'. "
     'Did you mean "iterations" instead of "iteratons"?'),
    ("--config.train.iterations=2.5", "error: --config.train.iterations=2.5: invalid literal "
     "for int() with base 10: '2.5' (python main.py --helpshort lists the flags)"),
], ids=["misspelled key", "wrong type"])
def test_main_py_flag_it_cannot_parse_is_one_line(flag, line, tmp_path):
    command = [sys.executable, "main.py", "--config=configs/violin.py:quick",
               f"--workdir={tmp_path / 'run'}", flag]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [line]
    assert not (tmp_path / "run").exists()
