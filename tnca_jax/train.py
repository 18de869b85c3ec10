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
`train` names the first one at the next log or checkpoint step and stops before writing either.

`train` splits the batch and the pool along their leading axis over all devices (`data_mesh`)
and replicates the model and optimizer; random bits do not depend on the split, so 1 and N
devices train the same model (up to float summation order).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from tnca_jax.checks import check_sharding
from tnca_jax.errors import UserError
from tnca_jax.losses import LossWeights, TncaTarget, spectrogram_loss, tnca_loss
from tnca_jax.model import ALIVE_THRESHOLD, ALPHA, TNCA, grow
from tnca_jax.target import Target
from tnca_jax.workdir import Checkpoints, Workdir

DATA_AXIS = "data"


class NonFiniteError(UserError, RuntimeError):
    """Training produced a NaN/Inf loss, gradient or parameter update."""


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


def make_optimizer(train_config: ml_collections.ConfigDict) -> optax.GradientTransformation:
    schedule = optax.exponential_decay(
        train_config.learning_rate, transition_steps=max(train_config.iterations, 1),
        decay_rate=train_config.final_lr_fraction)
    return optax.chain(normalize_per_variable(), optax.adam(schedule))


def living_fraction(states: jax.Array) -> jax.Array:
    return jnp.mean(states[..., ALPHA] > ALIVE_THRESHOLD)


def make_train_step(graphdef: nnx.GraphDef, config: ml_collections.ConfigDict,
                    target: TncaTarget, *, mesh: Mesh | None = None):
    """Build the jitted step: (train_state, pool) -> (train_state, pool, metrics).

    Step n draws its randomness from `fold_in(key(config.seed), n)`, n the optimizer's step
    count. With `mesh` (see `data_mesh`) the pool and batch are split over its devices, the
    rest replicated, and the step takes and returns them so.
    """
    replicated, split = (None, None) if mesh is None else shardings(mesh)

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
            grown = grow(model_def, params, batch, grow_key, max_steps, active_steps=steps,
                         remat=train_config.remat)
            shown = nnx.merge(model_def, params).spectrogram(grown)
            loss = tnca_loss(shown, grown, target, weights, audio_key)
            return loss, (grown, jnp.mean(jnp.abs(shown[:, 0] - target.unit[0])))

        (loss, (grown, grid_l1)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        optimizer.update(model, grads)
        updated = nnx.state((model, optimizer))
        finite = jnp.isfinite(loss) & jnp.all(jnp.array(
            [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves((grads, updated))
             if jnp.issubdtype(x.dtype, jnp.inexact)]))
        # A non-finite step is rejected: state and pool stay as they were.
        new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), updated,
                                 train_state)
        new_pool = jnp.where(finite, pool.at[index].set(grown), pool)
        metrics = {
            "loss": loss,
            "grid_l1": grid_l1,
            "living_fraction": living_fraction(grown),
            "finite": finite,
        }
        return new_state, new_pool, metrics

    def partitionable_step(train_state: nnx.State, pool: jax.Array):
        # Pinned (jax's default since 0.5): each device draws only its own shard's random bits,
        # and the bits are the same on any number of devices.
        with jax.threefry_partitionable(True):
            return train_step(train_state, pool)

    if mesh is None:
        return jax.jit(partitionable_step, donate_argnums=(0, 1))
    return jax.jit(partitionable_step, donate_argnums=(0, 1),
                   in_shardings=(replicated, split), out_shardings=(replicated, split, replicated))


def save(checkpoints: Checkpoints, step: int, train_state: nnx.State, pool: jax.Array) -> None:
    checkpoints.save(step, {"train_state": nnx.to_pure_dict(train_state), "pool": pool})


