"""Faults a run recovers from, or stops at with one line: damaged checkpoints (every job's:
the note job's and the vocoder's go through the same loop), a busy workdir, a rejected
iteration, a train step too big for memory, a crashing optional metric, a disk that fills while
rendering. In-process, on copies of the session's trained workdir (test_faults.py: the same
classes through main.py)."""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import jax
import numpy as np
import pytest

import tnca_jax
from tests import crash
from tests.conftest import ROOT, tiny_config, train_note
from tests.test_robustness import file_hashes
from tnca_jax import cli, numba_cache, optional_metrics
from tnca_jax.audio import fit_full_scale
from tnca_jax.errors import ConfigError, WorkdirError
from tnca_jax.modes import evaluate, load_notes, new_inverse
from tnca_jax.records import RunMetrics
from tnca_jax.runs import describe, load_run
from tnca_jax.settings import read_tnca
from tnca_jax.tnca_training import plan_training
from tnca_jax.training import (
    OutOfMemoryError,
    learning_rate_scale,
    out_of_memory_is_one_line,
    train,
)
from tnca_jax.workdir import LOCK_FILE, RUN_FILE, Workdir


def program_of(config):
    """The note job's settings and train program for `config`."""
    settings = read_tnca(config)
    notes = load_notes(settings, new_inverse(settings))
    return settings, plan_training(settings, notes,
                                   lambda w: w.write_run(describe(settings, notes)))


def copy_of(workdir: Path, tmp_path: Path) -> Path:
    return shutil.copytree(workdir, tmp_path / "run")


# ------------------------------------------------------------------ damaged checkpoints
def _truncate_data(step: Path) -> None:
    data = max((step / "model" / "ocdbt.process_0" / "d").iterdir(),
               key=lambda path: path.stat().st_size)
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])


def _drop_ocdbt(step: Path) -> None:
    shutil.rmtree(step / "model" / "ocdbt.process_0")


def _drop_manifest(step: Path) -> None:
    (step / "model" / "manifest.ocdbt").unlink()


DAMAGE = {"truncated data file": _truncate_data, "ocdbt.process_0 deleted": _drop_ocdbt,
          "manifest deleted": _drop_manifest}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_generate_falls_back_from_a_damaged_latest_checkpoint(damage, trained_workdir,
                                                              tmp_path, capsys):
    workdir = copy_of(trained_workdir, tmp_path)
    steps = Workdir(workdir).checkpoints(create=False).steps()
    DAMAGE[damage](workdir / "checkpoints" / str(steps[-1]))
    before = file_hashes(workdir)
    note = tnca_jax.generate(workdir, growth_steps=4, num_stages=1)
    assert note.audio.size and load_run(workdir).step == steps[-2]
    err = capsys.readouterr().err
    assert f"warning: checkpoint {steps[-1]} in " in err and "cannot be read" in err
    assert f"using checkpoint {steps[-2]}, the newest intact one" in err
    assert file_hashes(workdir) == before  # generate() moves nothing


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_training_resumes_from_the_newest_intact_checkpoint(damage, trained_workdir, tmp_path,
                                                            capsys):
    workdir = copy_of(trained_workdir, tmp_path)
    steps = Workdir(workdir).checkpoints(create=False).steps()
    DAMAGE[damage](workdir / "checkpoints" / str(steps[-1]))
    train_note(tiny_config(iterations=steps[-1] + 1), workdir)
    err = capsys.readouterr().err
    assert (f"moved to {workdir.absolute() / 'damaged_checkpoints' / str(steps[-1])}; using "
            f"checkpoint {steps[-2]}") in err
    assert f"Resuming from checkpoint at iteration {steps[-2]}" in err
    assert (workdir / "damaged_checkpoints" / str(steps[-1]) / "model").is_dir()  # kept
    assert load_run(workdir).step == steps[-1] + 1
    assert [r["iteration"] for r in Workdir(workdir).read_log()] == list(range(1,
                                                                               steps[-1] + 2))


