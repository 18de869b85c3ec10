"""Training one conditioned TNCA on many notes (the timbre job, `config.job = "timbre"`).

The model (`tnca_jax.model.TNCA` with `instruments` > 0) is told each note's instrument, pitch
and length (`tnca_jax.model.NoteCondition`) and grows it on one grid as long as the longest
note: frames past a shorter note's end stay dead and silent, so one compiled step serves every
note. Every training note is a target twice (`NoteTargets`): with its own spectrum as its prior
(how a seen note is generated) and with the prior drawn from the other notes (how a pitch with
no note of its own is), so the cells learn to correct a prior that is off. The sample pool
holds grids of every target (`pool_targets`: a `train.left_out_share` of it grows the notes
with their left-out priors). Each step (one `jax.jit`, its PRNG key folded from the optimizer's
step count inside it):
1. draws a batch from the pool, with each entry's note: its target, loss weights and
   condition; the worst of the batch is reseeded, and the `train.damage` best have a random
   block of frames (and, half the time, only a range of bands) erased, as Growing NCA damages
   its best samples, so that the model learns to regrow what is lost;
2. grows it for a fixed `max_steps` (the loss taken at a step sampled in [min_steps,
   max_steps]), takes the weighted L1 to the targets with the growth and overflow terms
   (and the multiscale and temporal terms, where weighted), normalises each parameter's
   gradient and applies Adam (`tnca_jax.train.make_optimizer`);
3. writes the grown grids back to the pool; a non-finite step is rejected, as in
   `tnca_jax.train`, whose loop (`train`) runs this program: checkpoints, resume, retries at
   a lower rate, logs.

A note's resting level (`tnca_jax.model.Conditioner`) is its prior
(`tnca_jax.conditioning.SpectrumPrior`: the nearest training notes of its instrument moved to
its pitch) plus each instrument's envelope over the note per band, fitted by least squares
(`fit_envelopes`); training leaves both as they are (`tnca_jax.model.FixedLevel`) and the
cells learn what they leave.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from tnca_jax.conditioning import NOTE_TIME_FEATURES, PITCH_FEATURES
from tnca_jax.losses import (
    frequency_weights,
    multiscale_l1,
    overflow_penalty,
    spectrogram_loss,
    temporal_l1,
)
from tnca_jax.metrics import TOP_DB
from tnca_jax.model import ALIVE_THRESHOLD, ALPHA, TNCA, NoteCondition, grow
from tnca_jax.note_set import NoteSet
from tnca_jax.representations import Representation
from tnca_jax.train import (
    TrainProgram,
    compile_program,
    data_mesh,
    jit_train_step,
    keep_if_finite,
    make_optimizer,
    shardings,
)

LEVEL_RIDGE = 1e-3  # ridge on the envelope fit (few notes per instrument)


class NotePool(NamedTuple):
    """The sample pool: grids [P, F, T, C] and the target each grows (a row of
    `NoteTargets`), [P] int32."""

    states: jax.Array
    notes: jax.Array


class NoteTargets(NamedTuple):
    """Every training note twice (first with its own prior, then with the prior drawn without
    it; `NoteSet.condition`), stacked: targets [2N, V, F, T] (normalised, silence past each
    note's end), their loss weights [2N, V, F, T] (zero past the end), conditions, and each
    note's floor [2N, V, 1, 1]: TOP_DB below its peak, where the loss stops telling levels
    apart (as mel_l1_db does: differences between two kinds of near-silence are not heard)."""

    unit: jax.Array
    weights: jax.Array
    condition: NoteCondition
    floor: jax.Array

    @classmethod
    def create(cls, notes: NoteSet) -> NoteTargets:
        training = notes.training
        unit = notes.unit(training)
        weights = np.zeros(unit.shape, np.float32)
        for i, note in enumerate(training):
            weights[i, ..., :note.n_frames] = frequency_weights(unit[i, ..., :note.n_frames])
        floor = (jnp.max(unit, axis=(-2, -1), keepdims=True)
                 - TOP_DB / notes.representation.unit_span_db)
        condition = jax.tree.map(lambda *x: jnp.concatenate(x),
                                 notes.condition(training),
                                 notes.condition(training, leave_out=True))
        unit, weights, floor = (jnp.concatenate([x, x])
                                for x in (unit, jnp.asarray(weights), floor))
        return cls(unit, weights, condition, floor)

    def loss(self, shown: jax.Array, notes: jax.Array) -> jax.Array:
        """Per-sample weighted L1 of grids [B, V, F, T] shown for `notes` [B], both floored."""
        floor = self.floor[notes]
        return spectrogram_loss(jnp.maximum(shown, floor), jnp.maximum(self.unit[notes], floor),
                                self.weights[notes])


def model_for(config: ml_collections.ConfigDict, representation: Representation,
              instruments: int) -> TNCA:
    """The conditioned TNCA of a config for `instruments` instruments (untrained)."""
    return TNCA.from_config(config, representation.n_bins, representation.n_values,
                            instruments=instruments, pitch_features=PITCH_FEATURES,
                            note_time_features=NOTE_TIME_FEATURES)


def _ridge_solve(design: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """argmin_W |design W - targets|^2 + LEVEL_RIDGE |W|^2 (columns of targets solved apart):
    [M, K], [M, Q] -> [K, Q]."""
    gram = design.T @ design + LEVEL_RIDGE * np.eye(design.shape[1])
    return np.linalg.solve(gram, design.T @ targets)


def fit_envelopes(notes: NoteSet) -> np.ndarray:
    """Each instrument's envelope over a note, per band: what is left of its training notes
    once each note's own mean is taken away, ~ time_n[t] @ e[i, v, f] (least squares over all
    their frames, ridge-regularised). Returns e [I, V, F, K] for
    `tnca_jax.model.Conditioner.level_time`."""
    representation = notes.representation
    envelope = np.zeros((len(notes.instruments), representation.n_values,
                         representation.n_bins, NOTE_TIME_FEATURES), np.float32)
    time = np.asarray(notes.condition(notes.training).time)  # [N, T, K]
    units = [np.asarray(representation.to_unit(jnp.asarray(n.features))) for n in notes.training]
    for i, instrument in enumerate(notes.instruments):
        mine = [k for k, n in enumerate(notes.training) if n.instrument == instrument]
        frames = np.concatenate([time[k, :units[k].shape[-1]] for k in mine])  # [M, K]
        for v in range(representation.n_values):
            left = np.concatenate([(units[k][v] - units[k][v].mean(axis=-1, keepdims=True)).T
                                   for k in mine])  # [M, F]
            envelope[i, v] = _ridge_solve(frames, left).T
    return envelope


def pool_targets(pool_size: int, notes: int, left_out_share: float) -> np.ndarray:
    """[pool_size] int32 the target each pool entry grows (`NoteTargets` rows): every note in
    turn, round after round; `left_out_share` of the rounds (spread evenly) with the notes'
    left-out priors, the others with their own."""
    entry = np.arange(pool_size)
    round_ = entry // notes
    left_out = np.floor((round_ + 1) * left_out_share) > np.floor(round_ * left_out_share)
    return (entry % notes + notes * left_out).astype(np.int32)


def create_train_state(config: ml_collections.ConfigDict, notes: NoteSet, targets: NoteTargets,
                       *, mesh: Mesh | None = None
                       ) -> tuple[nnx.GraphDef, nnx.State, NotePool]:
    """Fresh (graphdef, model + optimizer state, pool): the envelopes fitted
    (`fit_envelopes`), the pool seeded with every target (`NoteTargets`) in turn."""
    model = model_for(config, notes.representation, len(notes.instruments))
    model.conditioner.level_time[...] = jnp.asarray(fit_envelopes(notes))
    optimizer = nnx.Optimizer(model, make_optimizer(config.train), wrt=nnx.Param)
    graphdef, train_state = nnx.split((model, optimizer))
    pool_notes = jnp.asarray(pool_targets(config.train.pool_size, len(notes.training),
                                          config.train.get("left_out_share", 0.5)))
    condition = jax.tree.map(lambda x: x[pool_notes], targets.condition)
    pool = NotePool(model.seed(notes.grid_frames, condition=condition), pool_notes)
    if mesh is not None:
        replicated, split = shardings(mesh)
        train_state = jax.device_put(train_state, replicated)
        pool = jax.device_put(pool, split)
    return graphdef, train_state, pool


def restorable_state(config: ml_collections.ConfigDict, representation: Representation,
                     instruments: int, grid_frames: int
                     ) -> tuple[nnx.GraphDef, nnx.State, NotePool]:
    """What a checkpoint of the timbre job restores into: (graphdef, a train state of the
    right structure, the pool's shapes) for `instruments` instruments on `grid_frames`
    frames (the pool as shapes only: restoring needs no memory for it beforehand)."""
    model = model_for(config, representation, instruments)
    optimizer = nnx.Optimizer(model, make_optimizer(config.train), wrt=nnx.Param)
    graphdef, train_state = nnx.split((model, optimizer))
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    pool = NotePool(
        jax.ShapeDtypeStruct((config.train.pool_size, representation.n_bins, grid_frames,
                              config.model.channels), jnp.float32, sharding=device),
        jax.ShapeDtypeStruct((config.train.pool_size,), jnp.int32, sharding=device))
    return graphdef, train_state, pool


def erase(states: jax.Array, condition: NoteCondition, key: jax.Array, damaged: jax.Array,
          frames_fraction: tuple[float, float]) -> jax.Array:
    """Damage: in each grid where `damaged` [B] is true, zero a block of `frames_fraction` of
    its note's frames (at a random place in the note) over all bands, or (half the time) over
    a random range of a quarter to a half of the bands. [B, F, T, C] -> the same."""
    batch, bands, frames, _ = states.shape
    length_key, start_key, band_key, width_key, all_key = jax.random.split(key, 5)
    note_frames = condition.note_frames
    low, high = frames_fraction
    length = jnp.floor(jax.random.uniform(length_key, (batch,), minval=low, maxval=high)
                       * note_frames)
    start = jnp.floor(jax.random.uniform(start_key, (batch,)) * (note_frames - length + 1))
    t = jnp.arange(frames)[None]
    in_frames = (t >= start[:, None]) & (t < (start + length)[:, None])  # [B, T]
    width = jnp.floor(jax.random.uniform(width_key, (batch,), minval=0.25, maxval=0.5) * bands)
    first = jnp.floor(jax.random.uniform(band_key, (batch,)) * (bands - width + 1))
    f = jnp.arange(bands)[None]
    in_bands = (((f >= first[:, None]) & (f < (first + width)[:, None]))
                | jax.random.bernoulli(all_key, 0.5, (batch, 1)))  # [B, F]
    hole = in_bands[:, :, None] & in_frames[:, None, :] & damaged[:, None, None]
    return jnp.where(hole[..., None], 0.0, states)


def make_train_step(graphdef: nnx.GraphDef, config: ml_collections.ConfigDict,
                    targets: NoteTargets, *, mesh: Mesh | None = None):
    """The jitted step: (train_state, pool) -> (train_state, pool, metrics), step n's
    randomness `fold_in(key(config.seed), n)`; with `mesh`, pool and batch split over it."""
    split = None if mesh is None else shardings(mesh)[1]

    def split_batch(x):
        return x if split is None else jax.lax.with_sharding_constraint(x, split)

    train_config = config.train
    batch_size, max_steps = train_config.batch_size, train_config.max_steps
    damage = train_config.get("damage", 0)
    damage_frames = tuple(train_config.get("damage_frames", (0.1, 0.3)))
    multiscale = train_config.get("multiscale_weight", 0.0)
    temporal = train_config.get("temporal_weight", 0.0)
    base_key = jax.random.key(config.seed)

    def train_step(train_state: nnx.State, pool: NotePool):
        model, optimizer = nnx.merge(graphdef, train_state)
        model_def, params = nnx.split(model)
        key = jax.random.fold_in(base_key, optimizer.step[...])
        pick_key, steps_key, grow_key, damage_key = jax.random.split(key, 4)
        index = jax.random.choice(pick_key, pool.notes.shape[0], (batch_size,), replace=False)
        notes = split_batch(pool.notes[index])
        batch = split_batch(pool.states[index])
        condition = jax.tree.map(lambda x: x[notes], targets.condition)
        unit = targets.unit[notes]
        per_sample = targets.loss(model.spectrogram(batch, condition), notes)
        order = jnp.argsort(per_sample)
        batch = batch.at[order[-1]].set(model.seed(batch.shape[2], condition=condition)
                                        [order[-1]])
        if damage:
            damaged = jnp.zeros(batch_size, bool).at[order[:damage]].set(True)
            batch = erase(batch, condition, damage_key, damaged, damage_frames)
        batch = split_batch(batch)
        steps = jax.random.randint(steps_key, (), train_config.min_steps, max_steps + 1)
        cells = jnp.sum(condition.mask) * batch.shape[1]

        def loss_fn(params):
            grown = grow(model_def, params, batch, grow_key, max_steps, active_steps=steps,
                         condition=condition)
            shown = nnx.merge(model_def, params).spectrogram(grown, condition)
            growth = jnp.sum(jax.nn.relu(1.0 - grown[..., ALPHA])
                             * condition.mask[:, None]) / cells
            loss = (targets.loss(shown, notes).mean()
                    + train_config.growth_weight * growth
                    + train_config.overflow_weight * overflow_penalty(grown))
            if multiscale:
                loss += multiscale * multiscale_l1(shown[:, 0], unit[:, 0])
            if temporal:
                loss += temporal * temporal_l1(shown[:, 0], unit[:, 0])
            grid_l1 = jnp.sum(jnp.abs(shown[:, 0] - unit[:, 0])) / cells
            return loss, (grown, grid_l1)

        (loss, (grown, grid_l1)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        optimizer.update(model, grads)
        finite, new_state = keep_if_finite(loss, grads, nnx.state((model, optimizer)),
                                           train_state)
        new_pool = NotePool(pool.states.at[index].set(jnp.where(finite, grown, pool.states[index])),
                            pool.notes)
        living = jnp.sum((grown[..., ALPHA] > ALIVE_THRESHOLD) * condition.mask[:, None]) / cells
        metrics = {"loss": loss, "grid_l1": grid_l1, "living_fraction": living,
                   "finite": finite}
        return new_state, new_pool, metrics

    return jit_train_step(train_step, mesh)


def run_description(notes: NoteSet) -> dict:
    """run.json's "timbre" section: the instruments (embedding order), every note and the
    prior's table (the training notes' spectra, in the order of the training notes)."""
    return {"instruments": list(notes.instruments),
            "notes": [note.to_dict() for note in notes.notes],
            "prior": notes.prior.to_dict()}


def plan_training(config: ml_collections.ConfigDict, notes: NoteSet) -> TrainProgram:
    """The compiled train program of the timbre job on `notes` (`tnca_jax.train.train` runs
    it; see `tnca_jax.train.compile_program`)."""
    mesh = data_mesh(config.train)
    targets = NoteTargets.create(notes)
    representation = notes.representation
    return compile_program(
        config, mesh, lambda: create_train_state(config, notes, targets, mesh=mesh),
        lambda graphdef: make_train_step(graphdef, config, targets, mesh=mesh),
        lambda workdir: workdir.write_run(config, representation.contract, notes.grid_frames,
                                          timbre=run_description(notes)),
        representation.unit_span_db)
