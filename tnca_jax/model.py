"""The timbre NCA: a grid of cells over (mel band, frame) that grows a log-mel spectrogram.

State layout: `[batch, bins, frames, channels]` (frequency rows: mel bands or STFT bins; time
columns). Channel 0 is the grown value: a living cell shows its band's level plus this value as
the representation (log-mel or log magnitude), normalised to [0, 1] (0 is silence, dead cells
are silent); channel 1 is alpha, which marks living cells; channel 2 is the clock (see below);
the rest are hidden. A representation with more values (`mag_if`'s instantaneous frequency)
grows them in channels 3, 4, ... (`value_channels`).

One step (`tnca_jax.cells.growth_step`): perceive the 3x3 neighbourhood, update each cell that
fires by the MLP of `UpdateRule` (given what the cell knows of where it sits: its band's learned
embedding, and for a conditioned TNCA the note's instrument, pitch and time, `Conditioner`),
keep the cells with a living neighbour.

Growth starts from a few seed columns (the onset, then every `spacing` frames; all bands
alive there). Each seed column carries its place in the note in one hidden channel; the cells
between seeds must grow the note's temporal structure (attack, body, decay) from those sparse
cues and from their neighbours. A 3x3 neighbourhood spreads at most one cell per step, so
seeds `spacing` frames apart fill the grid in about `spacing / fire_rate` steps instead of
`frames / fire_rate` from a single onset column.
"""

from __future__ import annotations

import itertools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tnca_jax.cells import (
    ALIVE_THRESHOLD,
    ALPHA,
    CLOCK,
    NUM_FILTERS,
    CellContext,
    UpdateWeights,
    growth_step,
    value_channels,
)


class NoteCondition(NamedTuple):
    """What a conditioned TNCA (one model for many notes, `TNCA(instruments=...)`) is told of
    each note of a batch: its instrument(s), pitch and length. Built by
    `tnca_jax.conditioning.note_condition`; the grid is `frames` long, the note may be
    shorter (frames past its end stay dead and silent).

    Attributes:
      instrument: [B, T, I] instrument weights per frame (one-hot: the note's instrument).
      pitch: [B, F, P] each frequency row's place relative to the note's f0
        (`conditioning.band_pitch_features`).
      time: [B, T, K] each frame's place in the note (`conditioning.note_time_features`).
      mask: [B, T] 1 on the note's frames, 0 after its end.
      prior: [B, I, n_values, F] per instrument, the note's expected time-averaged spectrum
        (normalised; `conditioning.SpectrumPrior`), where its resting level starts.
    """

    instrument: jax.Array
    pitch: jax.Array
    time: jax.Array
    mask: jax.Array
    prior: jax.Array

    @property
    def note_frames(self) -> jax.Array:
        """[B] frames of each note."""
        return jnp.sum(self.mask, axis=-1)


POSITION_COSINES = 8
EDGE_SECONDS = (0.03, 0.1, 0.3, 1.0)  # time constants of the onset and release features
NOTE_TIME_FEATURES = POSITION_COSINES + 2 * len(EDGE_SECONDS)


def time_features(n_frames: int, count: int) -> np.ndarray:
    """[T, count] cosines cos(pi k (t + 0.5) / T), k = 1..count, of each frame's place in the
    note: a smooth basis in which a cell's position (onset, body, release) is a vector."""
    position = (np.arange(n_frames) + 0.5) / n_frames
    return np.cos(np.pi * np.outer(position, np.arange(1, count + 1))).astype(np.float32)


def note_time_features(note_frames: int, grid_frames: int, frame_seconds: float
                       ) -> np.ndarray:
    """[grid_frames, NOTE_TIME_FEATURES] float32 of a note of `note_frames` frames (0 past its
    end): POSITION_COSINES cosines of the place in the note, then exp(-seconds since the onset
    / tau) and exp(-seconds until the end / tau) for tau in EDGE_SECONDS: a basis in which a
    note's attack and release keep their length in seconds whatever the note's length."""
    frames = np.arange(note_frames)
    since = frames * frame_seconds
    until = (note_frames - 1 - frames) * frame_seconds
    edges = [np.exp(-since[:, None] / np.asarray(EDGE_SECONDS)),
             np.exp(-until[:, None] / np.asarray(EDGE_SECONDS))]
    features = np.concatenate([time_features(note_frames, POSITION_COSINES), *edges], axis=1)
    out = np.zeros((grid_frames, NOTE_TIME_FEATURES), np.float32)
    out[:note_frames] = features
    return out


