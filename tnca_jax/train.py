"""Training a TNCA on one recording: sample pool, stochastic rollouts, Adam, checkpoints.

The train state (model + optimizer, split once with `nnx.split`, and the sample pool) is made
in one place, `create_train_state`. The train step is one `jax.jit` over it; each step:
1. derives its PRNG key from the optimizer's step count (inside the step: no per-step host
   transfer), draws a batch from the sample pool (Growing NCA) and replaces its worst member by
   the seed;
2. grows it for a fixed `max_steps` with `lax.scan`, keeping the state at a step sampled from
   [min_steps, max_steps] (one compiled rollout serves every length);
3. takes the TNCA loss (`tnca_jax.losses.tnca_loss`);
4. normalises each parameter's gradient to unit L2 norm, then Adam with a decaying rate;
5. writes the grown states back to the pool.
A step whose loss, gradients or updated state are not finite is rejected (state and pool stay);
`train` finds the first one at the next log or checkpoint step, before writing either, and
retries from the last good state (the newest checkpoint, else the start) with the learning
rate halved, at most `MAX_RETRIES` times, before it gives up (`NonFiniteError`). The rate's
scale lives in the optimizer state (`scale_by_scaled_schedule`): changing it recompiles
nothing, checkpoints keep it, and at 1 it leaves every update bit for bit as it was.

`plan_training` compiles the step before anything is written and reads XLA's memory analysis
of it: a config whose step needs more than `config.train.memory_budget_gb` is refused
(ConfigError naming the knobs). (The growth step's hand-written gradient keeps only each
step's input state for the backward pass, which is all that recomputing steps (remat) would
keep: the full configs need under 6 GB on a 4 s note, see bench/memory.py.)

`train` splits the batch and the pool along their leading axis over all devices (`data_mesh`)
and replicates the model and optimizer; random bits do not depend on the split, so 1 and N
devices train the same model (up to float summation order).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from tnca_jax.checks import check_sharding
from tnca_jax.errors import ConfigError, MissingFileError, UserError, warn
from tnca_jax.losses import LossWeights, TncaTarget, spectrogram_loss, tnca_loss
from tnca_jax.model import ALIVE_THRESHOLD, ALPHA, TNCA, grow
from tnca_jax.target import Target
from tnca_jax.workdir import Checkpoints, Workdir

DATA_AXIS = "data"
MAX_RETRIES = 3  # rejected steps retried at a lower learning rate before a run gives up
RETRY_FACTOR = 0.5  # the learning rate's scale after each retry
GB = 1e9


class NonFiniteError(UserError, RuntimeError):
    """Training produced a NaN/Inf loss, gradient or parameter update."""


class OutOfMemoryError(UserError, MemoryError):
    """The accelerator ran out of memory for the train step (XLA's RESOURCE_EXHAUSTED)."""


MEMORY_KNOBS = ("lower --config.train.batch_size, --config.train.max_steps, "
                "--config.train.pool_size or --config.max_seconds (or free the accelerator "
                "of other programs)")


@contextlib.contextmanager
def out_of_memory_is_one_line(where: str | Callable[[], str]) -> Iterator[None]:
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
        raise OutOfMemoryError(f"the accelerator ran out of memory {place} ({detail}); "
                               f"{MEMORY_KNOBS}") from None


def data_mesh(train_config: ml_collections.ConfigDict,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
    """The 1-D mesh training splits batch and pool over: `devices`, default all of them.

    Raises ConfigError when batch_size or pool_size is not a multiple of the device count.
    """
    devices = jax.devices() if devices is None else list(devices)
    check_sharding(train_config, len(devices))
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def shardings(mesh: Mesh) -> tuple[NamedSharding, NamedSharding]:
    """(replicated, split along the leading axis) over `mesh`."""
    return NamedSharding(mesh, PartitionSpec()), NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def create_train_state(config: ml_collections.ConfigDict, n_bands: int, n_frames: int,
                       band_level: jax.Array | None = None, *, n_values: int = 1,
                       mesh: Mesh | None = None) -> tuple[nnx.GraphDef, nnx.State, jax.Array]:
    """Fresh (graphdef, model+optimizer state, sample pool [pool_size, F, T, C]).

    `band_level` [n_values, F]: the model's starting per-band level (the target's mean,
    normalised). `mesh` (see `data_mesh`): place the state replicated and the pool split over
    it.
    """
    model = TNCA.from_config(config, n_bands, n_values)
    if band_level is not None:
        model.band_level[...] = band_level
    optimizer = nnx.Optimizer(model, make_optimizer(config.train), wrt=nnx.Param)
    graphdef, train_state = nnx.split((model, optimizer))
    pool = model.seed(n_frames, config.train.pool_size)
    if mesh is not None:
        replicated, split = shardings(mesh)
        train_state, pool = jax.device_put(train_state, replicated), jax.device_put(pool, split)
    return graphdef, train_state, pool


def normalize_per_variable(eps: float = 1e-8) -> optax.GradientTransformation:
    """Scale each parameter's gradient to unit L2 norm (Growing NCA)."""

    def update_fn(updates, state, params=None):
        del params
        return jax.tree.map(lambda g: g / (jnp.linalg.norm(g) + eps), updates), state

    return optax.GradientTransformation(lambda _: optax.EmptyState(), update_fn)


class ScaledScheduleState(NamedTuple):
    """The optimizer state of `scale_by_scaled_schedule`."""

    count: jax.Array
    learning_rate_scale: jax.Array


def scale_by_scaled_schedule(schedule: optax.Schedule) -> optax.GradientTransformation:
    """optax's `scale_by_learning_rate(schedule)` times a scale kept in the optimizer state (1
    until `train` lowers it after a rejected step): the rate changes without recompiling the
    step, and at 1 every update is bit for bit optax's."""

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


def make_optimizer(train_config: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """Per-variable gradient normalisation, then Adam whose rate decays exponentially to
    `final_lr_fraction` (after a linear warm-up over `warmup_steps`, if any), times the retry
    scale (`scale_by_scaled_schedule`)."""
    warmup = train_config.get("warmup_steps", 0)
    if warmup:
        schedule = optax.warmup_exponential_decay_schedule(
            0.0, train_config.learning_rate, warmup,
            transition_steps=max(train_config.iterations - warmup, 1),
            decay_rate=train_config.final_lr_fraction)
    else:
        schedule = optax.exponential_decay(
            train_config.learning_rate, transition_steps=max(train_config.iterations, 1),
            decay_rate=train_config.final_lr_fraction)
    return optax.chain(normalize_per_variable(), optax.scale_by_adam(),
                       scale_by_scaled_schedule(schedule))


def _is_scale(path: tuple) -> bool:
    return any(getattr(key, "key", None) == "learning_rate_scale" for key in path)


def learning_rate_scale(train_state: nnx.State) -> float:
    """The scale `train` applies to the learning rate (1 until a rejected step lowers it)."""
    leaves = jax.tree_util.tree_leaves_with_path(train_state)
    return float(next(leaf for path, leaf in leaves if _is_scale(path)))


def with_learning_rate_scale(train_state: nnx.State, scale: float) -> nnx.State:
    """`train_state` with the learning rate's scale set to `scale` (placed like the old one)."""
    return jax.tree_util.tree_map_with_path(
        lambda path, leaf: (jax.device_put(jnp.asarray(scale, leaf.dtype), leaf.sharding)
                            if _is_scale(path) else leaf), train_state)


def living_fraction(states: jax.Array) -> jax.Array:
    return jnp.mean(states[..., ALPHA] > ALIVE_THRESHOLD)


def make_train_step(graphdef: nnx.GraphDef, config: ml_collections.ConfigDict,
                    target: TncaTarget, *, mesh: Mesh | None = None):
    """Build the jitted step: (train_state, pool) -> (train_state, pool, metrics).

    Step n draws its randomness from `fold_in(key(config.seed), n)`, n the optimizer's step
    count. With `mesh` (see `data_mesh`) the pool and batch are split over its devices, the
    rest replicated, and the step takes and returns them so.
    """
    split = None if mesh is None else shardings(mesh)[1]

    def split_batch(x: jax.Array) -> jax.Array:
        # Without the constraint XLA would gather pool rows into a replicated batch.
        return x if split is None else jax.lax.with_sharding_constraint(x, split)

    train_config = config.train
    weights = LossWeights.from_config(train_config)
    if weights.uses_audio and target.audio is None:
        raise ValueError("audio-domain losses need the target recording")
    batch_size, max_steps = train_config.batch_size, train_config.max_steps
    n_frames = target.unit.shape[-1]
    base_key = jax.random.key(config.seed)

    def train_step(train_state: nnx.State, pool: jax.Array):
        model, optimizer = nnx.merge(graphdef, train_state)
        model_def, params = nnx.split(model)
        key = jax.random.fold_in(base_key, optimizer.step[...])
        pick_key, steps_key, grow_key, audio_key = jax.random.split(key, 4)
        index = jax.random.choice(pick_key, pool.shape[0], (batch_size,), replace=False)
        batch = split_batch(pool[index])
        worst = jnp.argmax(spectrogram_loss(model.spectrogram(batch), target.unit,
                                            target.weights))
        batch = split_batch(batch.at[worst].set(model.seed(n_frames)[0]))
        steps = jax.random.randint(steps_key, (), train_config.min_steps, max_steps + 1)

        def loss_fn(params):
            grown = grow(model_def, params, batch, grow_key, max_steps, active_steps=steps)
            shown = nnx.merge(model_def, params).spectrogram(grown)
            loss = tnca_loss(shown, grown, target, weights, audio_key)
            return loss, (grown, jnp.mean(jnp.abs(shown[:, 0] - target.unit[0])))

        (loss, (grown, grid_l1)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        optimizer.update(model, grads)
        # A non-finite step is rejected: state and pool stay as they were.
        finite, new_state = keep_if_finite(loss, grads, nnx.state((model, optimizer)),
                                           train_state)
        new_pool = pool.at[index].set(jnp.where(finite, grown, pool[index]))
        metrics = {
            "loss": loss,
            "grid_l1": grid_l1,
            "living_fraction": living_fraction(grown),
            "finite": finite,
        }
        return new_state, new_pool, metrics

    return jit_train_step(train_step, mesh)


def jit_train_step(train_step: Callable, mesh: Mesh | None) -> Callable:
    """`train_step(train_state, pool) -> (train_state, pool, metrics)` jitted with both inputs
    donated; over `mesh`, the state and metrics replicated and the pool split. Its random
    bits are drawn partitionably (jax's default since 0.5, pinned): each device draws only its
    own shard's, and they are the same on any number of devices."""

    def partitionable_step(train_state, pool):
        with jax.threefry_partitionable(True):
            return train_step(train_state, pool)

    if mesh is None:
        return jax.jit(partitionable_step, donate_argnums=(0, 1))
    replicated, split = shardings(mesh)
    return jax.jit(partitionable_step, donate_argnums=(0, 1),
                   in_shardings=(replicated, split), out_shardings=(replicated, split, replicated))


def save(checkpoints: Checkpoints, step: int, train_state: nnx.State, pool: jax.Array) -> None:
    checkpoints.save(step, {"train_state": nnx.to_pure_dict(train_state), "pool": pool})


def _abstract(tree: Any) -> Any:
    """Shapes, dtypes and shardings of the arrays of `tree` (what a restore or a lowering
    needs), without their memory."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                        tree)


def restore(checkpoints: Checkpoints, step: int, train_state: nnx.State, pool: jax.Array
            ) -> jax.Array:
    """Load checkpoint `step` into `train_state` (in place); returns the restored pool.

    Arrays come back with the shardings of `train_state` and `pool`, whatever devices the
    checkpoint was written from.
    """
    restored = checkpoints.restore(step, {"train_state": nnx.to_pure_dict(train_state),
                                          "pool": _abstract(pool)})
    nnx.replace_by_pure_dict(train_state, restored["train_state"])
    return restored["pool"]


def restore_newest(checkpoints: Checkpoints, train_state: nnx.State, pool: jax.Array, *,
                   set_aside: Path | None = None) -> tuple[int, jax.Array] | None:
    """Load the newest checkpoint that can be read into `train_state` (in place); returns
    (its step, the restored pool), or None when there is no checkpoint. Damaged checkpoints
    are skipped, and moved to `set_aside` if given (see `Checkpoints.restore_newest`)."""
    restored = checkpoints.restore_newest(
        {"train_state": nnx.to_pure_dict(train_state), "pool": _abstract(pool)},
        set_aside=set_aside)
    if restored is None:
        return None
    step, tree = restored
    nnx.replace_by_pure_dict(train_state, tree["train_state"])
    return step, tree["pool"]


def restore_for_use(workdir: Workdir, step: int | None, train_state: nnx.State,
                    pool: jax.Array) -> int:
    """Load checkpoint `step` of `workdir` (None: the newest intact one, damaged ones skipped
    and left in place) into `train_state`, for generation; returns the step loaded. Raises
    MissingFileError (one line) when there is no checkpoint, or not that one."""
    checkpoints = workdir.checkpoints(create=False)
    try:
        steps = checkpoints.steps()
        if not steps:
            raise MissingFileError(f"{workdir} has no checkpoint yet: train first")
        if step is None:
            step, _ = restore_newest(checkpoints, train_state, pool)
        elif step in steps:
            restore(checkpoints, step, train_state, pool)
        else:
            raise MissingFileError(f"{workdir} has no checkpoint {step}; it has "
                                   f"{', '.join(map(str, steps))}")
    finally:
        checkpoints.close()
    return step


def keep_if_finite(loss: jax.Array, grads: Any, updated: nnx.State, train_state: nnx.State
                   ) -> tuple[jax.Array, nnx.State]:
    """(finite, the state to carry on with): `updated` when the loss, every gradient and
    every updated value are finite, else `train_state` as it was (the step is rejected)."""
    finite = jnp.isfinite(loss) & jnp.all(jnp.array(
        [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves((grads, updated))
         if jnp.issubdtype(x.dtype, jnp.inexact)]))
    return finite, jax.tree.map(lambda new, old: jnp.where(finite, new, old), updated,
                                train_state)


# ------------------------------------------------------------------------ memory
@dataclasses.dataclass(frozen=True)
class MemoryEstimate:
    """XLA's memory analysis of one compiled train step, per device, in bytes."""

    arguments: int  # train state and pool (donated: the outputs reuse them)
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


@dataclasses.dataclass(frozen=True)
class TrainProgram:
    """What `train` runs: the compiled train step (for the state and pool `init` makes), the
    mesh it runs on, XLA's estimate of the memory it needs, and the run it trains.

    Attributes:
      mesh: the devices batch and pool are split over.
      step: (train_state, pool) -> (train_state, pool, metrics), compiled (its buffers
        donated); metrics hold loss, grid_l1 (normalised), living_fraction and finite.
      memory: XLA's memory analysis of `step`.
      init: () -> (graphdef, fresh train state, fresh pool), placed on `mesh`.
      describe: writes run.json for the checkpoints this program's training writes.
      span_db: dB per unit of the normalised grid (for the log's grid_l1_db).
    """

    mesh: Mesh
    step: Any
    memory: MemoryEstimate
    init: Callable[[], tuple[nnx.GraphDef, nnx.State, Any]]
    describe: Callable[[Workdir], None]
    span_db: float


def compile_program(config: ml_collections.ConfigDict, mesh: Mesh,
                    init: Callable[[], tuple[nnx.GraphDef, nnx.State, Any]],
                    make_step: Callable[[nnx.GraphDef], Any],
                    describe: Callable[[Workdir], None], span_db: float) -> TrainProgram:
    """Compile `make_step(graphdef)` for the state and pool `init` makes and check it fits in
    memory: ConfigError when XLA's estimate exceeds `config.train.memory_budget_gb` (None: no
    check). Writes nothing."""
    graphdef, train_state, pool = init()
    placed = _abstract((train_state, pool))
    del train_state, pool
    with out_of_memory_is_one_line("compiling the train step, nothing was written"):
        compiled = make_step(graphdef).lower(*placed).compile()
    memory = MemoryEstimate.of(compiled)
    budget = config.train.get("memory_budget_gb", None)
    if budget is not None and memory.peak > budget * GB:
        raise ConfigError(
            f"the train step needs ~{memory.peak / GB:.1f} GB per device, above "
            f"--config.train.memory_budget_gb={budget:g}; lower --config.train.batch_size, "
            "--config.train.max_steps, --config.train.pool_size or --config.max_seconds, or "
            "raise memory_budget_gb if the accelerator has more memory")
    return TrainProgram(mesh=mesh, step=compiled, memory=memory, init=init, describe=describe,
                        span_db=span_db)


def plan_training(config: ml_collections.ConfigDict, target: Target, *,
                  vocoder: Callable[[jax.Array], jax.Array] | None = None) -> TrainProgram:
    """The train program of `config` on one recording, `target` (see `compile_program`);
    `vocoder`: the differentiable vocoder the audio losses render through (see
    `tnca_jax.losses.TncaTarget`)."""
    mesh = data_mesh(config.train)
    normalized = target.normalized

    def init() -> tuple[nnx.GraphDef, nnx.State, jax.Array]:
        return create_train_state(config, *normalized.shape[1:],
                                  band_level=normalized.mean(axis=-1),
                                  n_values=target.representation.n_values, mesh=mesh)

    tnca_target = TncaTarget.create(normalized, target.representation, target.audio, vocoder)
    return compile_program(
        config, mesh, init,
        lambda graphdef: make_train_step(graphdef, config, tnca_target, mesh=mesh),
        lambda workdir: workdir.write_run(config, target.contract, target.n_frames),
        target.representation.unit_span_db)


# ------------------------------------------------------------------------ the loop
def _first_rejected(pending: list[tuple[int, jax.Array]]) -> int | None:
    """The first rejected step among (step, finite flag) pairs, or None.

    The flags stay on the device until here (a log or checkpoint step): no per-step sync.
    """
    flags = jax.device_get([flag for _, flag in pending])
    return next((step for (step, _), ok in zip(pending, flags, strict=True) if not ok), None)


def train(config: ml_collections.ConfigDict, workdir: Workdir | str | os.PathLike,
          target: Target | None = None, *, progress: bool = True, stop_at: int | None = None,
          program: TrainProgram | None = None) -> TNCA:
    """Train (or resume training) a TNCA on `target`, or what `program` trains; returns the
    trained model.

    Checkpoints go to `workdir/checkpoints`; a run restarted with the same workdir resumes
    from the newest intact one (a damaged one is moved to `workdir/damaged_checkpoints`), also
    on another number of devices. Metrics are appended to the workdir's training log; run.json
    is (re)written once this call has a checkpoint, so that it always describes the run the
    checkpoints hold. A rejected (non-finite) step is retried from the last good state at a
    lower learning rate (see the module docstring). `stop_at` ends this call after that step
    (checkpointed), e.g. to fit a time-sliced session; the learning-rate schedule always spans
    `config.train.iterations`. `program`: a compiled program (`plan_training`, or the
    many-note `tnca_jax.timbre_train.plan_training`; default: planned here for `target`).
    """
    workdir = workdir if isinstance(workdir, Workdir) else Workdir(workdir)
    program = plan_training(config, target) if program is None else program
    train_config = config.train
    checkpoints = workdir.checkpoints(keep=train_config.keep_checkpoints,
                                      every=train_config.checkpoint_every)
    span_db = program.span_db
    iterations = train_config.iterations
    last = iterations if stop_at is None else min(stop_at, iterations)
    bar = None  # the progress bar, once the first step to train is known
    described = False  # whether run.json describes the run of this call's checkpoints
    retry: dict | None = None  # the training log's record of a retry, once one is made
    try:
        while True:
            graphdef, train_state, pool = program.init()
            restored = restore_newest(checkpoints, train_state, pool,
                                      set_aside=workdir.set_aside_damaged())
            start = 0
            if restored is not None:
                start, pool = restored
                if retry is None:
                    print(f"Resuming from checkpoint at step {start} in "
                          f"{checkpoints.directory}", file=sys.stderr)
                if not workdir.has_run():  # cut off between its checkpoint and run.json
                    program.describe(workdir)
            if retry is not None:
                train_state = with_learning_rate_scale(train_state, retry["learning_rate_scale"])
                retry["step"] = start
            workdir.trim_log(start)
            if bar is None:
                bar = _progress(start, iterations, progress)
            else:
                bar.n = start
                bar.refresh()
            window_start, window_steps = time.perf_counter(), 0
            pending: list[tuple[int, jax.Array]] = []  # (step, finite flag) since the last check
            rejected = None
            with workdir.log_appender(checkpoints) as append_log:
                if retry is not None:
                    append_log(retry)
                trained = {"steps": start}  # steps done, for the line of an error in a step
                # Raised at the step, or where it is next synchronised.
                with out_of_memory_is_one_line(_next_step(trained, checkpoints)):
                    for step in range(start, last):
                        train_state, pool, metrics = program.step(train_state, pool)
                        window_steps += 1
                        done = step + 1
                        pending.append((done, metrics["finite"]))
                        log_now = done % train_config.log_every == 0 or done == last
                        save_now = done == last or checkpoints.should_save(done)
                        if log_now or save_now:  # Nothing non-finite is logged or checkpointed.
                            rejected = _first_rejected(pending)
                            pending.clear()
                            if rejected is not None:
                                break
                        if log_now:
                            metrics = jax.device_get(metrics)
                            elapsed = time.perf_counter() - window_start
                            record = {
                                "step": done,
                                "loss": float(metrics["loss"]),
                                "grid_l1_db": float(metrics["grid_l1"]) * span_db,
                                "living_fraction": float(metrics["living_fraction"]),
                                "steps_per_s": window_steps / elapsed,
                            }
                            append_log(record)
                            bar.set_postfix(loss=f"{record['loss']:.4f}",
                                            grid_db=f"{record['grid_l1_db']:.2f}",
                                            alive=f"{record['living_fraction']:.2f}",
                                            it_s=f"{record['steps_per_s']:.2f}")
                            window_start, window_steps = time.perf_counter(), 0
                        if save_now:
                            with workdir.writing(checkpoints):
                                save(checkpoints, done, train_state, pool)
                            if not described:  # run.json follows its first checkpoint
                                with workdir.writing(checkpoints):
                                    checkpoints.wait()
                                program.describe(workdir)
                                described = True
                        bar.update(1)
                        trained["steps"] = done
                with workdir.writing(checkpoints):
                    checkpoints.wait()
            if rejected is None:
                break
            retry = _retry(rejected, learning_rate_scale(train_state), checkpoints)
            train_state = pool = None  # freed before the last good state is loaded again
    finally:
        if bar is not None:
            bar.close()
        _close(checkpoints)
    model, _ = nnx.merge(graphdef, train_state)
    return model


def _retry(rejected: int, scale: float, checkpoints: Checkpoints) -> dict:
    """The training log's record of retrying rejected step `rejected` from the last good
    state at a lower learning rate (said on stderr too); NonFiniteError when the retries are
    spent."""
    retries = round(np.log(scale) / np.log(RETRY_FACTOR))
    if retries >= MAX_RETRIES:
        raise NonFiniteError(
            f"non-finite loss, gradient or update at step {rejected} (the step was rejected); "
            f"{checkpoints.resume_point()}: rerun with a lower --config.train.learning_rate")
    scale *= RETRY_FACTOR
    latest = checkpoints.latest()
    warn(f"warning: step {rejected} was rejected (non-finite loss, gradient or update); "
         f"retrying from {f'checkpoint {latest}' if latest else 'the start'} at {scale:g}x "
         f"the learning rate (retry {retries + 1} of {MAX_RETRIES})")
    return {"step": latest or 0, "retry": retries + 1, "rejected_step": rejected,
            "learning_rate_scale": scale}


def _next_step(trained: dict, checkpoints: Checkpoints) -> Callable[[], str]:
    """Where an error in training happened, in words, when it is called: the step after the
    `trained["steps"]` done, and where a rerun resumes."""
    return lambda: f"at step {trained['steps'] + 1}; {checkpoints.resume_point()}"


def _close(checkpoints: Checkpoints) -> None:
    """Close the checkpoints, also after an error (a failed save that closing would raise again
    has been reported already)."""
    with contextlib.suppress(OSError, ValueError):
        checkpoints.close()


def _progress(start: int, total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(initial=start, total=total, disable=not enabled, desc="train",
                dynamic_ncols=True, mininterval=2.0)
