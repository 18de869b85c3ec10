"""main.py as a user meets its faults: kill -9 in the middle of a checkpoint save, then the
same command again; Ctrl-C during training and during a checkpoint commit; a second run on a
workdir in use; a disk that fills during training."""

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
from tnca_jax.generation import load_run
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


def command(workdir: Path) -> list[str]:
    return [sys.executable, "main.py", "--config=configs/violin.py:quick",
            f"--workdir={workdir}", *config_flags(fault_config())]


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
    train_and_evaluate(fault_config(), workdir, progress=False)
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
    assert f"Resuming from checkpoint at step {latest}" in rerun.stderr
    assert not list((workdir / CHECKPOINT_DIR).glob(f"*{SAVING}"))
    steps = [json.loads(line)["step"] for line in (workdir / TRAIN_LOG).read_text().splitlines()]
    assert steps == list(range(1, ITERATIONS + 1))
    # Bit for bit the run that was never interrupted: parameters, and the rendered note.
    assert load_run(workdir).step == ITERATIONS
    for resumed, straight in zip(params(workdir), params(uninterrupted), strict=True):
        np.testing.assert_array_equal(resumed, straight)
    assert (workdir / "generated.wav").read_bytes() == (uninterrupted / "generated.wav"
                                                        ).read_bytes()


# ------------------------------------------------------------------ Ctrl-C, a busy workdir
def start(workdir: Path) -> subprocess.Popen:
    return subprocess.Popen(command(workdir), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


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


@pytest.mark.parametrize("moment", ["training", "checkpoint commit"])
def test_ctrl_c_stops_at_once_and_says_where_a_rerun_resumes(moment, tmp_path):
    workdir = tmp_path / "run"
    process = start(workdir)
    if moment == "training":
        wait_for(lambda: logged_steps(workdir) >= 3, process, "step 3 was logged")
    else:
        wait_for(lambda: logged_steps(workdir) >= 3
                 and any((workdir / CHECKPOINT_DIR).glob(f"*{SAVING}*")), process,
                 "a checkpoint was being committed")
    sent = time.monotonic()
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130 and time.monotonic() - sent < 2.0
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    resumes = load_run(workdir).step  # what a rerun restores
    assert stderr.strip().splitlines()[-1] == (
        f"interrupted: training in {workdir} stopped; the last good checkpoint is step "
        f"{resumes}, a rerun resumes from it (run the same command)")
    assert not (workdir / "run.lock").exists() and not (workdir / "generated.wav").exists()


def test_a_second_run_on_a_workdir_in_use_is_refused(tmp_path):
    workdir = tmp_path / "run"
    first = start(workdir)
    try:
        wait_for(lambda: logged_steps(workdir) >= 1, first, "training started")
        second = subprocess.run(command(workdir), cwd=ROOT, capture_output=True, text=True,
                                timeout=300)
        assert second.returncode == 2
        [line] = second.stderr.strip().splitlines()
        assert line.startswith(f"error: {workdir} is in use by another run (process "
                               f"{first.pid}, since ")
        assert first.poll() is None  # the first run goes on
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=60)


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
    lines = [line for line in failed.stderr.strip().splitlines() if line.strip()]
    # The load stage's lines and the progress bar, then one error line: no orbax spam.
    assert all(line.startswith(("[load", "note: ", "train: ")) for line in lines[:-1]), lines
    assert lines[-1].startswith(f"error: writing {workdir.absolute() / CHECKPOINT_DIR} failed "
                                "(File too large); ")