class UpdateRule(nnx.Module):
    """The per-cell MLP's parameters (perception [B, F, T, 4C] -> state change [B, F, T, C])
    and the embedding of each frequency row; applied by `growth_step`."""

    def __init__(self, channels: int, hidden: int, n_bands: int, *, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(NUM_FILTERS * channels, hidden, rngs=rngs)
        # Frequency-position input: a learned vector per mel band, added before the ReLU.
        self.band_embedding = nnx.Param(jnp.zeros((n_bands, hidden)))
        self.out = nnx.Linear(hidden, channels, kernel_init=nnx.initializers.zeros, rngs=rngs)

    @property
    def weights(self) -> UpdateWeights:
        return UpdateWeights(self.hidden.kernel[...], self.hidden.bias[...],
                             self.out.kernel[...], self.out.bias[...])


class FixedLevel(nnx.Variable):
    """A level fitted before training that the optimizer (which trains `nnx.Param`s) leaves
    as it is; saved and restored with the model."""


class Conditioner(nnx.Module):
    """The learned maps of a conditioned TNCA: a `NoteCondition` -> every cell's context and
    every cell's resting level.

    Context (added to the update MLP's hidden layer, see `CellContext`): frequency part
    band_embedding[f] + pitch[b, f] @ pitch_map; time part time[b, t] @ time_map +
    instrument[b, t] @ instrument_embedding.
    Level (what a living cell shows when its value is 0, normalised): per instrument i,
    level_i[v, f, t] = prior[b, i, v, f] + time[b, t] @ level_time[i, v, f] (the note's
    expected spectrum and the instrument's envelope over a note, fitted before training and
    then left as they are: `FixedLevel`), weighted by the frame's instrument weights (one-hot
    in training and growth: `tnca_jax.timbre` morphs by mixing what single instruments grow).
    The cells learn everything else. The level has no term fitted to the pitch features: one
    fitted to a few notes extrapolates badly to a new pitch (20 dB off on a flute note five
    semitones above its highest); the prior follows the pitch instead.
    """

    def __init__(self, instruments: int, pitch_features: int, time_features_count: int,
                 hidden: int, n_bands: int, n_values: int):
        self.instrument_embedding = nnx.Param(jnp.zeros((instruments, hidden)))
        self.pitch_map = nnx.Param(jnp.zeros((pitch_features, hidden)))
        self.time_map = nnx.Param(jnp.zeros((time_features_count, hidden)))
        self.level_time = FixedLevel(jnp.zeros((instruments, n_values, n_bands,
                                                time_features_count)))

    def context(self, band_embedding: jax.Array, condition: NoteCondition) -> CellContext:
        frequency = band_embedding[None] + condition.pitch @ self.pitch_map[...]
        time = (condition.time @ self.time_map[...]
                + condition.instrument @ self.instrument_embedding[...])
        return CellContext(frequency, time)

    def level(self, condition: NoteCondition) -> jax.Array:
        """[B, n_values, F, T] the resting level of every cell."""
        envelope = jnp.einsum("btk,ivfk->bivft", condition.time, self.level_time[...])
        return jnp.einsum("bti,bivft->bvft", condition.instrument,
                          condition.prior[..., None] + envelope)


class TNCA(nnx.Module):
    """One stochastic growth step: state [B, F, T, C] -> state [B, F, T, C].

    `band_level` [n_values, F] is each band's resting level (normalised) that a living cell
    shows when its value channel is 0; trainers start it at the target's per-band mean so the
    cells spend their capacity on what changes over the note (see `spectrogram`). With
    `frame_seconds` (a frame's length; 0: off) the level also follows the note's envelope:
    `note_time_features` @ `level_time` [n_values, F, NOTE_TIME_FEATURES], fitted to the
    recording before training and left as it is (`FixedLevel`), so that a note starts and
    ends as quietly as the recording does before the cells learn anything.
    `n_values`: grown values per cell (1, or 2 for `mag_if`; see `value_channels`).
    `time_frequencies`: cosines of each frame's place in the note (`time_features`) that a
    learned map turns into the time part of every cell's context (0: cells learn their place
    only from the seed columns' clock and their neighbours).
    `instruments` > 0 makes a conditioned TNCA (one model for many notes): every call then
    takes a `NoteCondition`, and the cells' context and level come from its `Conditioner`
    (`pitch_features` and `note_time_features` per row and frame) instead of `band_level` and
    `time_frequencies`.
    """

    def __init__(self, n_bands: int, *, n_values: int = 1, channels: int = 16,
                 hidden: int = 128, fire_rate: float = 0.5, seed_spacing: int = 8,
                 time_frequencies: int = 0, instruments: int = 0, pitch_features: int = 0,
                 note_time_features: int = 0, frame_seconds: float = 0.0, rngs: nnx.Rngs):
        self.check_sizes(channels, n_values)
        if not 0 < fire_rate <= 1 or seed_spacing < 1:
            raise ValueError("fire_rate must be in (0, 1] and seed_spacing at least 1")
        self.n_bands = n_bands
        self.n_values = n_values
        self.channels = channels
        self.fire_rate = fire_rate
        self.seed_spacing = seed_spacing
        self.update_rule = UpdateRule(channels, hidden, n_bands, rngs=rngs)
        self.band_level = nnx.Param(jnp.zeros((n_values, n_bands)))
        self.time_frequencies = time_frequencies
        if time_frequencies:
            self.time_embedding = nnx.Param(jnp.zeros((time_frequencies, hidden)))
        self.instruments = instruments
        self.conditioner = (Conditioner(instruments, pitch_features, note_time_features,
                                        hidden, n_bands, n_values) if instruments else None)
        self.frame_seconds = 0.0 if instruments else frame_seconds
        if self.frame_seconds:
            self.level_time = FixedLevel(jnp.zeros((n_values, n_bands, NOTE_TIME_FEATURES)))

    @staticmethod
    def check_sizes(channels: int, n_values: int) -> None:
        """ValueError unless `channels` hold `n_values` values, alpha, the clock and a hidden
        channel."""
        if n_values < 1:
            raise ValueError(f"a TNCA grows at least one value, not {n_values}")
        if channels < 4 or channels <= max(value_channels(n_values)) + 1:
            raise ValueError(f"channels={channels}: a TNCA needs at least 4 channels (value, "
                             "alpha, clock, hidden), and a hidden channel beside its values")

    @property
    def conditioned(self) -> bool:
        """Whether this TNCA grows many notes (calls take a `NoteCondition`)."""
        return self.conditioner is not None

    def _check_condition(self, condition: NoteCondition | None) -> None:
        if self.conditioned != (condition is not None):
            raise ValueError("a conditioned TNCA (instruments > 0) needs a NoteCondition, and "
                             "a single-note TNCA takes none")

    def seed(self, n_frames: int, batch: int = 1, condition: NoteCondition | None = None
             ) -> jax.Array:
        """This model's starting grid for a note of `n_frames` frames (see `seed_state`); with
        a condition, one grid per note of the condition (`batch` ignored), seeded over each
        note's own frames (`note_seed_state`)."""
        self._check_condition(condition)
        if condition is not None:
            return note_seed_state(self.n_bands, n_frames, self.channels, condition.mask,
                                   spacing=self.seed_spacing, n_values=self.n_values)
        return seed_state(self.n_bands, n_frames, self.channels, batch,
                          spacing=self.seed_spacing, n_values=self.n_values)

    def level(self, n_frames: int, condition: NoteCondition | None = None) -> jax.Array:
        """The resting level of every cell of a grid of `n_frames` frames, normalised:
        [n_values, F, 1 or n_frames] (single note) or [B, n_values, F, T] (from the
        condition)."""
        self._check_condition(condition)
        if condition is not None:
            return self.conditioner.level(condition)
        level = self.band_level[...][:, :, None]
        if not self.frame_seconds:
            return level
        time = note_time_features(n_frames, n_frames, self.frame_seconds)
        return level + jnp.einsum("tk,vfk->vft", time, self.level_time[...])

    def spectrogram(self, state: jax.Array, condition: NoteCondition | None = None
                    ) -> jax.Array:
        """The normalised representation in [0, 1] shown by a grid: [B, F, T, C] ->
        [B, n_values, F, T].

        Living cells show their level (`level`) + value; dead cells show 0 (silence).
        """
        alive = state[:, None, :, :, ALPHA] > ALIVE_THRESHOLD
        values = jnp.moveaxis(state[..., list(value_channels(self.n_values))], -1, 1)
        level = self.level(state.shape[2], condition) + values
        return jnp.where(alive, jnp.clip(level, 0.0, 1.0), 0.0)

    def context(self, n_frames: int, condition: NoteCondition | None = None) -> CellContext:
        """Every cell's context on a grid of `n_frames` frames (shared by the batch; with a
        condition, one per note)."""
        self._check_condition(condition)
        band_embedding = self.update_rule.band_embedding[...]
        if condition is not None:
            return self.conditioner.context(band_embedding, condition)
        time = None
        if self.time_frequencies:
            time = (jnp.asarray(time_features(n_frames, self.time_frequencies))
                    @ self.time_embedding[...])[None]
        return CellContext(band_embedding[None], time)

    def __call__(self, state: jax.Array, key: jax.Array,
                 condition: NoteCondition | None = None) -> jax.Array:
        return growth_step(self.update_rule.weights, self.context(state.shape[2], condition),
                           state, key, frame_mask(condition), self.fire_rate)


def frame_mask(condition: NoteCondition | None) -> jax.Array | None:
    """[B, 1, T, 1] the note's frames (cells past a note's end stay dead), or None."""
    return None if condition is None else condition.mask[:, None, :, None]




def seed_frames(n_frames: int, spacing: int) -> np.ndarray:
    """Frames that hold a seed column: the onset, then every `spacing` frames."""
    return np.arange(0, n_frames, max(spacing, 1))


def seed_state(n_bands: int, n_frames: int, channels: int, batch: int = 1, *,
               spacing: int = 8, n_values: int = 1) -> jax.Array:
    """The starting grid [batch, F, T, C]: a few living seed columns, the rest empty.

    Seed columns stand at `seed_frames` (all bands): alpha and hidden channels 1, except the
    first hidden channel, which holds the column's place in the note (frame / n_frames), the
    only timing cue the cells get. The value channels (`value_channels(n_values)`) start at 0
    everywhere.
    """
    state = jnp.zeros((batch, n_bands, n_frames, channels), jnp.float32)
    frames = seed_frames(n_frames, spacing)
    state = state.at[:, :, frames, ALPHA:].set(1.0)
    for channel in value_channels(n_values)[1:]:
        state = state.at[:, :, frames, channel].set(0.0)
    return state.at[:, :, frames, CLOCK].set(jnp.asarray(frames / n_frames, jnp.float32))


def note_seed_state(n_bands: int, n_frames: int, channels: int, mask: jax.Array, *,
                    spacing: int = 8, n_values: int = 1) -> jax.Array:
    """`seed_state` for notes of different lengths on one grid of `n_frames` frames: [B, F, T,
    C] for the notes' frame masks [B, T]. Each note's seed columns stand at its onset and every
    `spacing` frames before its end, each holding its place in that note (frame / note
    frames); traceable, so a jitted step can reseed any note."""
    frames = jnp.arange(n_frames)
    note_frames = jnp.sum(mask, axis=-1, keepdims=True)  # [B, 1]
    seeded = ((frames % max(spacing, 1) == 0) & (frames < note_frames)).astype(jnp.float32)
    per_channel = np.ones(channels, np.float32)  # alpha and the hidden channels start at 1
    per_channel[[*value_channels(n_values), CLOCK]] = 0.0  # the values at 0; the clock below
    columns = seeded[..., None] * per_channel  # [B, T, C]
    columns = columns.at[..., CLOCK].set(seeded * frames / jnp.maximum(note_frames, 1))
    return jnp.broadcast_to(columns[:, None], (mask.shape[0], n_bands, n_frames, channels))


def grow(graphdef: nnx.GraphDef, params: nnx.State, state: jax.Array, key: jax.Array,
         steps: int, *, first_step: int = 0, active_steps: jax.Array | int | None = None,
         condition: NoteCondition | None = None) -> jax.Array:
    """Run `steps` growth steps with `lax.scan` (jit-compatible, pure).

    Args:
      graphdef, params: the split TNCA (`nnx.split(model)`).
      state: [B, F, T, C] starting grid.
      key: PRNG key; step i uses `fold_in(key, first_step + i)`, so growth split into
        pieces (see `grow_stages`) draws the same randomness as one uninterrupted run.
      steps: static scan length.
      first_step: index of the first step (for continuing a growth).
      active_steps: grow only this many of the `steps` (traced, so one compiled rollout serves
        every sampled length; the state then stays as it is); default all.
      condition: the notes of a conditioned TNCA (see `NoteCondition`), else None.

    Returns:
      [B, F, T, C] the state after min(steps, active_steps) steps.
    """
    model = nnx.merge(graphdef, params)
    weights, fire_rate = model.update_rule.weights, model.fire_rate
    context = model.context(state.shape[2], condition)
    mask = frame_mask(condition)

    def grown(current, i):
        return growth_step(weights, context, current, jax.random.fold_in(key, first_step + i),
                           mask, fire_rate)

    def step(current, i):
        if active_steps is None:
            return grown(current, i), None
        # The steps past `active_steps` are skipped, not computed and discarded (forward and
        # backward): a rollout sampled from [16, 24] steps costs 20 on average, not 24.
        return jax.lax.cond(i < active_steps, grown, lambda current, _: current, current,
                            i), None

    return jax.lax.scan(step, state, jnp.arange(steps))[0]


def grow_stages(graphdef: nnx.GraphDef, params: nnx.State, state: jax.Array, key: jax.Array,
                steps: int, num_stages: int, *, condition: NoteCondition | None = None
                ) -> jax.Array:
    """Grow and keep the shown spectrogram at `num_stages` evenly spaced steps.

    Returns [num_stages, B, n_values, F, T] normalised (see `TNCA.spectrogram`); the last stage
    is that of `grow(..., steps)`.
    """
    model = nnx.merge(graphdef, params)
    bounds = np.linspace(0, steps, num_stages + 1).astype(int)
    stages = []
    for start, stop in itertools.pairwise(bounds):
        state = grow(graphdef, params, state, key, int(stop - start), first_step=int(start),
                     condition=condition)
        stages.append(model.spectrogram(state, condition))
    return jnp.stack(stages)
