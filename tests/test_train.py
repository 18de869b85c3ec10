import jax
import numpy as np
import pytest
from flax import nnx

from tests.conftest import tiny_config
from tnca_jax.losses import TncaTarget
from tnca_jax.target import load_target
from tnca_jax.train import create_train_state, make_train_step, restore, train
from tnca_jax.workdir import Workdir


@pytest.fixture(scope="module")
def target():
    return load_target(tiny_config())


def _step(config, target):
    unit = target.normalized
    graphdef, state, pool = create_train_state(config, *unit.shape[1:],
                                               band_level=unit.mean(axis=-1))
    step = make_train_step(graphdef, config,
                           TncaTarget.create(unit, target.representation, target.audio))
    return step, state, pool


def test_target_is_a_trimmed_whole_note_at_the_contract_rate(target):
    contract = target.contract
    assert target.audio.dtype == np.float32 and target.audio.ndim == 1
    assert len(target.audio) == contract.num_samples(target.n_frames)
    assert target.features.shape == (1, contract.n_mels, len(target.audio) // contract.hop_length)
    unit = np.asarray(target.normalized)
    assert unit.shape == target.features.shape  # the mel representation: one value
    assert unit.min() >= 0 and unit.max() <= 1 and unit.max() > 0.5


def test_train_step_traces_once_and_learns(target):
    step, state, pool = _step(tiny_config(), target)
    losses = []
    for _ in range(12):
        state, pool, metrics = step(state, pool)
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
    steps = [record["step"] for record in Workdir(tmp_path / "resumed").read_log()]
    assert steps == [1, 2, 3, 4]  # the log continues, no step twice


def test_checkpoint_restores_model_and_pool(tmp_path, target):
    config = tiny_config(iterations=2)
    model = train(config, tmp_path, target, progress=False)
    graphdef, state, pool = create_train_state(config, *target.normalized.shape[1:])
    checkpoints = Workdir(tmp_path).checkpoints(create=False)
    assert checkpoints.latest() == 2
    restored_pool = restore(checkpoints, 2, state, pool)
    restored_model, _ = nnx.merge(graphdef, state)
    jax.tree.map(np.testing.assert_array_equal, _params(model), _params(restored_model))
    assert restored_pool.shape == pool.shape and not np.array_equal(restored_pool, pool)
