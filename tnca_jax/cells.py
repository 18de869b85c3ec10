"""A cell's update (Growing NCA, Distill 2020, adapted to spectrograms), the kernel of
`tnca_jax.model.TNCA`: state [batch, bins, frames, channels] -> the same.

1. `perceive`: fixed depthwise 3x3 filters (identity, Sobel along time, Sobel along
   frequency, Laplacian). Kernels are not rotated: time and frequency are different axes.
2. An MLP per cell on the perception vector, its hidden layer given the cell's `CellContext`
   (what it knows of where it sits); only the cells that fire (probability `fire_rate`) run it.
3. Living mask: a cell lives while some cell in its 3x3 neighbourhood has alpha > 0.1, checked
   before and after the update.

`growth_step` is one step with its gradient written out (a custom VJP).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

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


def _depthwise(padded: jax.Array, kernels: np.ndarray) -> list[jax.Array]:
    """Each 3x3 kernel [filters, 3, 3] correlated with every channel of a grid given with its
    one-cell zero border, as shifted multiply-adds (XLA fuses them into one loop; faster than a
    depthwise convolution on CPU and as fast on GPU): [B, F+2, T+2, C] -> filters x [B, F, T, C]."""
    n_freq, n_time = padded.shape[1] - 2, padded.shape[2] - 2
    outputs = []
    for kernel in kernels:
        acc = None
        for df in range(3):
            for dt in range(3):
                if kernel[df, dt] == 0:
                    continue
                term = kernel[df, dt] * padded[:, df:df + n_freq, dt:dt + n_time, :]
                acc = term if acc is None else acc + term
        outputs.append(acc)
    return outputs


def _pad(grid: jax.Array) -> jax.Array:
    """[B, F, T, C] -> [B, F+2, T+2, C] with a one-cell zero border."""
    return jnp.pad(grid, ((0, 0), (1, 1), (1, 1), (0, 0)))


def perceive(state: jax.Array) -> jax.Array:
    """Depthwise 3x3 filtering with zero padding: [B, F, T, C] -> [B, F, T, 4C] (filter-major:
    all channels through the identity, then Sobel along time, ...)."""
    return jnp.concatenate(_depthwise(_pad(state), PERCEPTION_KERNELS), axis=-1)


def perceive_transpose(grad: jax.Array) -> jax.Array:
    """The adjoint of `perceive`: [B, F, T, 4C] -> [B, F, T, C]."""
    return _perceive_transpose_padded(_pad(grad))


def _perceive_transpose_padded(padded: jax.Array) -> jax.Array:
    """`perceive_transpose` of a gradient given with its one-cell zero border: [B, F+2, T+2,
    4C] -> [B, F, T, C] (each filter's share correlated with its kernel flipped in both axes,
    summed)."""
    shares = jnp.split(padded, NUM_FILTERS, axis=-1)
    flipped = PERCEPTION_KERNELS[:, ::-1, ::-1]
    return sum(_depthwise(share, kernel[None])[0] for share, kernel in zip(shares, flipped,
                                                                           strict=True))


def alive_mask(state: jax.Array) -> jax.Array:
    """Cells with alpha > 0.1 somewhere in their 3x3 neighbourhood: [B, F, T, C] -> [B, F, T, 1]."""
    _, n_freq, n_time, _ = state.shape
    alive = jnp.pad(state[..., ALPHA:ALPHA + 1] > ALIVE_THRESHOLD,
                    ((0, 0), (1, 1), (1, 1), (0, 0)))
    # Nine shifted views OR-ed (XLA fuses them into one loop; reduce_window is slower on CPU).
    return functools.reduce(jnp.logical_or, [alive[:, df:df + n_freq, dt:dt + n_time]
                                             for df in range(3) for dt in range(3)])


class UpdateWeights(NamedTuple):
    """The update MLP's layers: hidden [4C, H] + [H], output [H, C] + [C]."""

    hidden_kernel: jax.Array
    hidden_bias: jax.Array
    out_kernel: jax.Array
    out_bias: jax.Array


class CellContext(NamedTuple):
    """What each cell knows of where it sits, added to the update MLP's hidden layer before its
    ReLU: a frequency part [Bc, F, H] and a time part [Bc, T, H] (or None), Bc being 1 (shared
    by the batch) or the batch size. A cell at row f, frame t of sample b adds
    frequency[b, f] + time[b, t]."""

    frequency: jax.Array
    time: jax.Array | None = None


