"""Training a TNCA on a `NoteSet`: one train state, one step and one program for both jobs (one
recording, or many notes of several instruments with a conditioned model). They differ only in
their data (`Targets`) and in whether the model is told each note (`NoteCondition`).

The train state (model + optimizer) and the sample pool are made in one place,
`create_train_state`. The pool holds grids and the target each grows (`NotePool`); a `note`
job's pool grows its one target. An `instruments` job's training notes are each a target
twice (`Targets.create`): with its own spectrum as its prior (how a seen note is generated) and
with the prior drawn from the other notes (how a pitch with no note of its own is), so the cells
learn to correct a prior that is off; `train.left_out_share` of the pool grows the second kind.

Each step (one `jax.jit`, its PRNG key folded from the optimizer's iteration count inside it):
1. draws a batch from the pool, with each entry's target and condition; the worst of the batch
   is reseeded, and the `train.damage` best have a random block of frames (and, half the time,
   only a range of bands) erased, as Growing NCA damages its best samples;
2. grows it for `max_growth_steps` with `lax.scan`, keeping the state at a step sampled from
   [min_growth_steps, max_growth_steps] (one compiled rollout serves every length);
3. takes the TNCA loss (`tnca_jax.losses.tnca_loss`), normalises each parameter's gradient to
   unit L2 norm (Growing NCA), then Adam with a decaying rate (`make_optimizer`);
4. writes the grown grids back to the pool; a non-finite iteration is rejected
   (`tnca_jax.training.keep_if_finite`).
`tnca_jax.training.train` runs the program (`plan_training`): checkpoints, resume, retries.

A note's resting level: a `note` job's model starts each band's level at its recording's mean
(and learns it) plus the recording's envelope over the note; a conditioned model's level is
its prior (`tnca_jax.priors.SpectrumPrior`) plus each instrument's envelope over a note. The
envelopes are fitted by least squares (`fit_envelopes`) and left as they are by the optimizer
(`tnca_jax.model.FixedLevel`): a note starts and ends as quietly as its recordings do.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh

from tnca_jax.cells import ALIVE_THRESHOLD, ALPHA
from tnca_jax.conditioning import PITCH_FEATURES
from tnca_jax.losses import (
    TOP_DB,
    BatchTarget,
    LossWeights,
    frequency_weights,
    masked_mean,
    tnca_loss,
)
from tnca_jax.model import NOTE_TIME_FEATURES, TNCA, NoteCondition, grow, note_time_features
from tnca_jax.notes import NoteSet
from tnca_jax.representations import Representation
from tnca_jax.settings import ModelSettings, TncaSettings, TrainSettings, require
from tnca_jax.training import (
    GraphDefs,
    TrainProgram,
    TrainState,
    compile_program,
    data_mesh,
    jit_train_step,
    keep_if_finite,
    merge_state,
    scale_by_scaled_schedule,
    shardings,
    split_state,
)
from tnca_jax.workdir import Workdir

LEVEL_RIDGE = 1e-3  # ridge on the envelope fit (few notes per instrument)
MEMORY_KNOBS = ("--config.train.batch_size, --config.train.max_growth_steps, "
                "--config.train.pool_size or --config.data.max_seconds")


class NotePool(NamedTuple):
    """The sample pool: grids [P, F, T, C] and the target each grows (a row of `Targets`),
    [P] int32."""

    states: jax.Array
    notes: jax.Array


class Targets(NamedTuple):
    """Every target a pool entry can grow, stacked (N rows): normalised spectrograms
    [N, V, F, T] (silence past each note's end), their loss weights [N, V, F, T] (zero past the
    end), and for a conditioned model the conditions (batch N) and each target's floor
    [N, V, 1, 1] (TOP_DB below its peak, where the loss stops telling levels apart, as
    mel_l1_db does); the recordings [N, samples] where the loss renders audio."""

    unit: jax.Array
    weights: jax.Array
    condition: NoteCondition | None
    floor: jax.Array | None
    audio: jax.Array | None

    @classmethod
    def create(cls, notes: NoteSet, *, with_audio: bool = False) -> Targets:
        """A `note` set's one target; an `instruments` set's training notes, each first with
        its own prior, then with the prior drawn without it (`NoteSet.condition`)."""
        training = notes.training
        unit = notes.unit(training)
        if not notes.conditioned:
            audio = jnp.asarray(training[0].audio)[None] if with_audio else None
            return cls(unit, frequency_weights(unit[0])[None], None, None, audio)
        weights = np.zeros(unit.shape, np.float32)
        for i, note in enumerate(training):
            weights[i, ..., :note.n_frames] = frequency_weights(unit[i, ..., :note.n_frames])
        floor = (jnp.max(unit, axis=(-2, -1), keepdims=True)
                 - TOP_DB / notes.representation.unit_span_db)
        condition = jax.tree.map(lambda *x: jnp.concatenate(x), notes.condition(training),
                                 notes.condition(training, leave_out=True))
        unit, weights, floor = (jnp.concatenate([x, x])
                                for x in (unit, jnp.asarray(weights), floor))
        return cls(unit, weights, condition, floor, None)

    def batch(self, notes: jax.Array) -> tuple[BatchTarget, NoteCondition | None]:
        """The targets of pool entries growing `notes` [B], and their condition."""
        condition = (None if self.condition is None
                     else jax.tree.map(lambda x: x[notes], self.condition))
        return BatchTarget(
            unit=self.unit[notes], weights=self.weights[notes],
            floor=None if self.floor is None else self.floor[notes],
            mask=None if condition is None else condition.mask,
            audio=None if self.audio is None else self.audio[notes]), condition


def new_model(model: ModelSettings, seed: int, representation: Representation,
              instruments: int) -> TNCA:
    """An untrained TNCA of these sizes (conditioned on notes of `instruments` instruments
    when that is > 0; else following a note's envelope over its frames)."""
    conditioned = instruments > 0
    contract = representation.contract
    return TNCA(representation.n_bins, n_values=representation.n_values,
                channels=model.channels, hidden=model.hidden, fire_rate=model.fire_rate,
                seed_spacing=model.seed_spacing, time_frequencies=model.time_frequencies,
                instruments=instruments,
                pitch_features=PITCH_FEATURES if conditioned else 0,
                note_time_features=NOTE_TIME_FEATURES if conditioned else 0,
                frame_seconds=contract.hop_length / contract.sample_rate,
                rngs=nnx.Rngs(seed))


def make_optimizer(train: TrainSettings) -> optax.GradientTransformation:
    """Per-variable gradient normalisation, then Adam whose rate decays exponentially to
    `final_lr_fraction` (after a linear warm-up over `warmup_iterations`, if any), times the
    retry scale (`tnca_jax.training.scale_by_scaled_schedule`)."""
    if train.warmup_iterations:
        schedule = optax.warmup_exponential_decay_schedule(
            0.0, train.learning_rate, train.warmup_iterations,
            transition_steps=max(train.iterations - train.warmup_iterations, 1),
            decay_rate=train.final_lr_fraction)
    else:
        schedule = optax.exponential_decay(
            train.learning_rate, transition_steps=max(train.iterations, 1),
            decay_rate=train.final_lr_fraction)
    return optax.chain(normalize_per_variable(), optax.scale_by_adam(),
                       scale_by_scaled_schedule(schedule))


def normalize_per_variable(eps: float = 1e-8) -> optax.GradientTransformation:
    """Scale each parameter's gradient to unit L2 norm (Growing NCA)."""

    def update_fn(updates, state, params=None):
        del params
        return jax.tree.map(lambda g: g / (jnp.linalg.norm(g) + eps), updates), state

    return optax.GradientTransformation(lambda _: optax.EmptyState(), update_fn)


def _ridge_solve(design: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """argmin_W |design W - targets|^2 + LEVEL_RIDGE |W|^2 (columns of targets solved apart):
    [M, K], [M, Q] -> [K, Q]."""
    gram = design.T @ design + LEVEL_RIDGE * np.eye(design.shape[1])
    return np.linalg.solve(gram, design.T @ targets)


def fit_envelopes(notes: NoteSet) -> np.ndarray:
    """Each instrument's envelope over a note (a `note` set's: its one note's), per band: what
    is left of its training notes once each note's own mean is taken away,
    ~ note_time_features[t] @ e[i, v, f] (least squares over all their frames,
    ridge-regularised). Returns e [I (1 for a note set), V, F, K] for the model's
    `level_time`."""
    representation = notes.representation
    contract = representation.contract
    frame_seconds = contract.hop_length / contract.sample_rate
    training = notes.training
    groups = ([[k for k, n in enumerate(training) if n.instrument == i]
               for i in notes.instruments] if notes.conditioned else [list(range(len(training)))])
    envelope = np.zeros((len(groups), representation.n_values, representation.n_bins,
                         NOTE_TIME_FEATURES), np.float32)
    units = [np.asarray(representation.to_unit(jnp.asarray(n.features))) for n in training]
    times = [note_time_features(n.n_frames, n.n_frames, frame_seconds) for n in training]
    for i, mine in enumerate(groups):
        frames = np.concatenate([times[k] for k in mine])  # [M, K]
        for v in range(representation.n_values):
            left = np.concatenate([(units[k][v] - units[k][v].mean(axis=-1, keepdims=True)).T
                                   for k in mine])  # [M, F]
            envelope[i, v] = _ridge_solve(frames, left).T
    return envelope


def pool_targets(pool_size: int, notes: int, left_out_share: float) -> np.ndarray:
    """[pool_size] int32 the target each pool entry grows (`Targets` rows of `notes` training
    notes): every note in turn, round after round; `left_out_share` of the rounds (spread
    evenly) with the notes' left-out priors (rows notes..2 notes-1), the others with their own."""
    entry = np.arange(pool_size)
    round_ = entry // notes
    left_out = np.floor((round_ + 1) * left_out_share) > np.floor(round_ * left_out_share)
    return (entry % notes + notes * left_out).astype(np.int32)


def create_train_state(settings: TncaSettings, notes: NoteSet, targets: Targets, *,
                       mesh: Mesh | None = None) -> tuple[GraphDefs, TrainState, NotePool]:
    """Fresh (graphdefs, model + optimizer state, pool), the model's level started from the
    notes (see the module docstring), the pool seeded with every target in turn."""
    model = new_model(settings.model, settings.seed, notes.representation,
                      len(notes.instruments))
    train = settings.train
    if notes.conditioned:
        model.conditioner.level_time[...] = jnp.asarray(fit_envelopes(notes))
        pool_notes = jnp.asarray(pool_targets(train.pool_size, len(notes.training),
                                              train.left_out_share))
        condition = jax.tree.map(lambda x: x[pool_notes], targets.condition)
        states = model.seed(notes.grid_frames, condition=condition)
    else:
        model.band_level[...] = targets.unit[0].mean(axis=-1)
        model.level_time[...] = jnp.asarray(fit_envelopes(notes)[0])
        pool_notes = jnp.zeros(train.pool_size, jnp.int32)
        states = model.seed(notes.grid_frames, train.pool_size)
    graphdefs, state = split_state(model, nnx.Optimizer(model, make_optimizer(train),
                                                        wrt=nnx.Param))
    pool = NotePool(states, pool_notes)
    if mesh is not None:
        replicated, split = shardings(mesh)
        state, pool = jax.device_put(state, replicated), jax.device_put(pool, split)
    return graphdefs, state, pool


def erase(states: jax.Array, note_frames: jax.Array, key: jax.Array, damaged: jax.Array,
          frames_fraction: tuple[float, float]) -> jax.Array:
    """Damage: in each grid where `damaged` [B] is true, zero a block of `frames_fraction` of
    its note's frames (`note_frames` [B], at a random place in the note) over all bands, or
    (half the time) over a random range of a quarter to a half of the bands.
    [B, F, T, C] -> the same."""
    batch, bands, frames, _ = states.shape
    length_key, start_key, band_key, width_key, all_key = jax.random.split(key, 5)
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


def make_train_step(graphdefs: GraphDefs, settings: TncaSettings, targets: Targets,
                    representation: Representation, mesh: Mesh, *,
                    vocoder: Callable[[jax.Array], jax.Array] | None = None):
    """The jitted step: (state, pool) -> (state, pool, metrics), iteration n's randomness
    `fold_in(key(settings.seed), n)`; the pool and batch split over `mesh`, the rest
    replicated. Metrics: loss, grid_l1_db (the shown grid against the target, dB),
    living_fraction, finite. `vocoder`: the differentiable vocoder the audio losses render a
    mel grid through (None: the representation's own differentiable `audio`)."""
    split = shardings(mesh)[1]

    def split_batch(x: jax.Array) -> jax.Array:
        # Without the constraint XLA would gather pool rows into a replicated batch.
        return jax.lax.with_sharding_constraint(x, split)

    train = settings.train
    weights = LossWeights(growth=train.growth_weight, overflow=train.overflow_weight,
                          multiscale=train.multiscale_weight, temporal=train.temporal_weight,
                          audio=train.audio_weight, waveform=train.waveform_weight,
                          audio_griffinlim_iterations=train.audio_griffinlim_iterations)
    if weights.uses_audio and targets.audio is None:
        raise ValueError("audio-domain losses need the target recording")
    span_db = representation.unit_span_db
    base_key = jax.random.key(settings.seed)

    def train_step(state: TrainState, pool: NotePool):
        model, optimizer = merge_state(graphdefs, state)
        model_def, params = nnx.split(model)
        key = jax.random.fold_in(base_key, optimizer.step[...])
        pick_key, steps_key, grow_key, extra_key = jax.random.split(key, 4)
        index = jax.random.choice(pick_key, pool.notes.shape[0], (train.batch_size,),
                                  replace=False)
        notes = split_batch(pool.notes[index])
        batch = split_batch(pool.states[index])
        target, condition = targets.batch(notes)
        per_sample = target.per_sample(model.spectrogram(batch, condition))
        worst = jnp.argmax(per_sample)
        frames = batch.shape[2]
        seed = (model.seed(frames)[0] if condition is None
                else model.seed(frames, condition=condition)[worst])
        batch = batch.at[worst].set(seed)
        if train.damage:
            damaged = jnp.zeros(train.batch_size, bool).at[
                jnp.argsort(per_sample)[:train.damage]].set(True)
            note_frames = (jnp.full(train.batch_size, frames) if condition is None
                           else condition.note_frames)
            batch = erase(batch, note_frames, extra_key, damaged, train.damage_frames)
        batch = split_batch(batch)
        steps = jax.random.randint(steps_key, (), train.min_growth_steps,
                                   train.max_growth_steps + 1)

        def loss_fn(params):
            grown = grow(model_def, params, batch, grow_key, train.max_growth_steps,
                         active_steps=steps, condition=condition)
            shown = nnx.merge(model_def, params).spectrogram(grown, condition)
            loss = tnca_loss(shown, grown, target, weights, extra_key,
                             representation=representation, vocoder=vocoder)
            grid_l1 = masked_mean(jnp.abs(shown[:, 0] - target.unit[:, 0]), target.mask)
            return loss, (grown, grid_l1)

        (loss, (grown, grid_l1)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        optimizer.update(model, grads)
        finite, new_state = keep_if_finite(loss, grads, TrainState(nnx.state(model),
                                                                   nnx.state(optimizer)), state)
        new_pool = NotePool(pool.states.at[index].set(jnp.where(finite, grown,
                                                                pool.states[index])),
                            pool.notes)
        living = masked_mean((grown[..., ALPHA] > ALIVE_THRESHOLD).astype(jnp.float32),
                             target.mask)
        metrics = {"loss": loss, "grid_l1_db": grid_l1 * span_db, "living_fraction": living,
                   "finite": finite}
        return new_state, new_pool, metrics

    return jit_train_step(train_step, mesh)


def plan_training(settings: TncaSettings, notes: NoteSet,
                  describe: Callable[[Workdir], None], *,
                  vocoder: Callable[[jax.Array], jax.Array] | None = None) -> TrainProgram:
    """The compiled train program of a TNCA job on `notes` (`tnca_jax.training.train` runs
    it; see `tnca_jax.training.compile_program`); `describe` writes its run.json."""
    train = settings.train
    mesh = data_mesh({"train.batch_size": train.batch_size, "train.pool_size": train.pool_size})
    targets = Targets.create(notes, with_audio=train.uses_audio)
    require(train.pool_size >= len(targets.unit), "train.pool_size", train.pool_size,
            f"must hold every target at least once ({len(targets.unit)}: each of the "
            f"{len(notes.training)} training notes with its own and its left-out prior)")
    representation = notes.representation
    return compile_program(
        train, mesh, lambda: create_train_state(settings, notes, targets, mesh=mesh),
        lambda graphdefs: make_train_step(graphdefs, settings, targets, representation, mesh,
                                          vocoder=vocoder),
        describe, MEMORY_KNOBS)
