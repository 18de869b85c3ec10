"""main.py as a user meets its faults, in every job: kill -9 in the middle of a checkpoint
save, then the same command again; Ctrl-C during training, during a checkpoint commit and
while notes are labelled by the pitch tracker; a second run on a workdir in use; a learning
rate that makes every iteration non-finite; a disk that fills during training."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

from configs.violin import get_config
from tests.conftest import ROOT, tiny_config
from tests.test_music_vocoder import TINY_VOCODER_RUN, TRAINING_NOTE
from tnca_jax.runs import load_run
from tnca_jax.settings import read_tnca
from tnca_jax.workdir import CHECKPOINT_DIR, TRAIN_LOG

ITERATIONS = 30
SAVING = ".orbax-checkpoint-tmp"  # orbax writes step N here, then renames it to N


def fault_config():
    config = tiny_config(iterations=ITERATIONS)
    config.train.checkpoint_every = 1  # a save in flight most of the time
    config.train.keep_checkpoints = 2  # and a deletion after each save
    return config


def config_flags(config, base=None, prefix="--config.") -> list[str]:
    """The --config.* flags that turn configs/violin.py:quick into `config`."""
    base = get_config("quick") if base is None else base
    flags = []
    for key, value in config.items():
        if hasattr(value, "items"):
            flags += config_flags(value, base[key], f"{prefix}{key}.")
        elif value != base[key]:
            flags.append(f"{prefix}{key}={value}")
    return flags


def command(workdir: Path, job: str = "note", *extra: str) -> list[str]:
    """main.py on `workdir`: the note job's fault config, or a tiny vocoder on two copies of a
    violin note (one held out), or the instruments job's quick config."""
    if job == "note":
        flags = ["--config=configs/violin.py:quick", *config_flags(fault_config())]
    elif job == "vocoder":
        notes = workdir.parent / "notes"
        notes.mkdir(exist_ok=True)
        for name in ("violin_B4.flac", "violin_A4.flac"):
            if not (notes / name).exists():
                (notes / name).write_bytes(TRAINING_NOTE.read_bytes())
        flags = ["--config=configs/vocoder.py:quick", f"--config.data.paths=('{notes}',)",
                 *TINY_VOCODER_RUN, f"--config.train.iterations={ITERATIONS * 10}"]
    else:
        flags = ["--config=configs/instruments.py:quick"]
    return [sys.executable, "main.py", f"--workdir={workdir}", *flags, *extra]


def kill_during_a_save(workdir: Path, after_step: int) -> list[str]:
    """Start the run, kill -9 it while it writes a checkpoint past `after_step`; returns what
    the checkpoint folder held right after the kill."""
    checkpoints = workdir / CHECKPOINT_DIR
    process = subprocess.Popen(command(workdir), cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while process.poll() is None and time.monotonic() < deadline:
            saving = [p.name for p in checkpoints.glob(f"*{SAVING}")]
            if saving and int(saving[0].split(".")[0]) > after_step:
                os.kill(process.pid, signal.SIGKILL)
                process.wait()
                return sorted(p.name for p in checkpoints.iterdir())
            time.sleep(0.005)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    pytest.fail(f"the run ended (status {process.returncode}) before a save could be killed")


def params(workdir: Path) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree.leaves(nnx.state(load_run(workdir).model, nnx.Param))]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    from tnca_jax.modes import train_and_evaluate

    workdir = tmp_path_factory.mktemp("uninterrupted")
    train_and_evaluate(read_tnca(fault_config()), workdir, progress=False)
    return workdir


def test_config_flags_rebuild_the_fault_config():
    config = get_config("quick")
    for flag in config_flags(fault_config()):
        key, value = flag.removeprefix("--config.").split("=")
        *parents, leaf = key.split(".")
        node = config
        for parent in parents:
            node = node[parent]
        node[leaf] = type(node[leaf])(value)
    assert config.to_json() == fault_config().to_json()


