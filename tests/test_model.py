import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tnca_jax.cells import (
    ALPHA,
    CLOCK,
    VALUE,
    CellContext,
    alive_mask,
    firing_capacity,
    growth_step,
    perceive,
    perceive_transpose,
)
from tnca_jax.model import TNCA, grow, grow_stages, seed_state, time_features


def test_perception_kernels_on_a_ramp():
    """Identity copies, Sobel measures slope along its own axis only, Laplacian of a ramp is 0."""
    freq, time = np.meshgrid(np.arange(6.0), np.arange(7.0), indexing="ij")
    grid = jnp.asarray(np.stack([2.0 * time, 3.0 * freq], axis=-1))[None]  # [1, F, T, 2]
    out = np.asarray(perceive(grid))[0, 1:-1, 1:-1]  # interior, [F-2, T-2, 8]
    identity, d_time, d_freq, laplacian = np.split(out, 4, axis=-1)
    np.testing.assert_allclose(identity, np.asarray(grid)[0, 1:-1, 1:-1])
    np.testing.assert_allclose(d_time[..., 0], 2.0)  # Sobel / 8 gives the slope per cell
    np.testing.assert_allclose(d_time[..., 1], 0.0, atol=1e-6)
    np.testing.assert_allclose(d_freq[..., 1], 3.0)
    np.testing.assert_allclose(d_freq[..., 0], 0.0, atol=1e-6)
    np.testing.assert_allclose(laplacian, 0.0, atol=1e-6)


def test_living_mask_is_the_3x3_neighbourhood_of_alpha_above_threshold():
    state = jnp.zeros((1, 5, 5, 3)).at[0, 2, 2, ALPHA].set(0.5).at[0, 0, 4, ALPHA].set(0.05)
    mask = np.asarray(alive_mask(state))[0, ..., 0]
    expected = np.zeros((5, 5), bool)
    expected[1:4, 1:4] = True
    np.testing.assert_array_equal(mask, expected)


def test_seeds_are_living_columns_that_know_their_place_in_the_note():
    seed = np.asarray(seed_state(8, 10, 6, batch=2, spacing=4))
    assert seed.shape == (2, 8, 10, 6)
    columns = [0, 4, 8]
    np.testing.assert_array_equal(np.flatnonzero(seed[0, 0, :, ALPHA]), columns)
    np.testing.assert_allclose(seed[1, 3, columns, CLOCK], np.array(columns) / 10)
    assert np.all(seed[:, :, columns, CLOCK + 1:] == 1)
    assert np.all(seed[..., VALUE] == 0)  # the value channel starts silent
    assert alive_mask(jnp.asarray(seed)).mean() == pytest.approx(8 / 10)  # seeds +-1 frame


def _random_model(n_bands=8):
    model = TNCA(n_bands, channels=6, hidden=16, fire_rate=0.5, rngs=nnx.Rngs(0))
    # The last layer starts at zero (growth does nothing yet): give it weights to test with.
    model.update_rule.out.kernel[...] = 0.1 * jax.random.normal(jax.random.key(1), (16, 6))
    return model


def test_scanned_rollout_equals_a_python_loop_of_steps():
    model = _random_model()
    graphdef, params = nnx.split(model)
    start = seed_state(8, 12, 6, batch=2)
    key = jax.random.key(3)
    scanned = jax.jit(grow, static_argnums=(0, 4))(graphdef, params, start, key, 10)
    state = start
    for i in range(10):
        state = model(state, jax.random.fold_in(key, i))
    np.testing.assert_allclose(np.asarray(scanned), np.asarray(state), atol=1e-5)
    assert float(jnp.abs(scanned - start).max()) > 0.01  # it did grow something


def test_growth_stops_after_the_active_steps_and_stages_continue_the_growth():
    model = _random_model()
    graphdef, params = nnx.split(model)
    start, key = seed_state(8, 12, 6), jax.random.key(0)
    stopped = grow(graphdef, params, start, key, 9, active_steps=jnp.asarray(4))
    four = grow(graphdef, params, start, key, 4)
    np.testing.assert_array_equal(np.asarray(stopped), np.asarray(four))
    final = grow(graphdef, params, start, key, 9)
    assert not np.allclose(np.asarray(final), np.asarray(four))
    stages = grow_stages(graphdef, params, start, key, 9, num_stages=3)
    np.testing.assert_allclose(np.asarray(stages[-1]), np.asarray(model.spectrogram(final)),
                               atol=1e-5)


