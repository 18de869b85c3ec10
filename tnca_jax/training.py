"""The training loop of every job (one note, many notes, the music vocoder).

A job hands `train` a `TrainProgram`: its jitted step, compiled once for the train state and
the carry its `init` makes (a TNCA's sample pool, the vocoder's corpus), XLA's memory estimate
of it, and what to write in run.json. The loop is the same for all:
- it holds the workdir's lock (taken by the caller, `Workdir.lock`) and resumes from the newest
  intact checkpoint (a damaged one is moved to `damaged_checkpoints/`);
- a step whose loss, gradient or update is not finite is rejected inside the step
  (`keep_if_finite`: state and carry stay); the loop finds the first one at the next log or
  checkpoint iteration, before writing either, and retries from the last good state (the newest
  checkpoint, else the start) with the learning rate halved, at most `MAX_RETRIES` times, then
  stops with one line (`NonFiniteError`). The rate's scale lives in the optimizer state
  (`scale_by_scaled_schedule`): changing it recompiles nothing, and at 1 every update is optax's;
- running out of accelerator memory is one line naming the knobs (`OutOfMemoryError`), and
  Ctrl-C one line and exit status 130 (`tnca_jax.interrupts`, installed by the command line);
- a tqdm bar; one log record (`Workdir.log_appender`) every `log_every` iterations: the means of
  the step metrics since the last one, and iterations per second.

Checkpoints hold three items: "model", "optimizer" and, where the program says so, "carry";
generation restores "model" alone (`restore_model`), with no optimizer.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from tnca_jax import distributed
from tnca_jax.checkpoints import Checkpoints
from tnca_jax.errors import ConfigError, MissingFileError, UserError, warn
from tnca_jax.settings import LoopSettings, require
from tnca_jax.workdir import Workdir

DATA_AXIS = "data"
MAX_RETRIES = 3  # rejected iterations retried at a lower learning rate before a run gives up
RETRY_FACTOR = 0.5  # the learning rate's scale after each retry
GB = 1e9
MODEL, OPTIMIZER, CARRY = "model", "optimizer", "carry"  # the items of a checkpoint


class NonFiniteError(UserError, RuntimeError):
    """Training produced a NaN/Inf loss, gradient or parameter update, retries spent."""


class OutOfMemoryError(UserError, MemoryError):
    """The accelerator ran out of memory for the train step (XLA's RESOURCE_EXHAUSTED)."""


class TrainState(NamedTuple):
    """The model's and the optimizer's state (`nnx.split` of each), carried by the step."""

    model: nnx.State
    optimizer: nnx.State


class GraphDefs(NamedTuple):
    """The static halves of a `TrainState` (what `nnx.merge` needs)."""

    model: nnx.GraphDef
    optimizer: nnx.GraphDef


def split_state(model: nnx.Module, optimizer: nnx.Optimizer) -> tuple[GraphDefs, TrainState]:
    (model_def, model_state), (opt_def, opt_state) = nnx.split(model), nnx.split(optimizer)
    return GraphDefs(model_def, opt_def), TrainState(model_state, opt_state)


def merge_state(graphdefs: GraphDefs, state: TrainState) -> tuple[nnx.Module, nnx.Optimizer]:
    return nnx.merge(graphdefs.model, state.model), nnx.merge(graphdefs.optimizer,
                                                              state.optimizer)


@contextlib.contextmanager
def out_of_memory_is_one_line(where: str | Callable[[], str], knobs: str) -> Iterator[None]:
    """Turn XLA's RESOURCE_EXHAUSTED (a multi-line traceback) into OutOfMemoryError: one line
    naming where it happened (`where`, or what it returns when called then), the knobs to turn
    and where a rerun resumes."""
    try:
        yield
    except jax.errors.JaxRuntimeError as err:
        if "RESOURCE_EXHAUSTED" not in str(err):
            raise
        detail = " ".join(str(err).split())[:160]
        place = where() if callable(where) else where
        raise OutOfMemoryError(f"the accelerator ran out of memory {place} ({detail}); lower "
                               f"{knobs} (or free the accelerator of other programs)") from None


# ------------------------------------------------------------------------ devices
def data_mesh(split_sizes: dict[str, int], devices: Sequence[jax.Device] | None = None) -> Mesh:
    """The 1-D mesh a job splits its batch (and pool) over: `devices`, default all of them.
    ConfigError when a size of `split_sizes` ({"train.batch_size": 8, ...}) is not a
    multiple of the device count."""
    devices = jax.devices() if devices is None else list(devices)
    for key, value in split_sizes.items():
        require(value % len(devices) == 0, key, value,
                f"must be a multiple of the {len(devices)} devices training is split over "
                f"(jax.devices()); use e.g. --config.{key}="
                f"{-(-value // len(devices)) * len(devices)}")
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def shardings(mesh: Mesh) -> tuple[NamedSharding, NamedSharding]:
    """(replicated, split along the leading axis) over `mesh`."""
    return NamedSharding(mesh, PartitionSpec()), NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def jit_train_step(train_step: Callable, mesh: Mesh, *, split_carry: bool = True) -> Callable:
    """`train_step(state, carry) -> (state, carry, metrics)` jitted with both inputs donated,
    the state and metrics replicated over `mesh`, the carry split along its leading axis (a
    pool) or, without `split_carry`, replicated (a corpus every device samples from). Its
    random bits are drawn partitionably (jax's default since 0.5, pinned): each device draws
    only its own shard's, the same on any number of devices."""

    def partitionable_step(state, carry):
        with jax.threefry_partitionable(True):
            return train_step(state, carry)

    replicated, split = shardings(mesh)
    carry = split if split_carry else replicated
    return jax.jit(partitionable_step, donate_argnums=(0, 1), in_shardings=(replicated, carry),
                   out_shardings=(replicated, carry, replicated))


# ------------------------------------------------------------------------ optimizer pieces
class ScaledScheduleState(NamedTuple):
    """The optimizer state of `scale_by_scaled_schedule`."""

    count: jax.Array
    learning_rate_scale: jax.Array


def scale_by_scaled_schedule(schedule: optax.Schedule) -> optax.GradientTransformation:
    """optax's `scale_by_learning_rate(schedule)` times a scale kept in the optimizer state (1
    until `train` lowers it after a rejected iteration): the rate changes without recompiling
    the step, and at 1 every update is bit for bit optax's."""

    def init_fn(params):
        del params
        return ScaledScheduleState(jnp.zeros([], jnp.int32), jnp.ones([], jnp.float32))

    def update_fn(updates, state, params=None):
        del params
        step_size = -1 * schedule(state.count) * state.learning_rate_scale
        updates = jax.tree.map(lambda g: jnp.array(step_size, dtype=g.dtype) * g, updates)
        return updates, ScaledScheduleState(optax.safe_increment(state.count),
                                            state.learning_rate_scale)

    return optax.GradientTransformation(init_fn, update_fn)


def _is_scale(path: tuple) -> bool:
    return any(getattr(key, "key", None) == "learning_rate_scale" for key in path)


def learning_rate_scale(state: TrainState) -> float:
    """The scale `train` applies to the learning rate (1 until a rejected iteration)."""
    leaves = jax.tree_util.tree_leaves_with_path(state.optimizer)
    return float(next(leaf for path, leaf in leaves if _is_scale(path)))


def with_learning_rate_scale(state: TrainState, scale: float) -> TrainState:
    """`state` with the learning rate's scale set to `scale` (placed like the old one)."""
    return state._replace(optimizer=jax.tree_util.tree_map_with_path(
        lambda path, leaf: (jax.device_put(jnp.asarray(scale, leaf.dtype), leaf.sharding)
                            if _is_scale(path) else leaf), state.optimizer))


def keep_if_finite(loss: jax.Array, grads: Any, updated: TrainState, state: TrainState
                   ) -> tuple[jax.Array, TrainState]:
    """(finite, the state to carry on with): `updated` when the loss, every gradient and every
    updated value are finite, else `state` as it was (the iteration is rejected)."""
    finite = jnp.isfinite(loss) & jnp.all(jnp.array(
        [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves((grads, updated))
         if jnp.issubdtype(x.dtype, jnp.inexact)]))
    return finite, jax.tree.map(lambda new, old: jnp.where(finite, new, old), updated, state)


# ------------------------------------------------------------------------ the program
@dataclasses.dataclass(frozen=True)
class MemoryEstimate:
    """XLA's memory analysis of one compiled train step, per device, in bytes."""

    arguments: int  # train state and carry (donated: the outputs reuse them)
    outputs: int
    aliased: int
    temporaries: int  # activations kept for the backward pass, workspace
    peak: int

    @classmethod
    def of(cls, compiled: Any) -> MemoryEstimate:
        stats = compiled.memory_analysis()
        live = (stats.argument_size_in_bytes + stats.output_size_in_bytes
                - stats.alias_size_in_bytes + stats.temp_size_in_bytes)
        return cls(arguments=stats.argument_size_in_bytes, outputs=stats.output_size_in_bytes,
                   aliased=stats.alias_size_in_bytes, temporaries=stats.temp_size_in_bytes,
                   peak=max(getattr(stats, "peak_memory_in_bytes", 0), live))

    def to_dict(self) -> dict:
        return {key: round(value / GB, 3) for key, value in dataclasses.asdict(self).items()}


Init = Callable[[], tuple[GraphDefs, TrainState, Any]]


@dataclasses.dataclass(frozen=True)
class TrainProgram:
    """What `train` runs.

    Attributes:
      mesh: the devices the batch (and the carry) are split over.
      step: (state, carry) -> (state, carry, metrics), compiled, its inputs donated; metrics
        hold "loss", "finite" and the job's own means (logged, the first few shown on the bar).
      memory: XLA's memory analysis of `step`.
      init: () -> (graphdefs, fresh train state, fresh carry), placed on `mesh`.
      describe: writes run.json for the checkpoints this program's training writes.
      knobs: the settings that lower its memory, for the out-of-memory line.
      checkpoint_carry: whether checkpoints keep the carry (a pool: yes; a corpus: no).
    """

    mesh: Mesh
    step: Any
    memory: MemoryEstimate
    init: Init
    describe: Callable[[Workdir], None]
    knobs: str
    checkpoint_carry: bool = True


def abstract(tree: Any) -> Any:
    """Shapes, dtypes and shardings of the arrays of `tree`, without their memory."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                        tree)


def compile_program(loop: LoopSettings, mesh: Mesh, init: Init,
                    make_step: Callable[[GraphDefs], Any], describe: Callable[[Workdir], None],
                    knobs: str, *, checkpoint_carry: bool = True) -> TrainProgram:
    """Compile `make_step(graphdefs)` for the state and carry `init` makes and check it fits:
    ConfigError when XLA's estimate exceeds `loop.memory_budget_gb` (None: no check). Writes
    nothing."""
    graphdefs, state, carry = init()
    placed = abstract((state, carry))
    del state, carry
    with out_of_memory_is_one_line("compiling the train step, nothing was written", knobs):
        compiled = make_step(graphdefs).lower(*placed).compile()
    memory = MemoryEstimate.of(compiled)
    budget = loop.memory_budget_gb
    if budget is not None and memory.peak > budget * GB:
        raise ConfigError(
            f"the train step needs ~{memory.peak / GB:.1f} GB per device, above "
            f"--config.train.memory_budget_gb={budget:g}; lower {knobs}, or raise "
            "memory_budget_gb if the accelerator has more memory")
    return TrainProgram(mesh=mesh, step=compiled, memory=memory, init=init, describe=describe,
                        knobs=knobs, checkpoint_carry=checkpoint_carry)


# ------------------------------------------------------------------------ checkpoints
def _items(state: TrainState, carry: Any, with_carry: bool) -> dict:
    items = {MODEL: nnx.to_pure_dict(state.model), OPTIMIZER: nnx.to_pure_dict(state.optimizer)}
    if with_carry:
        items[CARRY] = carry
    return items


def _restored(state: TrainState, items: dict) -> TrainState:
    nnx.replace_by_pure_dict(state.model, items[MODEL])
    nnx.replace_by_pure_dict(state.optimizer, items[OPTIMIZER])
    return state


def restore_model(workdir: Workdir, step: int | None, model: nnx.Module) -> int:
    """Load checkpoint `step` of `workdir` (None: the newest intact one, damaged ones skipped
    and left in place) into `model`, in place, without its optimizer; returns the step loaded.
    MissingFileError (one line) when there is no checkpoint, or not that one."""
    checkpoints = workdir.checkpoints(create=False)
    state = nnx.state(model)
    like = {MODEL: nnx.to_pure_dict(state)}
    try:
        steps = checkpoints.steps()
        if not steps:
            raise MissingFileError(f"{workdir} has no checkpoint yet: train first")
        if step is None:
            step, items = checkpoints.restore_newest(like)
        elif step in steps:
            items = checkpoints.restore(step, like)
        else:
            raise MissingFileError(f"{workdir} has no checkpoint {step}; it has "
                                   f"{', '.join(map(str, steps))}")
    finally:
        checkpoints.close()
    nnx.replace_by_pure_dict(state, items[MODEL])
    nnx.update(model, state)
    return step


# ------------------------------------------------------------------------ the loop
def _first_rejected(pending: list[tuple[int, jax.Array]]) -> int | None:
    """The first rejected iteration among (iteration, finite flag) pairs, or None. The flags
    stay on the device until here (a log or checkpoint iteration): no per-step sync."""
    flags = jax.device_get([flag for _, flag in pending])
    return next((step for (step, _), ok in zip(pending, flags, strict=True) if not ok), None)


def _record(window: list[dict], done: int, seconds: float) -> dict:
    """One log record: the means of the step metrics of `window` (every one finite)."""
    window = jax.device_get(window)
    record = {"iteration": done}
    record.update({name: float(np.mean([m[name] for m in window]))
                   for name in window[0] if name != "finite"})
    record["iterations_per_s"] = len(window) / max(seconds, 1e-9)
    return record


def train(program: TrainProgram, workdir: Workdir, loop: LoopSettings, *,
          progress: bool = True, stop_at: int | None = None
          ) -> tuple[GraphDefs, TrainState]:
    """Train (or resume) what `program` trains, for `loop.iterations`; returns the trained
    state. `stop_at` ends this call after that iteration (checkpointed), e.g. to fit a
    time-sliced session; the learning-rate schedule always spans `loop.iterations`.

    run.json is (re)written once this call has a checkpoint, so that it describes the run the
    checkpoints hold. See the module docstring for retries and faults. In a multi-process run
    every process calls it (the step and the checkpoints are collective); process 0 alone
    writes run.json and the log and shows progress (`tnca_jax.distributed`).
    """
    main = distributed.is_main()
    checkpoints = workdir.checkpoints(keep=loop.keep_checkpoints, every=loop.checkpoint_every)
    last = loop.iterations if stop_at is None else min(stop_at, loop.iterations)
    bar = None
    described = False
    retry: dict | None = None  # the training log's record of a retry, once one is made
    try:
        while True:
            graphdefs, state, carry = program.init()
            like = _items(state, abstract(carry), program.checkpoint_carry)
            restored = checkpoints.restore_newest(like, set_aside=workdir.set_aside_damaged())
            start = 0
            if restored is not None:
                start, items = restored
                state = _restored(state, items)
                carry = items.get(CARRY, carry)
                if retry is None and main:
                    print(f"Resuming from checkpoint at iteration {start} in "
                          f"{checkpoints.directory}", file=sys.stderr)
                if main and not workdir.has_run():  # cut off between checkpoint and run.json
                    program.describe(workdir)
            if retry is not None:
                state = with_learning_rate_scale(state, retry["learning_rate_scale"])
                retry["iteration"] = start
            if main:
                workdir.trim_log(start)
            if bar is None:
                bar = _progress(start, loop.iterations, progress and main)
            else:
                bar.n = start
                bar.refresh()
            window_start, window = time.perf_counter(), []
            pending: list[tuple[int, jax.Array]] = []
            rejected = None
            with (workdir.log_appender(checkpoints) if main
                  else contextlib.nullcontext(lambda record: None)) as append_log:
                if retry is not None:
                    append_log(retry)
                trained = {"iterations": start}  # for the line of an error in a step
                with out_of_memory_is_one_line(_next_iteration(trained, checkpoints),
                                               program.knobs):
                    for step in range(start, last):
                        state, carry, metrics = program.step(state, carry)
                        window.append(metrics)
                        done = step + 1
                        pending.append((done, metrics["finite"]))
                        log_now = done % loop.log_every == 0 or done == last
                        save_now = done == last or checkpoints.should_save(done)
                        if log_now or save_now:  # Nothing non-finite is logged or saved.
                            rejected = _first_rejected(pending)
                            pending.clear()
                            if rejected is not None:
                                break
                        if log_now:
                            record = _record(window, done, time.perf_counter() - window_start)
                            append_log(record)
                            bar.set_postfix({k: f"{v:.4g}" for k, v in list(record.items())[1:5]})
                            window_start, window = time.perf_counter(), []
                        if save_now:
                            with workdir.writing(checkpoints):
                                checkpoints.save(done, _items(state, carry,
                                                              program.checkpoint_carry))
                            if not described:  # run.json follows its first checkpoint
                                with workdir.writing(checkpoints):
                                    checkpoints.wait()
                                if main:
                                    program.describe(workdir)
                                described = True
                        bar.update(1)
                        trained["iterations"] = done
                with workdir.writing(checkpoints):
                    checkpoints.wait()
            if rejected is None:
                break
            retry = _retry(rejected, learning_rate_scale(state), checkpoints)
            state = carry = None  # freed before the last good state is loaded again
    finally:
        if bar is not None:
            bar.close()
        with contextlib.suppress(OSError, ValueError):  # a failed save was reported already
            checkpoints.close()
    return graphdefs, state


def _retry(rejected: int, scale: float, checkpoints: Checkpoints) -> dict:
    """The training log's record of retrying rejected iteration `rejected` from the last good
    state at a lower learning rate (said on stderr too); NonFiniteError when retries are
    spent."""
    retries = round(np.log(scale) / np.log(RETRY_FACTOR))
    if retries >= MAX_RETRIES:
        raise NonFiniteError(
            f"non-finite loss, gradient or update at iteration {rejected} (the iteration was "
            f"rejected, {MAX_RETRIES} retries at lower rates too); "
            f"{checkpoints.resume_point()}: rerun with a lower --config.train.learning_rate")
    scale *= RETRY_FACTOR
    latest = checkpoints.latest()
    if distributed.is_main():
        warn(f"warning: iteration {rejected} was rejected (non-finite loss, gradient or update); "
             f"retrying from {f'checkpoint {latest}' if latest else 'the start'} at {scale:g}x "
             f"the learning rate (retry {retries + 1} of {MAX_RETRIES})")
    return {"iteration": latest or 0, "retry": retries + 1, "rejected_iteration": rejected,
            "learning_rate_scale": scale}


def _next_iteration(trained: dict, checkpoints: Checkpoints) -> Callable[[], str]:
    return lambda: f"at iteration {trained['iterations'] + 1}; {checkpoints.resume_point()}"


def _progress(start: int, total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(initial=start, total=total, disable=not enabled, desc="train",
                dynamic_ncols=True, mininterval=2.0)
