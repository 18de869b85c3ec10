"""Training split over 8 devices (forced CPU host devices) matches 1 device, and checkpoints
move between device counts.

Each device count needs its own process (XLA fixes it at start-up), so the runs happen in
`python -m tests.test_sharding MODE ...` subprocesses that print one JSON line.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import ml_collections
import numpy as np
import pytest
from flax import nnx

from tests.conftest import ROOT, tiny_config
from tnca_jax import cli, training
from tnca_jax.errors import ConfigError
from tnca_jax.modes import load_notes, new_inverse
from tnca_jax.runs import describe
from tnca_jax.settings import read_tnca
from tnca_jax.tnca_training import Targets, create_train_state, plan_training
from tnca_jax.workdir import Workdir

ITERATIONS = 6
# Float32 losses of the same computation with its batch sums split over 8 devices differ in
# the summation order only: ~1 ulp (6e-8 measured over 40 iterations). A different batch or
# different random bits moves the loss by 1e-3 or more.
RTOL, ATOL = 1e-5, 1e-6


def sharding_config() -> ml_collections.ConfigDict:
    """A 16-band grid of at most 24 frames (the note cut quietly), batch 8 and pool 16
    (multiples of 8), checkpoints at 3 and 6."""
    config = tiny_config(iterations=ITERATIONS)
    del config["contract"]  # A preset name there; the custom contract is a ConfigDict.
    config.contract = ml_collections.ConfigDict(dict(
        sample_rate=22050, n_fft=512, hop_length=256, win_length=512, n_mels=16,
        magnitude_power=2, log_floor=1e-10))
    config.data.max_seconds = 24 * 256 / 22050
    config.data.min_seconds = 0.1
    config.train.batch_size = 8
    config.train.pool_size = 16
    config.train.checkpoint_every = 3
    return config


def _losses(workdir: Path) -> list[float]:
    return [json.loads(line)["loss"]
            for line in (workdir / "train_metrics.jsonl").read_text().splitlines()]


def _placement(array) -> dict:
    return {"devices": len(array.sharding.device_set), "spec": str(array.sharding.spec),
            "shards": sorted({shard.data.shape[0] for shard in array.addressable_shards})}


def _program():
    settings = read_tnca(sharding_config())
    notes = load_notes(settings, new_inverse(settings))
    return settings, notes, plan_training(settings, notes,
                                          lambda w: w.write_run(describe(settings, notes)))


def _restored_placement(workdir: Path, step: int) -> dict:
    """Where the pool and a parameter of checkpoint `step` land when restored for training."""
    settings, notes, program = _program()
    _, state, pool = create_train_state(settings, notes, Targets.create(notes),
                                        mesh=program.mesh)
    checkpoints = Workdir(workdir).checkpoints(create=False)
    restored = checkpoints.restore(step, {training.MODEL: nnx.to_pure_dict(state.model),
                                          training.CARRY: training.abstract(pool)})
    checkpoints.close()
    kernel = restored[training.MODEL]["update_rule"]["hidden"]["kernel"]
    return {"pool": _placement(restored[training.CARRY].states),
            "kernel_devices": len(kernel.sharding.device_set),
            "kernel_replicated": kernel.sharding.is_fully_replicated,
            "device_count": jax.device_count()}


def _eight(workdir: Path) -> dict:
    """Train on all (8) devices, recording where each step leaves the pool, and how many
    grid-sized values of the compiled step hold one sample (a device's share of the batch of
    8) or the whole batch."""
    pools = []
    settings, notes, program = _program()
    hlo = program.step.as_text()  # the compiled step that trains
    frames = notes.grid_frames
    grids = {"sample": hlo.count(f"f32[1,16,{frames},16]"),
             "batch": hlo.count(f"f32[8,16,{frames},16]")}

    def recorded(state, pool):
        state, pool, metrics = program.step(state, pool)
        pools.append(_placement(pool.states))
        return state, pool, metrics

    training.train(dataclasses.replace(program, step=recorded), Workdir(workdir),
                   settings.train, progress=False)
    return {"losses": _losses(workdir), "pools": pools, "grids": grids,
            "restored": _restored_placement(workdir, ITERATIONS)}


def _one(straight: Path, resumed: Path) -> dict:
    """Train on 1 device, and resume an 8-device run's step-3 checkpoint on 1 device."""
    settings, _, program = _program()
    training.train(program, Workdir(straight), settings.train, progress=False)
    training.train(program, Workdir(resumed), settings.train, progress=False)
    return {"losses": _losses(straight), "resumed_losses": _losses(resumed),
            "restored": _restored_placement(resumed, ITERATIONS)}