def test_no_intact_checkpoint_is_one_clear_error(trained_workdir, tmp_path, capsys):
    workdir = copy_of(trained_workdir, tmp_path)
    for step in (workdir / "checkpoints").iterdir():
        _drop_ocdbt(step)
    with pytest.raises(WorkdirError, match=r"no checkpoint in .* can be read \(step 3: .*; "
                       r"step 2: .*; step 1: .*\)\. If another version of tnca_jax wrote them"):
        tnca_jax.generate(workdir)
    assert cli.run("train", tiny_config(), str(workdir)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    # The load stage's lines, then one error line (found once training restores).
    assert all(line.startswith(("[load", "note: ")) for line in err[:-1]), err
    assert err[-1].startswith("error: no checkpoint in "), err
    assert not (workdir / "damaged_checkpoints").exists()  # nothing moved when none restores


# ------------------------------------------------------------------ run.json
def test_run_json_changes_only_once_the_new_run_has_a_checkpoint(trained_workdir, tmp_path):
    workdir = copy_of(trained_workdir, tmp_path)
    (workdir / RUN_FILE).unlink()  # a run cut off between its first checkpoint and run.json
    for checkpoint in (workdir / "checkpoints").iterdir():
        shutil.rmtree(checkpoint)
    killed = tiny_config(iterations=5)
    killed.train.checkpoint_every = 5

    def kill_at_five(state, carry):
        raise KeyboardInterrupt  # before any checkpoint: run.json is not written either

    settings, program = program_of(killed)
    with pytest.raises(KeyboardInterrupt):
        train(dataclasses.replace(program, step=kill_at_five), Workdir(workdir),
              settings.train, progress=False)
    assert not (workdir / RUN_FILE).exists()
    train_note(killed, workdir)
    assert json.loads((workdir / RUN_FILE).read_text())["settings"]["train"]["iterations"] == 5


# ------------------------------------------------------------------ the workdir's lock
def _dead_pid() -> int:
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True)
    return int(finished.stdout)


