import jax
import numpy as np
import pytest
from flax import nnx

from tests.conftest import tiny_config
from tnca_jax.train import (
    checkpoint_manager,
    init_train_state,
    load_target,
    make_train_step,
    restore,
    train,
)


@pytest.fixture(scope="module")
def target():
    return load_target(tiny_config())


def test_target_is_a_trimmed_whole_note_at_the_contract_rate(target):
    contract = target.contract
    assert target.audio.dtype == np.float32 and target.audio.ndim == 1
    assert len(target.audio) == contract.num_samples(target.log_mel.shape[1])
    assert target.log_mel.shape == (contract.n_mels, len(target.audio) // contract.hop_length)
    unit = np.asarray(target.normalized)
    assert unit.shape == (1, *target.log_mel.shape)  # the mel representation: one channel
    assert unit.min() >= 0 and unit.max() <= 1 and unit.max() > 0.5


def test_train_step_traces_once_and_learns(target):
    config = tiny_config()
    graphdef, state, pool = init_train_state(config, *target.log_mel.shape,
                                             band_level=target.normalized.mean(axis=-1))
    step = make_train_step(graphdef, config.train, target.normalized, target)
    losses = []
    for i in range(12):
        state, pool, metrics = step(state, pool, jax.random.key(i))
        losses.append(float(metrics["grid_l1"]))
        assert bool(metrics["finite"])
    assert step._cache_size() == 1  # sampled rollout lengths never recompile
    assert np.mean(losses[-3:]) < losses[0]


def _params(model):
    return jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model, nnx.Param)))


def test_resume_from_checkpoint_equals_uninterrupted_training(tmp_path, target):
    straight = train(tiny_config(iterations=4), tmp_path / "straight", target, progress=False)
    train(tiny_config(iterations=4), tmp_path / "resumed", target, progress=False, stop_at=2)
    resumed = train(tiny_config(iterations=4), tmp_path / "resumed", target, progress=False)
    jax.tree.map(np.testing.assert_array_equal, _params(straight), _params(resumed))
    steps = [int(line.split('"step": ')[1].split(",")[0])
             for line in (tmp_path / "resumed" / "train_metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]  # the log continues, no step twice


def test_checkpoint_restores_model_and_pool(tmp_path, target):
    config = tiny_config(iterations=2)
    model = train(config, tmp_path, target, progress=False)
    graphdef, state, pool = init_train_state(config, *target.log_mel.shape)
    manager = checkpoint_manager(tmp_path, config.train)
    assert manager.latest_step() == 2
    restored_pool = restore(manager, 2, state, pool)
    restored_model, _ = nnx.merge(graphdef, state)
    jax.tree.map(np.testing.assert_array_equal, _params(model), _params(restored_model))
    assert restored_pool.shape == pool.shape and not np.array_equal(restored_pool, pool)
