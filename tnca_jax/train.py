"""Training a TNCA on one recording: sample pool, stochastic rollouts, Adam, orbax checkpoints.

The train step is one `jax.jit` over pure state (model and optimizer split once with
`nnx.split`). Each step:
1. draws a batch from the sample pool (Growing NCA) and replaces its worst member by the seed;
2. grows it for a fixed `max_steps` with `lax.scan`, keeping the state at a step sampled from
   [min_steps, max_steps] (one compiled rollout serves every length);
3. takes a frequency-weighted L1 between the grown values and the target representation
   (normalised to [0, 1] per channel), plus a growth term (alpha towards 1 everywhere), an
   overflow penalty and, with their config weights, a multi-scale spectrogram L1, a temporal
   L1, and audio-domain losses on the grown note rendered differentiably
   (`Representation.audio`): multi-resolution STFT distance to the recording, and waveform L1
   where the phase is grown;
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
import dataclasses
import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from tnca_jax import audio as audio_lib
from tnca_jax import losses
from tnca_jax.contract import SpectralContract, get_contract, log_mel
from tnca_jax.model import ALIVE_THRESHOLD, ALPHA, TNCA, grow
from tnca_jax.representations import Representation, config_kind
from tnca_jax.workdir import WorkdirWriteError, reason, replacing

CHECKPOINT_DIR = "checkpoints"
TRAIN_LOG = "train_metrics.jsonl"
DATA_AXIS = "data"


class NonFiniteError(RuntimeError):
    """Training produced a NaN/Inf loss, gradient or parameter update."""


@dataclasses.dataclass(frozen=True)
class Target:
    """The recording a TNCA learns to grow.

    Attributes:
      audio: mono float32 waveform at the contract's rate, cut to a whole number of frames.
      log_mel: [n_mels, frames] the contract's log-mel of `audio`.
      contract: the spectral contract of `log_mel`.
      representation: what the TNCA grows (under `contract`).
      features: [n_values, bins, frames] the representation of `audio`, native units.
    """

    audio: np.ndarray
    log_mel: np.ndarray
    contract: SpectralContract
    representation: Representation
    features: np.ndarray

    @property
    def normalized(self) -> jax.Array:
        """The features mapped to [0, 1] per channel (0 = silence): [n_values, bins, frames]."""
        return self.representation.to_unit(jnp.asarray(self.features))


def load_target(config: ml_collections.ConfigDict,
                contract: SpectralContract | None = None) -> Target:
    """The config's recording as the config's representation under `contract` (default: the
    config's own contract)."""
    contract = get_contract(config.contract) if contract is None else contract
    representation = Representation(config_kind(config), contract)
    audio = audio_lib.load_audio(config.audio_path, contract.sample_rate,
                                 trim_db=config.trim_db, max_seconds=config.max_seconds)
    rate, min_seconds = contract.sample_rate, config.min_seconds
    # Two analysis frames, and more samples than the reflect padding, at the very least.
    frames_needed = max(2 * contract.hop_length, contract.pad + 1) / rate
    if len(audio) < max(min_seconds, frames_needed) * rate:
        why, fix = ((f"--config.min_seconds={min_seconds} asks for", " or lower min_seconds")
                    if min_seconds >= frames_needed else
                    (f"two analysis frames of contract {contract.name!r} need", ""))
        raise audio_lib.AudioError(
            f"{config.audio_path} has {len(audio) / rate:.3f} s of sound after trimming, but "
            f"{why} {max(min_seconds, frames_needed):.3f} s; give a longer note{fix}")
    audio = audio[: contract.num_samples(contract.num_frames(len(audio)))]
    return Target(audio=audio, log_mel=np.asarray(log_mel(audio, contract)), contract=contract,
                  representation=representation,
                  features=np.asarray(representation.features(audio)))


def create_model(config: ml_collections.ConfigDict, n_bands: int, n_values: int = 1) -> TNCA:
    return TNCA(n_bands, n_values=n_values, channels=config.model.channels,
                hidden=config.model.hidden, fire_rate=config.model.fire_rate,
                seed_spacing=config.model.seed_spacing, rngs=nnx.Rngs(config.seed))


def data_mesh(train_config: ml_collections.ConfigDict,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
    """The 1-D mesh training splits batch and pool over: `devices`, default all of them.

    Raises ConfigError when batch_size or pool_size is not a multiple of the device count.
    """
    from tnca_jax.checks import check_sharding  # Not at the top: checks imports this module.

    devices = jax.devices() if devices is None else list(devices)
    check_sharding(train_config, len(devices))
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def shardings(mesh: Mesh) -> tuple[NamedSharding, NamedSharding]:
    """(replicated, split along the leading axis) over `mesh`."""
    return NamedSharding(mesh, PartitionSpec()), NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def init_train_state(config: ml_collections.ConfigDict, n_bands: int, n_frames: int,
                     band_level: jax.Array | None = None, *, n_values: int = 1,
                     mesh: Mesh | None = None) -> tuple[nnx.GraphDef, nnx.State, jax.Array]:
    """Fresh (graphdef, model+optimizer state, sample pool [pool_size, F, T, C]).

    `band_level` [n_values, F]: the model's starting per-band level (the target's mean,
    normalised). `mesh` (see `data_mesh`): place the state replicated and the pool split over
    it.
    """
    model = create_model(config, n_bands, n_values)
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


def frequency_weights(target_unit: jax.Array) -> jax.Array:
    """Loss weights [n_values, F, T] for a normalised target [n_values, F, T].

    Channel 0 (the level): per band, mean 1, bands with more energy weigh more (0.5 to
    ~1.5+). A phase channel (instantaneous frequency) weighs by the cell's own level, mean 1:
    the phase of a silent cell is not heard.
    """
    level = target_unit[0]
    band = level.mean(axis=1)
    weights = [jnp.broadcast_to((0.5 + 0.5 * band / jnp.maximum(band.mean(), 1e-6))[:, None],
                                level.shape)]
    weights += [level / jnp.maximum(level.mean(), 1e-6)] * (target_unit.shape[0] - 1)
    return jnp.stack(weights)


def spectrogram_loss(shown: jax.Array, target_unit: jax.Array, weights: jax.Array) -> jax.Array:
    """Per-sample weighted L1 of the shown representation: [B, V, F, T] -> [B]."""
    return jnp.mean(weights * jnp.abs(shown - target_unit), axis=(1, 2, 3))


def growth_loss(states: jax.Array) -> jax.Array:
    """Mean shortfall of alpha below 1: the whole grid should be alive (Growing NCA's alpha target).

    Only living cells carry a gradient, so this keeps the growth front alive and spreading.
    """
    return jnp.mean(jax.nn.relu(1.0 - states[..., ALPHA]))


def overflow_penalty(states: jax.Array) -> jax.Array:
    """Mean squared excursion of all channels outside [-1, 1]."""
    return jnp.mean((states - jnp.clip(states, -1.0, 1.0)) ** 2)


def living_fraction(states: jax.Array) -> jax.Array:
    return jnp.mean(states[..., ALPHA] > ALIVE_THRESHOLD)


def audio_losses(shown: jax.Array, target: Target, train_config: ml_collections.ConfigDict,
                 key: jax.Array) -> jax.Array:
    """The weighted audio-domain losses of normalised grids [B, V, F, T]: the note rendered
    differentiably (`Representation.audio`, `audio_griffinlim_iterations` unrolled for stft
    and mel), its multi-resolution STFT distance to the recording, and its waveform L1 (for
    representations that grow the phase)."""
    representation = target.representation
    audio = representation.audio(representation.from_unit(shown), key,
                                 griffinlim_iterations=train_config.audio_griffinlim_iterations)
    reference = jnp.asarray(target.audio)[None]
    loss = train_config.audio_weight * losses.mrstft_distance(
        reference, audio, target.contract.sample_rate)
    if train_config.waveform_weight:
        loss = loss + train_config.waveform_weight * losses.waveform_l1(reference, audio)
    return loss


def make_train_step(graphdef: nnx.GraphDef, train_config: ml_collections.ConfigDict,
                    target_unit: jax.Array, target: Target | None = None, *,
                    mesh: Mesh | None = None):
    """Build the jitted step: (train_state, pool, key) -> (train_state, pool, metrics).

    `target_unit` [n_values, F, T]: the normalised representation to grow. `target` (its
    recording) is needed for the audio-domain losses (`train.audio_weight` > 0). With `mesh`
    (see `data_mesh`) the pool and batch are split over its devices, the rest replicated, and
    the step takes and returns them so.
    """
    replicated, split = (None, None) if mesh is None else shardings(mesh)

    def split_batch(x: jax.Array) -> jax.Array:
        # Without the constraint XLA would gather pool rows into a replicated batch.
        return x if split is None else jax.lax.with_sharding_constraint(x, split)

    weights = frequency_weights(target_unit)
    batch_size, max_steps = train_config.batch_size, train_config.max_steps
    n_frames = target_unit.shape[-1]
    uses_audio = bool(train_config.get("audio_weight", 0.0))
    if uses_audio and target is None:
        raise ValueError("audio-domain losses need the target recording")

    def train_step(train_state: nnx.State, pool: jax.Array, key: jax.Array):
        model, optimizer = nnx.merge(graphdef, train_state)
        model_def, params = nnx.split(model)
        pick_key, steps_key, grow_key, audio_key = jax.random.split(key, 4)
        index = jax.random.choice(pick_key, pool.shape[0], (batch_size,), replace=False)
        batch = split_batch(pool[index])
        worst = jnp.argmax(spectrogram_loss(model.spectrogram(batch), target_unit, weights))
        batch = split_batch(batch.at[worst].set(model.seed(n_frames)[0]))
        steps = jax.random.randint(steps_key, (), train_config.min_steps, max_steps + 1)

        def loss_fn(params):
            _, grown = grow(model_def, params, batch, grow_key, max_steps, snapshot_step=steps,
                            remat=train_config.remat)
            shown = nnx.merge(model_def, params).spectrogram(grown)
            spectral = spectrogram_loss(shown, target_unit, weights).mean()
            loss = (spectral + train_config.growth_weight * growth_loss(grown)
                    + train_config.overflow_weight * overflow_penalty(grown))
            if train_config.get("multiscale_weight", 0.0):
                loss += train_config.multiscale_weight * losses.multiscale_l1(
                    shown[:, 0], target_unit[0])
            if train_config.get("temporal_weight", 0.0):
                loss += train_config.temporal_weight * losses.temporal_l1(shown[:, 0],
                                                                           target_unit[0])
            if uses_audio:
                loss += audio_losses(shown, target, train_config, audio_key)
            return loss, (grown, jnp.mean(jnp.abs(shown[:, 0] - target_unit[0])))

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

    def partitionable_step(train_state: nnx.State, pool: jax.Array, key: jax.Array):
        # Pinned (jax's default since 0.5): each device draws only its own shard's random bits,
        # and the bits are the same on any number of devices.
        with jax.threefry_partitionable(True):
            return train_step(train_state, pool, key)

    if mesh is None:
        return jax.jit(partitionable_step, donate_argnums=(0, 1))
    return jax.jit(partitionable_step, donate_argnums=(0, 1),
                   in_shardings=(replicated, split, replicated),
                   out_shardings=(replicated, split, replicated))


def checkpoint_manager(workdir: str | os.PathLike, train_config: ml_collections.ConfigDict
                       ) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
        max_to_keep=train_config.keep_checkpoints,
        save_interval_steps=train_config.checkpoint_every,
        cleanup_tmp_directories=True)  # Saves cut short by a killed process.
    return ocp.CheckpointManager(Path(workdir).absolute() / CHECKPOINT_DIR, options=options)


def restore(manager: ocp.CheckpointManager, step: int, train_state: nnx.State,
            pool: jax.Array) -> jax.Array:
    """Load checkpoint `step` into `train_state` (in place); returns the restored pool.

    Arrays come back with the shardings of `train_state` and `pool`, whatever devices the
    checkpoint was written from.
    """
    restored = manager.restore(step, args=ocp.args.StandardRestore(
        {"train_state": nnx.to_pure_dict(train_state), "pool": pool}))
    nnx.replace_by_pure_dict(train_state, restored["train_state"])
    return restored["pool"]


def _logged_step(line: str) -> int | None:
    """The step of a log line; None for a line cut short by a killed process."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return None
    return record.get("step") if isinstance(record, dict) else None


def _trim_log(path: Path, last_step: int) -> None:
    """Keep the log lines up to the restored checkpoint (later steps will be logged again)."""
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines()
            if (step := _logged_step(line)) is not None and step <= last_step]
    with replacing(path) as tmp:
        tmp.write_text("".join(line + "\n" for line in kept))


def _require_finite(pending: list[tuple[int, jax.Array]], manager: ocp.CheckpointManager
                    ) -> None:
    """Raise NonFiniteError naming the first rejected step among (step, finite flag) pairs.

    The flags stay on the device until here (a log or checkpoint step): no per-step sync.
    """
    flags = jax.device_get([flag for _, flag in pending])
    rejected = [step for (step, _), ok in zip(pending, flags, strict=True) if not ok]
    if rejected:
        manager.wait_until_finished()
        raise NonFiniteError(
            f"non-finite loss, gradient or update at step {rejected[0]} (the step was rejected); "
            f"{_resume_point(manager)}: rerun with a lower --config.train.learning_rate")


@contextlib.contextmanager
def _writing(workdir: Path, manager: ocp.CheckpointManager) -> Iterator[None]:
    """Turn a failed write (disk full, read-only; orbax reports some as ValueError) into
    WorkdirWriteError, naming the checkpoint a rerun resumes from."""
    try:
        yield
    except (OSError, ValueError) as err:
        raise WorkdirWriteError(
            f"writing to {workdir} failed ({reason(err)}); {_resume_point(manager)}: free disk "
            "space or fix permissions, then rerun the same command") from err


@contextlib.contextmanager
def _closing(manager: ocp.CheckpointManager) -> Iterator[None]:
    """Close the manager on the way out, also after an error (a failed save that close() would
    raise again has been reported already)."""
    try:
        yield
    finally:
        with contextlib.suppress(OSError, ValueError):
            manager.close()


def _resume_point(manager: ocp.CheckpointManager) -> str:
    latest = manager.latest_step()
    if latest is None:
        return "no checkpoint was written yet, a rerun starts afresh"
    return f"the last good checkpoint is step {latest}, a rerun resumes from it"


def train(config: ml_collections.ConfigDict, workdir: str | os.PathLike, target: Target,
          *, progress: bool = True, stop_at: int | None = None) -> TNCA:
    """Train (or resume training) a TNCA on `target`; returns the trained model.

    Checkpoints go to `workdir/checkpoints` (orbax); a run restarted with the same workdir
    resumes from the latest one, also on another number of devices. Metrics are appended to
    `workdir/train_metrics.jsonl`.
    `stop_at` ends this call after that step (checkpointed), e.g. to fit a time-sliced session;
    the learning-rate schedule always spans `config.train.iterations`.
    """
    workdir = Path(workdir)
    train_config = config.train
    normalized = target.normalized
    mesh = data_mesh(train_config)
    graphdef, train_state, pool = init_train_state(
        config, *normalized.shape[1:], band_level=normalized.mean(axis=-1),
        n_values=target.representation.n_values, mesh=mesh)

    manager = checkpoint_manager(workdir, train_config)
    log_path = workdir / TRAIN_LOG
    start = manager.latest_step() or 0
    _trim_log(log_path, start)
    if start:
        pool = restore(manager, start, train_state, pool)
        print(f"Resuming from checkpoint at step {start} in {manager.directory}", file=sys.stderr)

    train_step = make_train_step(graphdef, train_config, normalized, target, mesh=mesh)
    base_key = jax.random.key(config.seed)
    span_db = target.representation.unit_span_db
    iterations = train_config.iterations
    last = iterations if stop_at is None else min(stop_at, iterations)
    bar = _progress(start, iterations, progress)
    window_start, window_steps = time.perf_counter(), 0
    pending: list[tuple[int, jax.Array]] = []  # (step, finite flag) since the last check
    with log_path.open("a") as log, _closing(manager):
        for step in range(start, last):
            train_state, pool, metrics = train_step(train_state, pool,
                                                    jax.random.fold_in(base_key, step))
            window_steps += 1
            done = step + 1
            pending.append((done, metrics["finite"]))
            log_now = done % train_config.log_every == 0 or done == last
            save_now = done == last or manager.should_save(done)
            if log_now or save_now:  # Nothing non-finite is logged or checkpointed.
                _require_finite(pending, manager)
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
                with _writing(workdir, manager):
                    log.write(json.dumps(record) + "\n")
                    log.flush()
                bar.set_postfix(loss=f"{record['loss']:.4f}",
                                grid_db=f"{record['grid_l1_db']:.2f}",
                                alive=f"{record['living_fraction']:.2f}",
                                it_s=f"{record['steps_per_s']:.2f}")
                window_start, window_steps = time.perf_counter(), 0
            if save_now:
                with _writing(workdir, manager):
                    manager.save(done, args=ocp.args.StandardSave(
                        {"train_state": nnx.to_pure_dict(train_state), "pool": pool}),
                        force=True)
            bar.update(1)
        with _writing(workdir, manager):
            manager.wait_until_finished()
    bar.close()
    model, _ = nnx.merge(graphdef, train_state)
    return model


def _progress(start: int, total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(initial=start, total=total, disable=not enabled, desc="train",
                dynamic_ncols=True, mininterval=2.0)