def restore(checkpoints: Checkpoints, step: int, train_state: nnx.State, pool: jax.Array
            ) -> jax.Array:
    """Load checkpoint `step` into `train_state` (in place); returns the restored pool.

    Arrays come back with the shardings of `train_state` and `pool`, whatever devices the
    checkpoint was written from.
    """
    restored = checkpoints.restore(step, {"train_state": nnx.to_pure_dict(train_state),
                                          "pool": pool})
    nnx.replace_by_pure_dict(train_state, restored["train_state"])
    return restored["pool"]


def _require_finite(pending: list[tuple[int, jax.Array]], checkpoints: Checkpoints) -> None:
    """Raise NonFiniteError naming the first rejected step among (step, finite flag) pairs.

    The flags stay on the device until here (a log or checkpoint step): no per-step sync.
    """
    flags = jax.device_get([flag for _, flag in pending])
    rejected = [step for (step, _), ok in zip(pending, flags, strict=True) if not ok]
    if rejected:
        checkpoints.wait()
        raise NonFiniteError(
            f"non-finite loss, gradient or update at step {rejected[0]} (the step was rejected); "
            f"{checkpoints.resume_point()}: rerun with a lower --config.train.learning_rate")


def train(config: ml_collections.ConfigDict, workdir: Workdir | str | os.PathLike,
          target: Target, *, progress: bool = True, stop_at: int | None = None) -> TNCA:
    """Train (or resume training) a TNCA on `target`; returns the trained model.

    Checkpoints go to `workdir/checkpoints`; a run restarted with the same workdir resumes
    from the latest one, also on another number of devices. Metrics are appended to the
    workdir's training log. `stop_at` ends this call after that step (checkpointed), e.g. to
    fit a time-sliced session; the learning-rate schedule always spans
    `config.train.iterations`.
    """
    workdir = workdir if isinstance(workdir, Workdir) else Workdir(workdir)
    train_config = config.train
    normalized = target.normalized
    mesh = data_mesh(train_config)
    graphdef, train_state, pool = create_train_state(
        config, *normalized.shape[1:], band_level=normalized.mean(axis=-1),
        n_values=target.representation.n_values, mesh=mesh)

    checkpoints = workdir.checkpoints(keep=train_config.keep_checkpoints,
                                      every=train_config.checkpoint_every)
    start = checkpoints.latest() or 0
    workdir.trim_log(start)
    if start:
        pool = restore(checkpoints, start, train_state, pool)
        print(f"Resuming from checkpoint at step {start} in {checkpoints.directory}",
              file=sys.stderr)

    train_step = make_train_step(graphdef, config,
                                 TncaTarget.create(normalized, target.representation,
                                                   target.audio), mesh=mesh)
    span_db = target.representation.unit_span_db
    iterations = train_config.iterations
    last = iterations if stop_at is None else min(stop_at, iterations)
    bar = _progress(start, iterations, progress)
    window_start, window_steps = time.perf_counter(), 0
    pending: list[tuple[int, jax.Array]] = []  # (step, finite flag) since the last check
    try:
        with workdir.log_appender(checkpoints) as append_log:
            for step in range(start, last):
                train_state, pool, metrics = train_step(train_state, pool)
                window_steps += 1
                done = step + 1
                pending.append((done, metrics["finite"]))
                log_now = done % train_config.log_every == 0 or done == last
                save_now = done == last or checkpoints.should_save(done)
                if log_now or save_now:  # Nothing non-finite is logged or checkpointed.
                    _require_finite(pending, checkpoints)
                    pending.clear()
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
                bar.update(1)
            with workdir.writing(checkpoints):
                checkpoints.wait()
    finally:
        bar.close()
        _close(checkpoints)
    model, _ = nnx.merge(graphdef, train_state)
    return model


def _close(checkpoints: Checkpoints) -> None:
    """Close the checkpoints, also after an error (a failed save that closing would raise again
    has been reported already)."""
    with contextlib.suppress(OSError, ValueError):
        checkpoints.close()


def _progress(start: int, total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(initial=start, total=total, disable=not enabled, desc="train",
                dynamic_ncols=True, mininterval=2.0)