def _run(devices: int, *args: Path) -> dict:
    env = {**os.environ, "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    mode = "eight" if devices == 8 else "one"
    done = subprocess.run([sys.executable, "-m", "tests.test_sharding", mode, *map(str, args)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_eight_devices_train_like_one_and_checkpoints_move_between_them(tmp_path):
    eight = _run(8, tmp_path / "eight")
    # An 8-device run cut short after its step-3 checkpoint, to be resumed on 1 device.
    resumed = tmp_path / "resumed"
    shutil.copytree(tmp_path / "eight", resumed)
    shutil.rmtree(resumed / "checkpoints" / str(ITERATIONS))
    one = _run(1, tmp_path / "one", resumed)

    # The pool is split 2 rows a device over all 8 devices after every step, and restores so.
    split = {"devices": 8, "spec": "P('data',)", "shards": [2]}
    assert eight["pools"] == [split] * ITERATIONS
    # Growth runs on each device's share of the batch (with_sharding_constraint), not on a
    # replicated batch (measured: 348 one-sample vs 11 whole-batch grids; 5 vs 353 without).
    assert eight["grids"]["sample"] > 10 * eight["grids"]["batch"], eight["grids"]
    assert eight["restored"] == {"pool": split, "kernel_devices": 8, "kernel_replicated": True,
                                 "device_count": 8}
    assert one["restored"] == {"pool": {"devices": 1, "spec": "P('data',)", "shards": [16]},
                               "kernel_devices": 1, "kernel_replicated": True,
                               "device_count": 1}

    losses = np.array(one["losses"])
    assert len(losses) == ITERATIONS and np.all(np.isfinite(losses))
    np.testing.assert_allclose(eight["losses"], losses, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(one["resumed_losses"], losses, rtol=RTOL, atol=ATOL)
    print(f"max |loss(8) - loss(1)| = {np.max(np.abs(np.array(eight['losses']) - losses)):.2e}")


@pytest.mark.parametrize(("key", "value", "fix"), [("batch_size", 3, 4), ("pool_size", 6, 8)])
def test_sizes_that_do_not_split_over_the_devices_are_refused(key, value, fix):
    sizes = {"train.batch_size": 4, "train.pool_size": 8, f"train.{key}": value}
    four = jax.devices() * 4  # the check comes before the mesh is built
    with pytest.raises(ConfigError, match=(
            rf"^--config\.train\.{key}={value} must be a multiple of the 4 devices training "
            rf"is split over \(jax\.devices\(\)\); use e\.g\. --config\.train\.{key}={fix}$")):
        training.data_mesh(sizes, four)


def test_a_run_that_does_not_split_stops_before_writing(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(jax, "devices", lambda: [jax.local_devices()[0]] * 8)
    assert cli.run("train", tiny_config(), str(tmp_path / "run")) == 2
    assert capsys.readouterr().err == (
        "error: --config.train.batch_size=2 must be a multiple of the 8 devices training is "
        "split over (jax.devices()); use e.g. --config.train.batch_size=8\n")
    assert not (tmp_path / "run").exists()


if __name__ == "__main__":
    mode, *dirs = sys.argv[1:]
    result = _eight(*map(Path, dirs)) if mode == "eight" else _one(*map(Path, dirs))
    print(json.dumps(result))