def test_a_stale_lock_is_taken_over_and_released(trained_workdir, tmp_path, capsys):
    workdir = copy_of(trained_workdir, tmp_path)
    pid = _dead_pid()
    (workdir / LOCK_FILE).write_text(json.dumps(
        {"pid": pid, "host": os.uname().nodename, "since": "2026-11-25 10:00:00"}))
    with Workdir(workdir).lock():
        assert json.loads((workdir / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert f"taking over {workdir / LOCK_FILE}: the run that held it (process {pid}, since " \
           "2026-11-25 10:00:00) is no longer running" in capsys.readouterr().err
    assert not (workdir / LOCK_FILE).exists()


# ------------------------------------------------------------------ a rejected step
def test_a_rejected_step_is_retried_at_a_lower_rate_and_the_run_finishes(tmp_path, capsys):
    settings, program = program_of(tiny_config(iterations=6))
    real = program.step

    def flaky(state, pool):  # iteration 4 fails at the full learning rate, not at half of it
        fail = (int(np.asarray(state.optimizer["step"][...])) == 3
                and learning_rate_scale(state) == 1)
        state, pool, metrics = real(state, pool)
        return state, pool, {**metrics, "finite": metrics["finite"] & (not fail)}

    workdir = Workdir(tmp_path)
    train(dataclasses.replace(program, step=flaky), workdir, settings.train, progress=False)
    assert ("warning: iteration 4 was rejected (non-finite loss, gradient or update); "
            "retrying from checkpoint 2 at 0.5x the learning rate (retry 1 of 3)"
            ) in capsys.readouterr().err
    assert workdir.read_retries() == [{"iteration": 2, "retry": 1, "rejected_iteration": 4,
                                       "learning_rate_scale": 0.5}]
    assert [r["iteration"] for r in workdir.read_log()] == [1, 2, 3, 4, 5, 6]
    assert load_run(tmp_path).step == 6
    # The lower rate lives in the checkpoints: a resumed run keeps it.
    _, state = train(program, workdir, settings.train, progress=False)  # nothing left to train
    assert learning_rate_scale(state) == 0.5


# ------------------------------------------------------------------ memory
def test_running_out_of_accelerator_memory_is_one_line_and_keeps_the_checkpoints(tmp_path):
    """XLA's RESOURCE_EXHAUSTED at iteration 3 (the estimate was wrong, or another program took
    the memory): one line naming the iteration, the knobs and where a rerun resumes; the
    checkpoint of iteration 2 stays."""
    settings, program = program_of(tiny_config(iterations=6))
    real = program.step

    def exhausted(state, pool):
        if int(np.asarray(state.optimizer["step"][...])) == 2:
            raise jax.errors.JaxRuntimeError(
                "RESOURCE_EXHAUSTED: Out of memory while trying to allocate 11.22GiB.\n"
                "BufferAssignment OOM Debugging ...")
        return real(state, pool)

    with pytest.raises(OutOfMemoryError) as caught:
        train(dataclasses.replace(program, step=exhausted), Workdir(tmp_path), settings.train,
              progress=False)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(
        "the accelerator ran out of memory at iteration 3; the last good checkpoint is at "
        "iteration 2, a rerun resumes from it (RESOURCE_EXHAUSTED: Out of memory while trying "
        "to allocate 11.22GiB. BufferAssignment")
    assert "--config.train.batch_size" in message
    assert Workdir(tmp_path).checkpoints(create=False).steps()[-1] == 2
    assert load_run(tmp_path).step == 2
    other = jax.errors.JaxRuntimeError("INTERNAL: something else")
    with pytest.raises(jax.errors.JaxRuntimeError), out_of_memory_is_one_line("here", "x"):
        raise other  # any other runtime error is a bug and keeps its traceback


def test_the_memory_estimate_grows_with_the_grid_and_bounds_the_budget():
    config = tiny_config()
    small = program_of(config)[1].memory
    config.train.batch_size, config.train.pool_size = 4, 16
    large = program_of(config)[1].memory
    # The pool (an argument) grows 4x; the batch's growth (temporaries) 2x.
    assert large.arguments > 3 * small.arguments and large.temporaries > small.temporaries
    config.train.memory_budget_gb = large.peak * 0.99 / 1e9
    with pytest.raises(ConfigError, match=r"needs ~.* GB per device, above "
                       r"--config.train.memory_budget_gb=.*; lower --config.train.batch_size"):
        program_of(config)
    config.train.memory_budget_gb = large.peak * 1.01 / 1e9
    assert program_of(config)[1].memory == large


def test_a_step_that_cannot_fit_is_refused_before_anything_is_written(tmp_path, capsys):
    config = tiny_config()
    config.train.memory_budget_gb = 1e-6
    assert cli.run("train", config, str(tmp_path / "run")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: the train step needs ~0.0 GB per device, "
                                               "above --config.train.memory_"), err
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------ optional metrics
def test_a_crashing_optional_metric_is_missing_with_a_note(trained_workdir, tmp_path,
                                                           monkeypatch):
    monkeypatch.setattr(optional_metrics, "pyin_f0", crash.segfault)
    workdir = copy_of(trained_workdir, tmp_path)
    (workdir / "metrics.json").unlink()
    (workdir / "report.html").unlink()
    evaluate(read_tnca(tiny_config()), workdir)
    note = RunMetrics.from_dict(json.loads((workdir / "metrics.json").read_text())).note
    for section in (note.generated, note.ceiling, note.static_baseline):
        assert section.f0_error_cents is None and section.voiced_agreement is None
        assert section.notes["f0_error_cents"] == (
            "left out: pYIN failed (its process died (signal SIGSEGV))")
        assert section.mel_l1_db is not None
    assert (workdir / "report.html").exists()


def test_a_hanging_optional_metric_times_out(monkeypatch):
    monkeypatch.setattr(optional_metrics, "pyin_f0", crash.hang)
    [result] = optional_metrics.run_tasks([optional_metrics.Task(optional_metrics.pyin_f0,
                                                                 (1,))], timeout=0.5)
    assert result == optional_metrics.Missing("it gave no result within 0.5 s")


def test_a_tasks_first_call_waits_for_the_numba_compile_lock():
    """Two processes compiling the same numba function into its cache at once can leave a
    cache that crashes every later run: a worker's first call of a task waits while another
    process holds the lock; its later calls of that task do not."""
    def first_call():
        results.extend(optional_metrics.run_tasks([optional_metrics.Task(time.monotonic, ())],
                                                  timeout=60))

    results: list[float] = []
    optional_metrics.run_tasks([optional_metrics.Task(time.sleep, (0,))])  # worker started
    with numba_cache.numba_compile_lock():  # held by this process, not the worker
        waiting = threading.Thread(target=first_call)
        waiting.start()
        time.sleep(1.0)
        released = time.monotonic()  # CLOCK_MONOTONIC: one clock for the machine's processes
    waiting.join(timeout=60)
    assert results and results[0] >= released
    with numba_cache.numba_compile_lock():
        [again] = optional_metrics.run_tasks([optional_metrics.Task(time.monotonic, ())],
                                             timeout=60)
        assert again < time.monotonic()  # answered while the lock is still held here


def test_librosa_is_imported_under_the_numba_compile_lock():
    """Importing librosa compiles pYIN's gufunc into numba's cache: a fresh process loading it
    (`load_librosa`, as tnca_jax.audio and tnca_jax.contract do) waits while another process
    holds the lock, and the lock is re-entrant within a process."""
    code = ("import sys, time; from tnca_jax.numba_cache import load_librosa; "
            "print(time.monotonic(), flush=True); load_librosa(); "
            "print(time.monotonic(), 'librosa.core.pitch' in sys.modules, flush=True)")
    # Held twice (the second not retaken: no deadlock), then released once out of both.
    with numba_cache.numba_compile_lock(), numba_cache.numba_compile_lock():
        child = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, text=True,
                                 stdout=subprocess.PIPE)
        started = float(child.stdout.readline())
        time.sleep(3.0)  # longer than the import takes (about 1 s here)
        released = time.monotonic()
    loaded, pitch_imported = child.stdout.readline().split()
    assert child.wait(timeout=60) == 0
    assert started < released <= float(loaded) and pitch_imported == "True"


def test_the_worker_ends_with_the_process_that_started_it():
    # A session of its own keeps a terminal's Ctrl-C from it, so it must not outlive its parent.
    code = ("import time; from tnca_jax import optional_metrics as m; "
            "m.run_tasks([m.Task(time.sleep, (0,))]); print(m._worker.process.pid)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=True)
    with pytest.raises(ProcessLookupError):
        os.kill(int(done.stdout), 0)


# ------------------------------------------------------------------ rendering
def test_rendered_notes_never_exceed_full_scale(trained_workdir):
    loud = np.stack([np.array([0.5, -1.19, 0.2], np.float32),
                     np.array([0.5, -0.9, 0.2], np.float32)])
    fitted = fit_full_scale(loud)
    np.testing.assert_allclose(fitted[0], loud[0] / 1.19, rtol=1e-6)  # one gain, same shape
    np.testing.assert_array_equal(fitted[1], loud[1])  # within full scale: untouched
    note = tnca_jax.generate(trained_workdir, growth_steps=4, num_stages=2, return_stages=True)
    assert np.max(np.abs(note.audio)) <= 1.0 and np.max(np.abs(note.stage_audio)) <= 1.0


def test_disk_full_while_rendering_names_the_file(trained_workdir, tmp_path, capsys):
    workdir = copy_of(trained_workdir, tmp_path)
    before = file_hashes(workdir)
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, limits[1]))  # generated.wav: 26 kB
    try:
        code = cli.run("evaluate", tiny_config(), str(workdir))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, previous_handler)
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: writing {workdir / 'generated.wav'} failed (File too large): free disk space "
        f"or make {workdir} writable, then rerun the same command"]
    assert file_hashes(workdir) == before