def test_zero_initialised_update_leaves_the_seed_unchanged():
    model = TNCA(8, channels=6, hidden=16, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model)
    seed = seed_state(8, 12, 6)
    grown = grow(graphdef, params, seed, jax.random.key(0), 5)
    np.testing.assert_array_equal(np.asarray(grown), np.asarray(seed))


def test_perceive_transpose_is_the_adjoint_of_perceive():
    a = jax.random.normal(jax.random.key(0), (2, 7, 9, 5))
    b = jax.random.normal(jax.random.key(1), (2, 7, 9, 20))
    assert float(jnp.vdot(perceive(a), b)) == pytest.approx(
        float(jnp.vdot(a, perceive_transpose(b))), rel=1e-5)


def dense_step(weights, context, state, key, mask, fire_rate):
    """The growth step as Growing NCA writes it: every cell through the MLP (its hidden layer
    given the cell's context), the update kept where the cell fires, cells outside `mask`
    dead; differentiated by JAX."""
    pre_alive = alive_mask(state)
    hidden = (perceive(state) @ weights.hidden_kernel + weights.hidden_bias
              + context.frequency[:, :, None, :] + context.time[:, None, :, :])
    delta = jax.nn.relu(hidden) @ weights.out_kernel + weights.out_bias
    fire = jax.random.uniform(key, state.shape[:-1])[..., None] < fire_rate
    updated = state + delta * fire
    living = pre_alive & alive_mask(updated)
    return updated * (living if mask is None else living * mask)


@pytest.mark.parametrize(("fire_rate", "contexts", "masked"),
                         [(0.5, 1, False), (1.0, 1, False), (0.5, 2, False), (0.5, 2, True)],
                         ids=["half fire", "all fire", "a context per sample", "note masks"])
def test_the_step_and_its_written_out_gradient_equal_the_dense_autodiff_step(fire_rate,
                                                                             contexts, masked):
    """growth_step (MLP on the firing cells only, hand-written backward pass) against the dense
    step differentiated by JAX, through 6 scanned steps with cells dying and firing at random,
    with the frequency and time parts of the cells' context shared or per sample, and with
    notes shorter than the grid (a frame mask per sample)."""
    model = _random_model()
    weights = model.update_rule.weights
    keys = jax.random.split(jax.random.key(4), 2)
    context = CellContext(0.1 * jax.random.normal(keys[0], (contexts, 8, 16)),
                          0.1 * jax.random.normal(keys[1], (contexts, 12, 16)))
    start = seed_state(8, 12, 6, batch=2) + 0.05 * jax.random.normal(jax.random.key(5),
                                                                      (2, 8, 12, 6))
    target = jax.random.normal(jax.random.key(6), start.shape)
    mask = (jnp.arange(12)[None, None, :, None] < jnp.array([9, 12])[:, None, None, None]
            ).astype(jnp.float32) if masked else None

    def loss(weights, context, state, step):
        def body(current, i):
            key = jax.random.fold_in(jax.random.key(7), i)
            return step(weights, context, current, key, mask, fire_rate), None

        return jnp.sum(jax.lax.scan(body, state, jnp.arange(6))[0] * target)

    assert float(loss(weights, context, start, growth_step)) == pytest.approx(
        float(loss(weights, context, start, dense_step)), rel=1e-6)
    ours = jax.grad(loss, argnums=(0, 1, 2))(weights, context, start, growth_step)
    reference = jax.grad(loss, argnums=(0, 1, 2))(weights, context, start, dense_step)
    for mine, theirs in zip(jax.tree.leaves(ours), jax.tree.leaves(reference), strict=True):
        assert float(jnp.abs(theirs).max()) > 0
        np.testing.assert_allclose(np.asarray(mine), np.asarray(theirs), rtol=1e-4,
                                   atol=1e-5 * float(jnp.abs(theirs).max()))


def test_time_features_tell_every_frame_apart():
    features = time_features(72, 16)
    assert features.shape == (72, 16) and np.abs(features).max() <= 1
    distances = np.linalg.norm(features[:, None] - features[None], axis=-1)
    assert np.min(distances + np.eye(72) * 9) > 0.3  # no two frames share a position


def test_the_firing_capacity_holds_every_firing_cell():
    assert firing_capacity(100, 1.0) == 100 and firing_capacity(16384, 0.5) < 0.54 * 16384
    counts = jax.random.binomial(jax.random.key(0), 16384, 0.5, (10000,))
    assert int(counts.max()) < firing_capacity(16384, 0.5)
