"""The timbre NCA: a grid of cells over (mel band, frame) that grows a log-mel spectrogram.

State layout: `[batch, bins, frames, channels]` (frequency rows: mel bands or STFT bins; time
columns). Channel 0 is the grown value: a living cell shows its band's level plus this value as
the representation (log-mel or log magnitude), normalised to [0, 1] (0 is silence, dead cells
are silent); channel 1 is alpha, which marks living cells; channel 2 is the clock (see below);
the rest are hidden. A representation with more values (`mag_if`'s instantaneous frequency)
grows them in channels 3, 4, ... (`value_channels`).

One step (Growing NCA, Distill 2020, adapted to spectrograms):
1. `Perception`: fixed depthwise 3x3 filters (identity, Sobel along time, Sobel along
   frequency, Laplacian). Kernels are not rotated: time and frequency are different axes.
2. `UpdateRule`: a per-cell MLP on the perception vector, plus a learned embedding of the
   cell's mel band (cells know which frequency they sit at); its last layer starts at zero.
3. Stochastic update: each cell applies its update with probability `fire_rate`.
4. Living mask: a cell lives while some cell in its 3x3 neighbourhood has alpha > 0.1, checked
   before and after the update.

Growth starts from a few seed columns (the onset, then every `spacing` frames; all bands
alive there). Each seed column carries its place in the note in one hidden channel; the cells
between seeds must grow the note's temporal structure (attack, body, decay) from those sparse
cues and from their neighbours. A 3x3 neighbourhood spreads at most one cell per step, so
seeds `spacing` frames apart fill the grid in about `spacing / fire_rate` steps instead of
`frames / fire_rate` from a single onset column.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

ALIVE_THRESHOLD = 0.1
VALUE, ALPHA, CLOCK = 0, 1, 2


def value_channels(n_values: int) -> tuple[int, ...]:
    """The state channels holding a representation's `n_values` grown values, in its order:
    channel 0, then 3, 4, ... (1 and 2 are alpha and the clock)."""
    return (VALUE, *range(CLOCK + 1, CLOCK + n_values))

# Perception kernels, indexed [filter, d_freq, d_time].
_SOBEL_TIME = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], np.float32) / 8
PERCEPTION_KERNELS = np.stack([
    np.pad([[1.0]], 1).astype(np.float32),  # identity
    _SOBEL_TIME,  # d/d(time)
    _SOBEL_TIME.T,  # d/d(frequency)
    np.array([[1, 2, 1], [2, -12, 2], [1, 2, 1]], np.float32) / 16,  # Laplacian
])
NUM_FILTERS = len(PERCEPTION_KERNELS)


def perceive(state: jax.Array) -> jax.Array:
    """Depthwise 3x3 filtering with zero padding: [B, F, T, C] -> [B, F, T, 4C].

    Written as shifted multiply-adds (XLA fuses them into one loop), which is faster than a
    depthwise convolution on CPU and as fast on GPU.
    """
    _, n_freq, n_time, _ = state.shape
    padded = jnp.pad(state, ((0, 0), (1, 1), (1, 1), (0, 0)))
    outputs = []
    for kernel in PERCEPTION_KERNELS:
        acc = None
        for df in range(3):
            for dt in range(3):
                if kernel[df, dt] == 0:
                    continue
                term = kernel[df, dt] * padded[:, df:df + n_freq, dt:dt + n_time, :]
                acc = term if acc is None else acc + term
        outputs.append(acc)
    return jnp.concatenate(outputs, axis=-1)


def alive_mask(state: jax.Array) -> jax.Array:
    """Cells with alpha > 0.1 somewhere in their 3x3 neighbourhood: [B, F, T, C] -> [B, F, T, 1]."""
    alpha = state[..., ALPHA:ALPHA + 1]
    pooled = jax.lax.reduce_window(alpha, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 1, 1, 1),
                                   "SAME")
    return pooled > ALIVE_THRESHOLD


class UpdateRule(nnx.Module):
    """Per-cell MLP: perception [B, F, T, 4C] -> state change [B, F, T, C]."""

    def __init__(self, channels: int, hidden: int, n_bands: int, *, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(NUM_FILTERS * channels, hidden, rngs=rngs)
        # Frequency-position input: a learned vector per mel band, added before the ReLU.
        self.band_embedding = nnx.Param(jnp.zeros((n_bands, hidden)))
        self.out = nnx.Linear(hidden, channels, kernel_init=nnx.initializers.zeros, rngs=rngs)

    def __call__(self, perception: jax.Array) -> jax.Array:
        h = self.hidden(perception) + self.band_embedding[...][:, None, :]
        return self.out(jax.nn.relu(h))


class TNCA(nnx.Module):
    """One stochastic growth step: state [B, F, T, C] -> state [B, F, T, C].

    `band_level` [n_values, F] is each band's resting level (normalised) that a living cell
    shows when its value channel is 0; trainers start it at the target's per-band mean so the
    cells spend their capacity on what changes over the note (see `spectrogram`).
    `n_values`: grown values per cell (1, or 2 for `mag_if`; see `value_channels`).
    """

    def __init__(self, n_bands: int, *, n_values: int = 1, channels: int = 16,
                 hidden: int = 128, fire_rate: float = 0.5, seed_spacing: int = 8,
                 rngs: nnx.Rngs):
        if n_values < 1:
            raise ValueError(f"a TNCA grows at least one value, not {n_values}")
        if channels < 4 or channels <= max(value_channels(n_values)) + 1:
            raise ValueError("a TNCA needs at least 4 channels (value, alpha, clock, hidden), "
                             "and a hidden channel beside its values")
        if not 0 < fire_rate <= 1 or seed_spacing < 1:
            raise ValueError("fire_rate must be in (0, 1] and seed_spacing at least 1")
        self.n_bands = n_bands
        self.n_values = n_values
        self.channels = channels
        self.fire_rate = fire_rate
        self.seed_spacing = seed_spacing
        self.update_rule = UpdateRule(channels, hidden, n_bands, rngs=rngs)
        self.band_level = nnx.Param(jnp.zeros((n_values, n_bands)))

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict, n_bands: int,
                    n_values: int = 1) -> TNCA:
        """The TNCA of a run config (its `model` section and `seed`) for a grid of `n_bands`
        rows growing `n_values` values."""
        model = config.model
        return cls(n_bands, n_values=n_values, channels=model.channels, hidden=model.hidden,
                   fire_rate=model.fire_rate, seed_spacing=model.seed_spacing,
                   rngs=nnx.Rngs(config.seed))

    def seed(self, n_frames: int, batch: int = 1) -> jax.Array:
        """This model's starting grid for a note of `n_frames` frames (see `seed_state`)."""
        return seed_state(self.n_bands, n_frames, self.channels, batch,
                          spacing=self.seed_spacing, n_values=self.n_values)

    def spectrogram(self, state: jax.Array) -> jax.Array:
        """The normalised representation in [0, 1] shown by a grid: [B, F, T, C] ->
        [B, n_values, F, T].

        Living cells show band_level + value; dead cells show 0 (silence).
        """
        alive = state[:, None, :, :, ALPHA] > ALIVE_THRESHOLD
        values = jnp.moveaxis(state[..., list(value_channels(self.n_values))], -1, 1)
        level = self.band_level[...][:, :, None] + values
        return jnp.where(alive, jnp.clip(level, 0.0, 1.0), 0.0)

    def __call__(self, state: jax.Array, key: jax.Array) -> jax.Array:
        pre_alive = alive_mask(state)
        delta = self.update_rule(perceive(state))
        fire = jax.random.uniform(key, (*state.shape[:-1], 1)) < self.fire_rate
        state = state + delta * fire.astype(state.dtype)
        return state * (pre_alive & alive_mask(state)).astype(state.dtype)


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


