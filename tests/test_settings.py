"""Every job's config is read once into typed, frozen settings: strictly (no key missing or
unknown, every value of its type), checked as it is made, and round-tripped through run.json."""

import dataclasses
import json

import pytest

from configs.instruments import get_config as instruments_config
from configs.violin import get_config as violin_config
from configs.vocoder import get_config as vocoder_config
from tnca_jax.errors import ConfigError
from tnca_jax.jobs import JOBS, job_of
from tnca_jax.settings import CorpusData, NoteData, read_tnca, to_dict
from vocoders.music_train import read_vocoder

CONFIGS = {"note": violin_config("quick"), "instruments": instruments_config("quick"),
           "vocoder": vocoder_config("quick")}


@pytest.mark.parametrize("job", sorted(CONFIGS))
def test_each_jobs_config_reads_into_frozen_settings_and_back(job):
    config = CONFIGS[job]
    assert job_of(config) is JOBS[job]
    settings = JOBS[job].settings(config)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.seed = 1
    # As run.json keeps them: plain JSON, read back to the same settings.
    assert JOBS[job].settings(json.loads(json.dumps(to_dict(settings)))) == settings


def test_the_tnca_jobs_share_their_defaults_and_differ_in_their_data():
    note, many = read_tnca(violin_config()), read_tnca(instruments_config())
    assert isinstance(note.data, NoteData) and isinstance(many.data, CorpusData)
    # One place for each default (configs/common.py): the shared train settings agree unless
    # a job sets its own (instruments: iterations, batch and pool, growth steps, damage,
    # logging).
    own = {"iterations", "batch_size", "pool_size", "min_growth_steps", "max_growth_steps",
           "damage", "log_every", "checkpoint_every", "keep_checkpoints"}
    differ = {f.name for f in dataclasses.fields(note.train)
              if getattr(note.train, f.name) != getattr(many.train, f.name)}
    assert differ <= own
    assert note.train.left_out_share == many.train.left_out_share == 0.25


@pytest.mark.parametrize("edit,message", [
    (lambda c: c["train"].pop("iterations"), "--config.train.iterations is missing"),
    (lambda c: c["train"].update(iteratons=5), "--config.train.iteratons is not a setting"),
    (lambda c: c["train"].update(learning_rate="fast"),
     "--config.train.learning_rate='fast' must be a number"),
    (lambda c: c["train"].update(batch_size=2.5), "--config.train.batch_size=2.5 must be a whole"),
    (lambda c: c["train"].update(learning_rate=float("nan")),
     "--config.train.learning_rate=nan must be a number"),
    (lambda c: c["data"].update(tune="yes"), "--config.data.tune='yes' must be True or False"),
    (lambda c: c["generate"].update(seconds=1e5), "--config.generate.seconds=100000.0 must be "
     "positive and at most 60"),
    (lambda c: c.update(job="timbre"), "--config.job='timbre' must be 'note' or 'instruments'"),
    (lambda c: c.update(representation="stft", contract="stft_22khz_1024"),
     "cannot be grown by the instruments job"),
    (lambda c: c["train"].update(audio_weight=0.1), "is not available in the instruments job"),
], ids=["missing", "unknown", "a word", "a fraction", "nan", "not a bool", "a day-long note",
        "an old job name", "a linear grid", "an audio loss"])
def test_a_config_that_cannot_work_is_one_line_naming_the_key(edit, message):
    config = instruments_config("quick").to_dict()
    edit(config)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")) as err:
        read_tnca(config)
    assert "\n" not in str(err.value)


def test_globs_and_paths_written_on_the_command_line_are_read_as_tuples():
    """ml_collections hands a --config.data.held_out='("a*", "b*")' override over as one
    string: it is read as the tuple it spells (not globbed character by character), and one
    path or glob as a tuple of one."""
    config = vocoder_config("quick")
    config.data.held_out = "('/notes/*_A4.wav', '/notes/*_F4.wav')"
    assert read_vocoder(config).data.held_out == ("/notes/*_A4.wav", "/notes/*_F4.wav")
    config.data.held_out = "/notes/*_test.wav"
    assert read_vocoder(config).data.held_out == ("/notes/*_test.wav",)
    config.data.held_out = "pitch"
    assert read_vocoder(config).data.held_out == "pitch"
    many = instruments_config("quick").to_dict()
    many["data"]["paths"] = "/my/notes"
    assert read_tnca(many).data.paths == ("/my/notes",)