def test_kill_9_mid_save_then_rerun_equals_the_uninterrupted_run(tmp_path, uninterrupted):
    workdir = tmp_path / "run"
    latest = 0
    for _ in range(3):  # the save can complete between seeing it and the kill: try again
        left = kill_during_a_save(workdir, after_step=latest + 2)
        latest = load_run(workdir).step  # what a killed save leaves always loads
        if any(name.endswith(SAVING) for name in left):
            break
    else:
        pytest.fail("never killed a save in progress")
    assert 2 <= latest < ITERATIONS and not (workdir / "generated.wav").exists()

    rerun = subprocess.run(command(workdir), cwd=ROOT, capture_output=True, text=True,
                           timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"Resuming from checkpoint at iteration {latest}" in rerun.stderr
    assert not list((workdir / CHECKPOINT_DIR).glob(f"*{SAVING}"))
    iterations = [json.loads(line)["iteration"]
                  for line in (workdir / TRAIN_LOG).read_text().splitlines()]
    assert iterations == list(range(1, ITERATIONS + 1))
    # Bit for bit the run that was never interrupted: parameters, and the rendered note.
    assert load_run(workdir).step == ITERATIONS
    for resumed, straight in zip(params(workdir), params(uninterrupted), strict=True):
        np.testing.assert_array_equal(resumed, straight)
    assert (workdir / "generated.wav").read_bytes() == (uninterrupted / "generated.wav"
                                                        ).read_bytes()


# ------------------------------------------------------------------ Ctrl-C, a busy workdir
def start(workdir: Path, job: str = "note", *extra: str) -> subprocess.Popen:
    # A session of its own: Ctrl-C in a terminal signals the whole process group.
    return subprocess.Popen(command(workdir, job, *extra), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def wait_for(condition, process: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 240
    while not condition():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"the run ended (status {process.poll()}) before {what}")
        time.sleep(0.005)


def logged_steps(workdir: Path) -> int:
    log = workdir / TRAIN_LOG
    return len(log.read_text().splitlines()) if log.exists() else 0


def worker_started(process: subprocess.Popen) -> bool:
    """Whether the run has started the pitch tracker's worker process."""
    children = Path(f"/proc/{process.pid}/task/{process.pid}/children")
    return children.exists() and bool(children.read_text().split())


@pytest.mark.parametrize("job,moment", [("note", "training"), ("note", "checkpoint commit"),
                                        ("vocoder", "training"),
                                        ("instruments", "pitch tracking")])
def test_ctrl_c_stops_at_once_and_says_where_a_rerun_resumes(job, moment, tmp_path):
    workdir = tmp_path / "run"
    process = start(workdir, job)
    if moment == "training":
        wait_for(lambda: logged_steps(workdir) >= 3, process, "iteration 3 was logged")
    elif moment == "checkpoint commit":
        wait_for(lambda: logged_steps(workdir) >= 3
                 and any((workdir / CHECKPOINT_DIR).glob(f"*{SAVING}*")), process,
                 "a checkpoint was being committed")
    else:
        # While the worker is still importing: the moment a traceback once came from it.
        wait_for(lambda: worker_started(process), process, "the pitch tracker started")
        time.sleep(0.05)
    sent = time.monotonic()
    os.killpg(process.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole group
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130 and time.monotonic() - sent < 2.0
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr
    last = stderr.strip().splitlines()[-1]
    if moment == "pitch tracking":
        assert last == (f"interrupted: training in {workdir} stopped; no checkpoint was "
                        "written yet, a rerun starts afresh (run the same command)")
        return
    resumes = max(int(p.name) for p in (workdir / CHECKPOINT_DIR).iterdir() if p.name.isdigit())
    assert last == (f"interrupted: training in {workdir} stopped; the last good checkpoint is "
                    f"at iteration {resumes}, a rerun resumes from it (run the same command)")
    assert not (workdir / "run.lock").exists() and not (workdir / "metrics.json").exists()


@pytest.mark.parametrize("job", ["note", "vocoder"])
def test_a_second_run_on_a_workdir_in_use_is_refused(job, tmp_path):
    workdir = tmp_path / "run"
    first = start(workdir, job)
    try:
        wait_for(lambda: logged_steps(workdir) >= 1, first, "training started")
        second = subprocess.run(command(workdir, job), cwd=ROOT, capture_output=True,
                                text=True, timeout=300)
        assert second.returncode == 2
        [line] = second.stderr.strip().splitlines()
        assert line.startswith(f"error: {workdir} is in use by another run (process "
                               f"{first.pid}, since ")
        assert first.poll() is None  # the first run goes on
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=60)


@pytest.mark.parametrize("job", ["note", "vocoder"])
def test_a_learning_rate_that_cannot_train_is_one_line_and_exit_2(job, tmp_path):
    workdir = tmp_path / "run"
    done = subprocess.run(command(workdir, job, "--config.train.learning_rate=1e6",
                                  "--config.train.iterations=6"),
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
    assert lines[-1].startswith("error: non-finite loss, gradient or update at iteration ")
    assert lines[-1].endswith("rerun with a lower --config.train.learning_rate")
    assert "Traceback" not in done.stderr
    assert sum(line.startswith("warning: iteration ") for line in lines) == 3  # the retries


def test_disk_full_during_training_is_one_line_after_the_progress_bar(tmp_path):
    workdir = tmp_path / "run"
    # Files above 100 kB cannot be written (a checkpoint's pool is about 0.5 MB): the kernel
    # fails the write as on a full disk.
    limited = ["bash", "-c", "trap '' XFSZ; ulimit -f 98; exec \"$@\"", "bash"]
    # Without the tests' shared compilation cache: a program not cached yet would be written
    # there, fail the same limit and add JAX's warning about it (a user has no such cache).
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    failed = subprocess.run([*limited, *command(workdir)], cwd=ROOT, capture_output=True,
                            text=True, timeout=300, env=env)
    assert failed.returncode == 2
    # The progress bar redraws its line with carriage returns: each redraw is its own line.
    lines = [line for line in failed.stderr.replace("\r", "\n").splitlines() if line.strip()]
    # The load stage's lines and the progress bar, then one error line: no orbax spam.
    assert all(line.startswith(("[load", "note: ", "train: ")) for line in lines[:-1]), lines
    assert lines[-1].startswith(f"error: writing {workdir.absolute() / CHECKPOINT_DIR} failed "
                                "(File too large); ")
