"""Two processes train together (JAX's distributed runtime: CPU backend, gloo collectives, a
coordinator on 127.0.0.1) exactly as one process with two devices does, and one process
resumes from their checkpoint, setting aside their last one, damaged in process 1's shard.

The two-process run is the command line users start on each host (`main.py ...
--coordinator_address --num_processes --process_id`) on the instruments job, whose notes each
process loads a share of; process 0 alone writes, evaluates and reports. The one-process
reference trains the same config in a `python -m tests.test_distributed` subprocess (the
device count is fixed when a process starts).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT, tiny_instruments_config
from tnca_jax import distributed
from tnca_jax.errors import ConfigError

ITERATIONS = 6
# Float32 losses of one computation over 2 devices, in one process or two: the same program,
# the same summation order (equal to the last bit, measured); 1e-5 leaves room for gloo's
# reductions. A different batch or other random bits move the loss by 1e-3 or more.
RTOL, ATOL = 1e-5, 1e-6
CONFIG = """
from tests.test_distributed import distributed_config


def get_config():
    return distributed_config()
"""


def distributed_config():
    """The tiny instruments config: 6 iterations, a checkpoint at 3 and 6, a log line each;
    labels from the file names (no pYIN), one note measured."""
    config = tiny_instruments_config()
    config.data.tune = False
    config.eval.max_notes = 1
    config.train.iterations = ITERATIONS
    config.train.checkpoint_every = 3
    config.train.log_every = 1
    return config


def _losses(workdir: Path) -> list[float]:
    return [json.loads(line)["loss"]
            for line in (workdir / "train_metrics.jsonl").read_text().splitlines()]


def _env(devices: int) -> dict:
    return {**os.environ, "JAX_PLATFORMS": "cpu",
            "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}


def _summary(stdout: str) -> dict:
    """The JSON summary a run prints (gloo says on stdout that it connected, before it)."""
    return json.loads(stdout[stdout.index("\n{") + 1:] if not stdout.startswith("{")
                      else stdout)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _train_in_two_processes(config: Path, workdir: Path) -> list[subprocess.CompletedProcess]:
    address = f"127.0.0.1:{_free_port()}"
    started = [subprocess.Popen(
        [sys.executable, "main.py", f"--config={config}", f"--workdir={workdir}",
         f"--coordinator_address={address}", "--num_processes=2", f"--process_id={rank}"],
        cwd=ROOT, env=_env(1), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for rank in range(2)]
    done = []
    for process in started:  # process 0 first: if it fails, the other would wait for it
        try:
            out, err = process.communicate(timeout=400)
        except subprocess.TimeoutExpired:
            process.kill()
            out, err = process.communicate()
        done.append(subprocess.CompletedProcess(process.args, process.returncode, out, err))
        if process.returncode != 0:
            for other in started:
                other.kill()
    return done


def _one_process(straight: Path, resumed: Path) -> dict:
    """Train on this process's 2 devices; then resume `resumed` (a two-process run's
    workdir) here."""
    from tests.conftest import train_note
    from tnca_jax.workdir import Workdir

    config = distributed_config()
    train_note(config, straight)
    train_note(config, resumed)
    return {"losses": _losses(straight), "resumed_losses": _losses(resumed),
            "resumed_steps": Workdir(resumed).checkpoints(create=False).steps()}


def test_two_processes_train_like_one_with_two_devices_and_one_resumes(tmp_path):
    config = tmp_path / "distributed_config.py"
    config.write_text(CONFIG)
    two = tmp_path / "two"
    first, second = _train_in_two_processes(config, two)
    assert first.returncode == 0, first.stderr[-3000:]
    assert second.returncode == 0, second.stderr[-3000:]
    # Process 0 measured and reported; process 1 said it trained and wrote nothing else.
    assert _summary(second.stdout) == {
        "job": "instruments", "workdir": str(two), "process": 1, "processes": 2,
        "iterations": ITERATIONS,
        "written_by": "process 0 (checkpoints: every process, its own shards)"}
    assert _summary(first.stdout)["summary"]["held_out"]["mel_l1_db"]["mean"] > 0
    assert "[train" in first.stderr and "[train" not in second.stderr
    assert (two / "metrics.json").exists() and (two / "report.html").exists()
    assert not (two / "run.lock").exists()
    log = (two / "train_metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["iteration"] for line in log] == list(range(1, ITERATIONS + 1))
    assert sorted(int(p.name) for p in (two / "checkpoints").iterdir()) == [3, ITERATIONS]

    # The two-process run's last checkpoint damaged in process 1's shard of the pool: one
    # process sets it aside and resumes from the checkpoint at 3.
    resumed = tmp_path / "resumed"
    shutil.copytree(two, resumed)
    shard = max((resumed / "checkpoints" / str(ITERATIONS) / "carry" / "ocdbt.process_1" / "d"
                 ).iterdir(), key=lambda path: path.stat().st_size)
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    done = subprocess.run([sys.executable, "-m", "tests.test_distributed",
                           str(tmp_path / "one"), str(resumed)],
                          cwd=ROOT, env=_env(2), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"moved to {resumed / 'damaged_checkpoints' / str(ITERATIONS)}" in done.stderr
    assert "Resuming from checkpoint at iteration 3" in done.stderr
    one = json.loads(done.stdout.strip().splitlines()[-1])

    losses = np.array(one["losses"])
    assert len(losses) == ITERATIONS and np.all(np.isfinite(losses))
    assert np.ptp(losses) > 1e-3  # the curve moves: equal curves are not two constants
    np.testing.assert_allclose(_losses(two), losses, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(one["resumed_losses"], losses, rtol=RTOL, atol=ATOL)
    assert one["resumed_steps"] == [3, ITERATIONS]


@pytest.mark.parametrize(("cluster", "message"), [
    (distributed.Cluster("127.0.0.1:1234"), "--coordinator_address needs --num_processes"),
    (distributed.Cluster("127.0.0.1:1234", 2, 2), r"--process_id must be one of 0\.\.1 "),
    (distributed.Cluster(None, 2, 0), "--num_processes and --process_id need "
                                      "--coordinator_address"),
    (distributed.Cluster("127.0.0.1:1234", 2, 0, auto=True), "--distributed finds the "
                                                             "cluster itself"),
])
def test_a_cluster_that_cannot_be_is_one_line(cluster, message):
    with pytest.raises(ConfigError, match=message):
        distributed.initialize(cluster)


def test_one_process_shares_nothing():
    assert distributed.load_shared([3, 1, 2], lambda x: x * 10) == [30, 10, 20]
    assert distributed.all_gather({"a": 1}) == [{"a": 1}] and distributed.all_agree(True)


def test_only_training_runs_on_several_processes(tmp_path, capsys):
    from tnca_jax import cli

    code = cli.run("evaluate", distributed_config(), str(tmp_path / "run"),
                   cluster=distributed.Cluster("127.0.0.1:1234", 2, 0))
    assert code == 2
    assert capsys.readouterr().err == (
        "error: --mode=evaluate runs in one process; leave out --distributed/"
        "--coordinator_address (only training is split over processes)\n")


if __name__ == "__main__":
    print(json.dumps(_one_process(*map(Path, sys.argv[1:]))))
