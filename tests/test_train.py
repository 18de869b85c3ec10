"""One train state, one step and one loop for every TNCA job (here the note job's)."""

import chex
import jax
import numpy as np
import pytest
from flax import nnx

from tests.conftest import tiny_config
from tnca_jax import tnca_training, training
from tnca_jax.notes import load_note
from tnca_jax.representations import get_representation
from tnca_jax.runs import describe
from tnca_jax.settings import read_tnca
from tnca_jax.tnca_training import Targets, create_train_state, make_train_step, plan_training
from tnca_jax.training import data_mesh, merge_state, restore_model, train
from tnca_jax.workdir import Workdir


@pytest.fixture(scope="module")
def notes():
    settings = read_tnca(tiny_config())
    return load_note(settings.data, get_representation("mel", settings.spectral_contract))


def _train(iterations, workdir, notes, stop_at=None):
    settings = read_tnca(tiny_config(iterations=iterations))
    program = plan_training(settings, notes, lambda w: w.write_run(describe(settings, notes)))
    graphdefs, state = train(program, Workdir(workdir), settings.train, progress=False,
                             stop_at=stop_at)
    return merge_state(graphdefs, state)[0]


def test_the_note_is_a_trimmed_whole_note_at_the_contract_rate(notes):
    [note] = notes.notes
    contract = notes.representation.contract
    assert note.audio.dtype == np.float32 and note.audio.ndim == 1
    assert len(note.audio) == contract.num_samples(note.n_frames)
    assert note.features.shape == (1, contract.n_mels, len(note.audio) // contract.hop_length)
    unit = np.asarray(notes.unit(notes.notes))[0]
    assert unit.min() >= 0 and unit.max() <= 1 and unit.max() > 0.5
    assert not notes.conditioned and notes.prior is None and notes.grid_frames == note.n_frames


def test_the_level_follows_the_recordings_envelope_from_the_first_frame(notes):
    """Before any training a cell shows its level: the recording's per-band mean plus its
    envelope over the note. The onset frames are as quiet as the recording's (the mean alone
    made every note start at its average level: a thump)."""
    settings = read_tnca(tiny_config())
    targets = Targets.create(notes)
    graphdefs, state, _ = create_train_state(settings, notes, targets)
    model, _ = merge_state(graphdefs, state)
    unit = np.asarray(targets.unit[0, 0])  # [F, T]
    level = np.asarray(model.level(unit.shape[1]))[0]  # [F, T]
    onset = slice(0, 2)
    with_envelope = np.abs(level[:, onset] - unit[:, onset]).mean()
    mean_only = np.abs(unit.mean(axis=1, keepdims=True) - unit[:, onset]).mean()
    assert with_envelope < 0.5 * mean_only


def test_train_step_traces_once_and_learns(notes, monkeypatch):
    settings = read_tnca(tiny_config())
    targets = Targets.create(notes)
    mesh = data_mesh({"batch": settings.train.batch_size})
    graphdefs, state, pool = create_train_state(settings, notes, targets, mesh=mesh)
    # chex raises if the step is traced a second time (sampled rollout lengths, the pool's
    # contents and the iteration count are all traced values).
    monkeypatch.setattr(tnca_training, "jit_train_step", lambda step, mesh, **kw: (
        training.jit_train_step(chex.assert_max_traces(step, n=1), mesh, **kw)))
    step = make_train_step(graphdefs, settings, targets, notes.representation, mesh)
    losses = []
    for _ in range(12):
        state, pool, metrics = step(state, pool)
        losses.append(float(metrics["grid_l1_db"]))
        assert bool(metrics["finite"])
    assert np.mean(losses[-3:]) < losses[0]


def _params(model):
    return jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model, nnx.Param)))


def test_resume_from_checkpoint_equals_uninterrupted_training(tmp_path, notes):
    straight = _train(4, tmp_path / "straight", notes)
    _train(4, tmp_path / "resumed", notes, stop_at=2)
    resumed = _train(4, tmp_path / "resumed", notes)
    jax.tree.map(np.testing.assert_array_equal, _params(straight), _params(resumed))
    iterations = [r["iteration"] for r in Workdir(tmp_path / "resumed").read_log()]
    assert iterations == [1, 2, 3, 4]  # the log continues, no iteration twice


def test_a_checkpoint_restores_the_model_alone_for_generation(tmp_path, notes):
    model = _train(2, tmp_path, notes)
    settings = read_tnca(tiny_config())
    fresh, _ = merge_state(*create_train_state(settings, notes, Targets.create(notes))[:2])
    assert restore_model(Workdir(tmp_path), None, fresh) == 2
    jax.tree.map(np.testing.assert_array_equal, _params(model), _params(fresh))
    # The checkpoint also holds the optimizer and the pool; the model is read without them.
    assert {p.name for p in (tmp_path / "checkpoints" / "2").iterdir()} >= {
        "model", "optimizer", "carry"}