def grow(graphdef: nnx.GraphDef, params: nnx.State, state: jax.Array, key: jax.Array,
         steps: int, *, first_step: int = 0, snapshot_step: jax.Array | int | None = None,
         remat: bool = False) -> tuple[jax.Array, jax.Array]:
    """Run `steps` growth steps with `lax.scan` (jit-compatible, pure).

    Args:
      graphdef, params: the split TNCA (`nnx.split(model)`).
      state: [B, F, T, C] starting grid.
      key: PRNG key; step i uses `fold_in(key, first_step + i)`, so growth split into
        pieces (see `grow_stages`) draws the same randomness as one uninterrupted run.
      steps: static scan length.
      first_step: index of the first step (for continuing a growth).
      snapshot_step: also return the state after this many steps (traced, so one compiled
        rollout serves every sampled length); defaults to `steps`.
      remat: recompute each step in the backward pass instead of storing activations.

    Returns:
      (state after `steps`, state after `snapshot_step`).
    """
    snapshot_step = steps if snapshot_step is None else snapshot_step

    def step(carry, i):
        current, snapshot = carry
        model = nnx.merge(graphdef, params)
        current = model(current, jax.random.fold_in(key, first_step + i))
        snapshot = jnp.where(i + 1 == snapshot_step, current, snapshot)
        return (current, snapshot), None

    if remat:
        step = jax.checkpoint(step)
    (final, snapshot), _ = jax.lax.scan(step, (state, state), jnp.arange(steps))
    return final, snapshot


def grow_stages(graphdef: nnx.GraphDef, params: nnx.State, state: jax.Array, key: jax.Array,
                steps: int, num_stages: int) -> jax.Array:
    """Grow and keep the shown spectrogram at `num_stages` evenly spaced steps.

    Returns [num_stages, B, n_values, F, T] normalised (see `TNCA.spectrogram`); the last stage
    is that of `grow(..., steps)`.
    """
    model = nnx.merge(graphdef, params)
    bounds = np.linspace(0, steps, num_stages + 1).astype(int)
    stages = []
    for start, stop in itertools.pairwise(bounds):
        state, _ = grow(graphdef, params, state, key, int(stop - start), first_step=int(start))
        stages.append(model.spectrogram(state))
    return jnp.stack(stages)