def test_non_finite_audio_is_never_written(trained_workdir, tmp_path, capsys, monkeypatch):
    from tnca_jax.inverse import GriffinLim

    workdir = copy_of(trained_workdir, tmp_path)
    before = file_hashes(workdir)
    monkeypatch.setattr(GriffinLim, "__call__", lambda self, log_mel, **kwargs: np.full(
        (log_mel.shape[0], log_mel.shape[-1] * 512), np.nan, np.float32))
    assert cli.run("evaluate", tiny_config(), str(workdir)) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line == (f"error: the audio for {workdir / 'generated.wav'} holds NaN or Inf (the "
                    "renderer failed); not written")
    assert file_hashes(workdir) == before


# ------------------------------------------------------------------ the vocoder job
def test_the_vocoder_job_falls_back_from_a_damaged_checkpoint_and_completes(tmp_path, capsys):
    from tests.test_music_vocoder import TRAINING_NOTE
    from tests.test_music_vocoder import tiny_config as vocoder_config
    from vocoders import music_train

    notes = tmp_path / "notes"
    notes.mkdir()
    for name in ("violin_B4.flac", "violin_A4.flac"):  # trained on, held out
        shutil.copy(TRAINING_NOTE, notes / name)
    config = vocoder_config(iterations=4)
    config.data.paths = (str(notes),)
    config.train.checkpoint_every = config.train.log_every = 2
    config.train.warmup_iterations = 1
    workdir = tmp_path / "voc"
    music_train.train_and_evaluate(music_train.read_vocoder(config), workdir, progress=False)
    _truncate_data(workdir / "checkpoints" / "4")
    config.train.iterations = 6  # trained further: the run goes on from its checkpoints
    report = music_train.train_and_evaluate(music_train.read_vocoder(config), workdir,
                                            progress=False)
    err = capsys.readouterr().err
    assert (f"moved to {workdir.absolute() / 'damaged_checkpoints' / '4'}; using checkpoint 2"
            in err)
    assert [r["iteration"] for r in Workdir(workdir).read_log()] == [2, 4, 6]
    assert report.checkpoint_step == 6 and (workdir / music_train.WEIGHTS_FILE).exists()
    # Another corpus or another architecture is another run: refused, nothing written.
    config.model.dim = 48
    with pytest.raises(WorkdirError, match=r"another model\.dim"):
        music_train.train_and_evaluate(music_train.read_vocoder(config), workdir,
                                       progress=False)
