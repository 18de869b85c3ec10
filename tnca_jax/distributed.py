"""Training on several processes (hosts) through JAX's distributed runtime.

One process runs per host (a TPU pod slice's workers, a GPU cluster's nodes, or, for tests,
several processes of one CPU machine over gloo). Each runs the same command; `initialize` joins
them, after which `jax.devices()` lists every process's devices and the training mesh spans
them all (`tnca_jax.training.data_mesh`). What differs by process:
- loading: each process reads and analyses its share of the recordings (`load_shared`), and
  the results are gathered so that every process holds the same (small) features;
- writing: process 0 (`is_main`) writes run.json, the training log, metrics.json, audio and
  figures, shows progress, and takes the workdir's lock; checkpoints are written by every
  process together (orbax's multi-host save: each process its own shards);
- after training, process 0 alone evaluates, on a local copy of the trained state
  (`local_copy`); the others return once the last checkpoint is written.
With one process every function here is the identity or trivially true.
"""

from __future__ import annotations

import dataclasses
import pickle
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import jax
import numpy as np

from tnca_jax.errors import ConfigError, UserError

Item = TypeVar("Item")
Result = TypeVar("Result")
INITIALIZATION_TIMEOUT_S = 300  # how long a process waits for the others to join


@dataclasses.dataclass(frozen=True)
class Cluster:
    """How this process joins the others (`jax.distributed.initialize`'s arguments).

    auto: let JAX find the cluster (TPU pod slices, SLURM, Open MPI); else
    `coordinator_address` (host:port of process 0), `num_processes` and `process_id`.
    """

    coordinator_address: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    auto: bool = False

    @property
    def wanted(self) -> bool:
        return self.auto or self.coordinator_address is not None

    def check(self) -> None:
        """ConfigError for arguments that cannot describe a cluster."""
        if self.auto and self.coordinator_address is not None:
            raise ConfigError("--distributed finds the cluster itself; leave out "
                              "--coordinator_address, or drop --distributed")
        if self.coordinator_address is None:
            if self.num_processes is not None or self.process_id is not None:
                raise ConfigError("--num_processes and --process_id need "
                                  "--coordinator_address=HOST:PORT (process 0's)")
            return
        if self.num_processes is None or self.num_processes < 1:
            raise ConfigError("--coordinator_address needs --num_processes (at least 1)")
        if self.process_id is None or not 0 <= self.process_id < self.num_processes:
            raise ConfigError(f"--process_id must be one of 0..{self.num_processes - 1} "
                              f"(got {self.process_id})")


def initialize(cluster: Cluster) -> None:
    """Join the processes of `cluster` (nothing for a single-process run). On the CPU the
    processes talk over gloo. ConfigError (one line) when they cannot meet."""
    cluster.check()
    if not cluster.wanted:
        return
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(
            coordinator_address=cluster.coordinator_address,
            num_processes=cluster.num_processes, process_id=cluster.process_id,
            initialization_timeout=INITIALIZATION_TIMEOUT_S)
    except (RuntimeError, ValueError) as err:  # XlaRuntimeError is a RuntimeError
        detail = " ".join(str(err).split())[:200]
        raise ConfigError(f"cannot join the other training processes ({detail}); start every "
                          "process with the same --coordinator_address and --num_processes "
                          "and its own --process_id") from None


def is_main() -> bool:
    """Whether this process writes the workdir's files and shows progress (process 0)."""
    return jax.process_index() == 0


def count() -> int:
    return jax.process_count()


def barrier(name: str) -> None:
    """Wait until every process gets here (nothing with one process)."""
    if count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def all_gather(value: Any) -> list[Any]:
    """Every process's `value` (any picklable object), in process order: [value] with one
    process."""
    if count() == 1:
        return [value]
    from jax.experimental import multihost_utils

    data = np.frombuffer(pickle.dumps(value), np.uint8)
    sizes = multihost_utils.process_allgather(np.array([data.size], np.int64))
    padded = np.zeros(int(sizes.max()), np.uint8)
    padded[:data.size] = data
    gathered = multihost_utils.process_allgather(padded)
    return [pickle.loads(gathered[i, :int(sizes[i, 0])].tobytes())
            for i in range(gathered.shape[0])]


def all_agree(flag: bool) -> bool:
    """Whether `flag` holds on every process."""
    return all(all_gather(bool(flag)))


def load_shared(items: Sequence[Item], load: Callable[[Item], Result]) -> list[Result]:
    """[load(item) for item in items], each process loading only every `count()`-th item (its
    share) and the results gathered to every process, in `items`' order. A UserError raised by
    any process's share is raised on every process (the first, in item order)."""
    mine = range(jax.process_index(), len(items), count())
    loaded: dict[int, Any] = {}
    failure: tuple[int, UserError] | None = None
    for index in mine:
        try:
            loaded[index] = load(items[index])
        except UserError as err:
            failure = (index, err)
            break
    shares = all_gather((loaded, failure))
    failures = sorted((f for _, f in shares if f is not None), key=lambda f: f[0])
    if failures:
        raise failures[0][1]
    merged = {index: value for share, _ in shares for index, value in share.items()}
    return [merged[index] for index in range(len(items))]


def local_copy(tree: Any) -> Any:
    """`tree`'s replicated global arrays as arrays of this process alone (itself with one
    process): what process 0 evaluates after a multi-process training."""
    if count() == 1:
        return tree
    return jax.tree.map(lambda x: jax.numpy.asarray(np.asarray(x))
                        if isinstance(x, jax.Array) else x, tree)


def helper_summary(job: str, workdir: Any, iterations: int) -> dict:
    """What a process other than 0 reports once its share of training is done."""
    return {"job": job, "workdir": str(workdir), "process": jax.process_index(),
            "processes": count(), "iterations": iterations,
            "written_by": "process 0 (checkpoints: every process, its own shards)"}