def _fires(key: jax.Array, state: jax.Array, fire_rate: float) -> jax.Array:
    """[B, F, T] True where a cell applies its update this step."""
    return jax.random.uniform(key, state.shape[:-1]) < fire_rate


def firing_capacity(cells: int, fire_rate: float) -> int:
    """Rows computed per step: the expected number of firing cells plus 8 standard deviations
    of that binomial count (exceeded with probability below 1e-15), at most all cells."""
    spread = math.sqrt(cells * fire_rate * (1 - fire_rate))
    return min(cells, math.ceil(cells * fire_rate + 8 * spread) + 1)


class _Firing(NamedTuple):
    """The cells that fire this step, as rows of the flattened grid [B * F * T] (padded with
    the index one past the last cell, which reads a zero row and writes nowhere), with the row
    of each in the context's frequency and time parts (padding: one past their last)."""

    index: jax.Array  # [capacity] int32
    frequency: jax.Array  # [capacity] int32 into context.frequency flattened [Bc * F]
    time: jax.Array  # [capacity] int32 into context.time flattened [Bc * T]


def _firing(key: jax.Array, state: jax.Array, fire_rate: float, context: CellContext
            ) -> _Firing:
    batch, bands, frames, _ = state.shape
    cells = batch * bands * frames
    index = jnp.nonzero(_fires(key, state, fire_rate).reshape(cells),
                        size=firing_capacity(cells, fire_rate), fill_value=cells)[0]
    shared = context.frequency.shape[0] == 1
    sample = 0 if shared else index // (bands * frames)
    contexts = 1 if shared else batch
    valid = index < cells
    return _Firing(index,
                   jnp.where(valid, sample * bands + (index // frames) % bands, contexts * bands),
                   jnp.where(valid, sample * frames + index % frames, contexts * frames))


# The padding index (one past the last row) reads a zero row and writes nowhere (scatters
# drop it: no copy of the grid grown by one row). A step's real indices are distinct.
def _rows(values: jax.Array, index: jax.Array) -> jax.Array:
    """[..., n] -> [len(index), n]: rows of `values` flattened to [-1, n] (an index one past
    the last row reads zeros)."""
    flat = values.reshape(-1, values.shape[-1])
    return jnp.concatenate([flat, jnp.zeros((1, flat.shape[1]), flat.dtype)])[index]


def _spread_padded(rows: jax.Array, firing: _Firing, shape: tuple[int, ...]) -> jax.Array:
    """[capacity, n] -> [B, F+2, T+2, n]: rows back at their cells of a grid of `shape`
    [B, F, T, ...] given with a one-cell zero border (zeros elsewhere), so that the border is
    not padded on afterwards in a pass of its own. Each cell of the padded grid reads its row
    (a map from cell to row, scattered from the firing indices: a few int32 per cell), one
    pass writing every cell once: faster on CPU than zero-filling the grid and scattering the
    rows into it."""
    batch, bands, frames = shape[:3]
    capacity = firing.index.shape[0]
    sample, cell = firing.index // (bands * frames), firing.index % (bands * frames)
    padded_cells = batch * (bands + 2) * (frames + 2)
    index = jnp.where(firing.index < batch * bands * frames,
                      (sample * (bands + 2) + cell // frames + 1) * (frames + 2)
                      + cell % frames + 1, padded_cells)
    row_of_cell = jnp.full((padded_cells,), capacity, jnp.int32).at[index].set(
        jnp.arange(capacity, dtype=jnp.int32), mode="drop", unique_indices=True)
    return _rows(rows, row_of_cell).reshape(batch, bands + 2, frames + 2, rows.shape[1])


def _row_sums(rows: jax.Array, index: jax.Array, like: jax.Array) -> jax.Array:
    """The rows summed into the rows of `like` [Bc, n, H] they came from (`_rows`)."""
    flat = like.reshape(-1, like.shape[-1])
    return jnp.zeros(flat.shape, rows.dtype).at[index].add(rows, mode="drop").reshape(
        like.shape)


def _hidden_rows(weights: UpdateWeights, context: CellContext, perception: jax.Array,
                 firing: _Firing) -> jax.Array:
    """The update MLP's hidden pre-activation of the firing cells: [capacity, H]."""
    hidden = (_rows(perception, firing.index) @ weights.hidden_kernel + weights.hidden_bias
              + _rows(context.frequency, firing.frequency))
    if context.time is not None:
        hidden = hidden + _rows(context.time, firing.time)
    return hidden


def _step_forward(weights: UpdateWeights, context: CellContext, state: jax.Array,
                  key: jax.Array, mask: jax.Array | None, fire_rate: float
                  ) -> tuple[jax.Array, jax.Array, _Firing]:
    """One step: (new state [B, F, T, C], living mask [B, F, T, 1] of 0/1 it applied, the
    cells that fired)."""
    pre_alive = alive_mask(state)
    firing = _firing(key, state, fire_rate, context)
    hidden = _hidden_rows(weights, context, perceive(state), firing)
    delta = jax.nn.relu(hidden) @ weights.out_kernel + weights.out_bias
    cells = state.reshape(-1, state.shape[-1])  # the firing rows updated, no zero grid added
    updated = cells.at[firing.index].add(delta, mode="drop", unique_indices=True).reshape(
        state.shape)
    living = (pre_alive & alive_mask(updated)).astype(state.dtype)
    if mask is not None:
        living = living * mask
    return updated * living, living, firing


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def growth_step(weights: UpdateWeights, context: CellContext, state: jax.Array, key: jax.Array,
                mask: jax.Array | None, fire_rate: float) -> jax.Array:
    """One stochastic growth step (Growing NCA): state [B, F, T, C] -> state [B, F, T, C].

    Perceive, update each cell that fires (probability `fire_rate`) by the MLP (its hidden
    layer given the cell's `context`), then zero the cells with no living neighbour before or
    after, and those outside `mask` ([B, 1, T, 1]: a note's frames on a longer grid; None:
    every cell may live). Only the firing cells are run through the MLP (gathered into
    `firing_capacity` rows): a cell that does not fire discards its update, so computing it
    for every cell, forward and backward, wasted 1 - fire_rate of the work. The gradient is
    written out (`_step_backward`): it keeps only the state, the firing cells' indices and
    the living mask of each step and recomputes the rest, which is less memory than
    autodiff's stored activations and, on CPU, about twice as fast.
    """
    return _step_forward(weights, context, state, key, mask, fire_rate)[0]


def _step_residuals(weights, context, state, key, mask, fire_rate):
    new_state, living, firing = _step_forward(weights, context, state, key, mask, fire_rate)
    return new_state, (weights, context, state, firing, living.astype(jnp.bool_))


def _step_backward(fire_rate, residuals, grad):
    del fire_rate
    weights, context, state, firing, living = residuals
    perception = perceive(state)
    hidden = _hidden_rows(weights, context, perception, firing)  # [capacity, H]
    grad_updated = grad * living.astype(grad.dtype)
    grad_delta = _rows(grad_updated, firing.index)  # [capacity, C]

    def weight_grad(inputs, output_grad):  # [rows, n] x [rows, m] -> [n, m]
        return jax.lax.dot_general(inputs, output_grad, (((0,), (0,)), ((), ())))

    grad_hidden = jnp.where(hidden > 0, grad_delta @ weights.out_kernel.T, 0.0)
    grad_frequency = _row_sums(grad_hidden, firing.frequency, context.frequency)
    weights_grad = UpdateWeights(
        hidden_kernel=weight_grad(_rows(perception, firing.index), grad_hidden),
        hidden_bias=grad_frequency.sum(axis=(0, 1)),  # every row has one frequency part
        out_kernel=weight_grad(jax.nn.relu(hidden), grad_delta),
        out_bias=grad_delta.sum(axis=0))
    context_grad = CellContext(
        grad_frequency, None if context.time is None
        else _row_sums(grad_hidden, firing.time, context.time))
    grad_perception = _spread_padded(grad_hidden @ weights.hidden_kernel.T, firing,
                                     perception.shape)
    return (weights_grad, context_grad,
            grad_updated + _perceive_transpose_padded(grad_perception),
            None, None)


growth_step.defvjp(_step_residuals, _step_backward)
