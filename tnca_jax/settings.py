"""Every job's settings: typed, frozen, checked, read once from its config.

A config (configs/*.py: an ml_collections ConfigDict, or any mapping, e.g. a run.json's) becomes
settings at the job boundary (`tnca_jax.jobs`); below that, code reads only these dataclasses.
Keys are read strictly (`read`): a key the settings do not know, one they need that the config
lacks, or a value of the wrong type is a ConfigError naming `--config.<key>`, so each default
lives in the config files alone (configs/common.py holds the ones the TNCA jobs share). Each
section checks its own values as it is made (`__post_init__`), and `TncaSettings` checks how
the sections fit together: settings that exist can run.

Words: an *iteration* is one optimizer update (train.iterations, warmup_iterations, the
checkpoints' numbers); a *growth step* is one update of the cellular automaton
(train.min_growth_steps, max_growth_steps, generate.growth_steps).
"""

from __future__ import annotations

import ast
import dataclasses
import math
import numbers
import types
import typing
from typing import Any, Literal

from tnca_jax.contract import SpectralContract, get_contract
from tnca_jax.errors import ConfigError
from tnca_jax.metrics import METRICS
from tnca_jax.refine import Refinement

MAX_NOTE_SECONDS = 60.0  # the longest note a TNCA grows or measures (memory grows with it)


def require(ok: bool, key: str, value: Any, rule: str) -> None:
    """ConfigError "--config.<key>=<value> <rule>" unless `ok`."""
    if not ok:
        raise ConfigError(f"--config.{key}={value!r} {rule}")


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _literal(text: str) -> Any:
    """A tuple or list written on the command line ("('a', 'b')"), else the text."""
    if text.strip()[:1] in "([":
        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return text
    return text


def _convert(kind: Any, value: Any, key: str) -> Any:
    """`value` as the annotated type `kind`, or ConfigError naming `key`."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if dataclasses.is_dataclass(kind):
        return read(kind, value, f"{key}.")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for member in (a for a in args if a is not type(None)):
            try:
                return _convert(member, value, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[-1])
    if origin is Literal:
        require(value in args, key, value, f"must be one of {', '.join(map(repr, args))}")
        return value
    if origin is tuple:
        value = _literal(value) if isinstance(value, str) else value
        if isinstance(value, str):  # one path or glob
            value = (value,)
        require(isinstance(value, tuple | list), key, value, "must be a tuple")
        members = args[:1] * len(value) if args[-1:] == (Ellipsis,) else args
        require(len(members) == len(value), key, value, f"must hold {len(args)} values")
        return tuple(_convert(m, v, key) for m, v in zip(members, value, strict=True))
    if kind is bool:
        require(isinstance(value, bool), key, value, "must be True or False")
    elif kind is int:
        require(isinstance(value, numbers.Integral) and not isinstance(value, bool), key,
                value, "must be a whole number")
        return int(value)
    elif kind is float:
        require(_is_number(value) and math.isfinite(value), key, value, "must be a number")
        return float(value)
    elif kind is str:
        require(isinstance(value, str), key, value, "must be a string")
    elif kind is dict:
        require(isinstance(value, dict), key, value, "must be a mapping")
    elif kind is type(None):
        require(value is None, key, value, "is not a setting of this job: set it to None")
    return value


def read(cls: type, values: Any, prefix: str = ""):
    """An instance of settings dataclass `cls` from a mapping holding exactly its fields
    (nested dataclasses from nested mappings); ConfigError naming a missing, unknown or
    mistyped key. `prefix`: where the mapping sits in the config ("train.")."""
    if hasattr(values, "to_dict"):  # an ml_collections ConfigDict
        values = values.to_dict()
    if not isinstance(values, dict):
        raise ConfigError(f"--config.{prefix.rstrip('.') or '<config>'} must be a section of "
                          f"settings, not {values!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ConfigError(f"--config.{prefix}{unknown[0]} is not a setting of this job; its "
                          f"{prefix.rstrip('.') or 'top-level'} keys are {', '.join(names)}")
    missing = [name for name in names if name not in values]
    if missing:
        raise ConfigError(f"--config.{prefix}{missing[0]} is missing from the config (a config "
                          "of an older tnca_jax? compare it with configs/)")
    converted = {name: _convert(hints[name], values[name], f"{prefix}{name}") for name in names}
    try:
        return cls(**converted)
    except ConfigError:
        raise
    except ValueError as err:  # a section's own check (e.g. an architecture's sizes)
        raise ConfigError(f"--config.{prefix.rstrip('.') or '<config>'}: {err}") from None


def to_dict(settings: Any) -> dict:
    """Settings as plain data (tuples as lists), as run.json and the weights files keep them;
    `read` takes it back."""
    return dataclasses.asdict(settings)


# ------------------------------------------------------------------------ TNCA sections
@dataclasses.dataclass(frozen=True)
class NoteData:
    """One recording (the `note` job): trimmed of audio `trim_db` below its peak (None: kept),
    cut to `max_seconds` (None: whole), refused under `min_seconds` of sound."""

    audio_path: str
    trim_db: float | None
    max_seconds: float | None
    min_seconds: float

    def __post_init__(self) -> None:
        require(bool(self.audio_path.strip()), "data.audio_path", self.audio_path,
                "must name a recording")
        _check_trim_and_length("data.", self.trim_db, self.max_seconds)
        require(self.min_seconds >= 0, "data.min_seconds", self.min_seconds,
                "must not be negative")
        require(self.max_seconds is None or self.min_seconds <= self.max_seconds,
                "data.min_seconds", self.min_seconds,
                f"exceeds --config.data.max_seconds={self.max_seconds}; lower it")


@dataclasses.dataclass(frozen=True)
class CorpusData:
    """Labelled notes (the `instruments` job): the audio files under `paths` (folders or
    globs) less those matching `exclude`; held out by the project-wide pitch rule ("pitch") or
    by globs, and also each instrument's lowest and highest `held_out_edges` semitones (to
    measure notes beyond the range); named pitches tuned to pYIN (`tune`); each trimmed and
    at most `max_seconds`."""

    paths: tuple[str, ...]
    exclude: tuple[str, ...]
    held_out: Literal["pitch"] | tuple[str, ...]
    held_out_edges: int
    tune: bool
    trim_db: float | None
    max_seconds: float

    def __post_init__(self) -> None:
        require(bool(self.paths), "data.paths", self.paths,
                "must list folders or globs of recordings, e.g. '(\"data/vsco2\",)'")
        require(self.held_out_edges >= 0, "data.held_out_edges", self.held_out_edges,
                "must not be negative (0: off)")
        _check_trim_and_length("data.", self.trim_db, self.max_seconds)


def _check_trim_and_length(prefix: str, trim_db: float | None, max_seconds: float | None
                           ) -> None:
    require(trim_db is None or trim_db > 0, f"{prefix}trim_db", trim_db,
            "must be positive (or None to keep leading and trailing silence)")
    require(max_seconds is None or 0 < max_seconds <= MAX_NOTE_SECONDS,
            f"{prefix}max_seconds", max_seconds,
            f"must be positive and at most {MAX_NOTE_SECONDS:g} (None: the whole file)")


@dataclasses.dataclass(frozen=True)
class ModelSettings:
    """The TNCA's sizes (`tnca_jax.model.TNCA`): state channels, hidden width of the update
    MLP, fire rate, frames between seed columns, cosines of each frame's place (0: off); and
    how a conditioned TNCA's prior is drawn (`tnca_jax.priors`)."""

    channels: int
    hidden: int
    fire_rate: float
    seed_spacing: int
    time_frequencies: int
    prior: Literal["neighbours", "source_filter"]

    def __post_init__(self) -> None:
        require(self.channels >= 4, "model.channels", self.channels,
                "must be at least 4 (value, alpha, clock and a hidden channel)")
        require(self.hidden >= 1, "model.hidden", self.hidden, "must be at least 1")
        require(0 < self.fire_rate <= 1, "model.fire_rate", self.fire_rate, "must be in (0, 1]")
        require(self.seed_spacing >= 1, "model.seed_spacing", self.seed_spacing,
                "must be at least 1")
        require(self.time_frequencies >= 0, "model.time_frequencies", self.time_frequencies,
                "must not be negative (0 = off)")


@dataclasses.dataclass(frozen=True)
class LoopSettings:
    """What the training loop (`tnca_jax.training.train`) of every job reads."""

    iterations: int
    learning_rate: float
    final_lr_fraction: float
    warmup_iterations: int
    memory_budget_gb: float | None
    log_every: int
    checkpoint_every: int
    keep_checkpoints: int

    def __post_init__(self) -> None:
        require(self.iterations >= 1, "train.iterations", self.iterations, "must be at least 1")
        require(self.learning_rate > 0, "train.learning_rate", self.learning_rate,
                "must be a positive number")
        require(0 < self.final_lr_fraction <= 1, "train.final_lr_fraction",
                self.final_lr_fraction, "must be in (0, 1]")
        require(0 <= self.warmup_iterations < self.iterations, "train.warmup_iterations",
                self.warmup_iterations,
                f"must be at least 0 and below --config.train.iterations={self.iterations}")
        require(self.memory_budget_gb is None or self.memory_budget_gb > 0,
                "train.memory_budget_gb", self.memory_budget_gb,
                "must be positive (GB per device; None: no limit)")
        for key in ("log_every", "checkpoint_every", "keep_checkpoints"):
            require(getattr(self, key) >= 1, f"train.{key}", getattr(self, key),
                    "must be at least 1")


LOSS_WEIGHTS = ("growth_weight", "overflow_weight", "multiscale_weight", "temporal_weight",
                "audio_weight", "waveform_weight")


@dataclasses.dataclass(frozen=True)
class TrainSettings(LoopSettings):
    """How a TNCA trains (`tnca_jax.tnca_training`): the loop's settings, then batch and pool,
    the growth steps a rollout takes (sampled in [min, max]), the loss weights
    (`tnca_jax.losses.tnca_loss`), the share of the pool grown from left-out priors, and
    damage (the best `damage` samples of a batch lose `damage_frames` of their note)."""

    batch_size: int
    pool_size: int
    min_growth_steps: int
    max_growth_steps: int
    growth_weight: float
    overflow_weight: float
    multiscale_weight: float
    temporal_weight: float
    audio_weight: float
    waveform_weight: float
    audio_griffinlim_iterations: int
    left_out_share: float
    damage: int
    damage_frames: tuple[float, float]

    def __post_init__(self) -> None:
        super().__post_init__()
        require(1 <= self.batch_size <= self.pool_size, "train.batch_size", self.batch_size,
                f"must be between 1 and --config.train.pool_size={self.pool_size}")
        require(self.min_growth_steps >= 1, "train.min_growth_steps", self.min_growth_steps,
                "must be at least 1")
        require(self.min_growth_steps <= self.max_growth_steps, "train.min_growth_steps",
                self.min_growth_steps, f"exceeds --config.train.max_growth_steps="
                f"{self.max_growth_steps}; set min_growth_steps <= max_growth_steps")
        for key in LOSS_WEIGHTS:
            require(getattr(self, key) >= 0, f"train.{key}", getattr(self, key),
                    "must not be negative")
        require(self.audio_griffinlim_iterations >= 1, "train.audio_griffinlim_iterations",
                self.audio_griffinlim_iterations, "must be at least 1")
        require(0 <= self.left_out_share <= 1, "train.left_out_share", self.left_out_share,
                "must be in [0, 1]")
        require(0 <= self.damage < self.batch_size, "train.damage", self.damage,
                f"must be at least 0 and below --config.train.batch_size={self.batch_size} "
                "(the worst sample of a batch is reseeded, not damaged)")
        low, high = self.damage_frames
        require(0 < low <= high < 1, "train.damage_frames", self.damage_frames,
                "must be (low, high) fractions of a note with 0 < low <= high < 1")

    @property
    def uses_audio(self) -> bool:
        """Whether the loss renders the grown note to audio."""
        return bool(self.audio_weight or self.waveform_weight)


@dataclasses.dataclass(frozen=True)
class GenerateSettings:
    """How a trained TNCA grows a note: growth steps, stages kept (growth.wav, the report's
    strip), and refinement (`tnca_jax.refine`: best-of-N, post-processing, 0 = off)."""

    growth_steps: int
    num_stages: int
    best_of: int
    best_of_metric: str
    gaussian_sigma: float
    temporal_median: int
    harmonic_gain: float

    def __post_init__(self) -> None:
        for key in ("growth_steps", "num_stages", "best_of"):
            require(getattr(self, key) >= 1, f"generate.{key}", getattr(self, key),
                    "must be at least 1")
        require(self.best_of_metric in METRICS, "generate.best_of_metric",
                self.best_of_metric, f"is not a metric; choose one of {', '.join(METRICS)}")
        for key in ("gaussian_sigma", "temporal_median", "harmonic_gain"):
            require(getattr(self, key) >= 0, f"generate.{key}", getattr(self, key),
                    "must not be negative (0 = off)")

    @property
    def refinement(self) -> Refinement:
        return Refinement(self.best_of, self.best_of_metric, self.gaussian_sigma,
                          self.temporal_median, self.harmonic_gain)


@dataclasses.dataclass(frozen=True)
class NoteRequestSettings(GenerateSettings):
    """The `instruments` job's `generate` section: besides how to grow, the note
    `--mode=generate` and `--mode=growth` grow (an instrument or a blend "violin:0.7,flute:0.3",
    optionally gliding to another, a pitch and a length), the regrowth demo (erase
    `erase_fraction` of the frames after `erase_at` growth steps), and the MIDI file
    `--mode=play` plays (None: a short demo phrase)."""

    instrument: str
    glide_to: str | None
    pitch: str | float
    seconds: float
    erase_fraction: float
    erase_at: int
    midi: str | None

    def __post_init__(self) -> None:
        super().__post_init__()
        require(0 < self.seconds <= MAX_NOTE_SECONDS, "generate.seconds", self.seconds,
                f"must be positive and at most {MAX_NOTE_SECONDS:g}")
        require(0 < self.erase_fraction < 1, "generate.erase_fraction", self.erase_fraction,
                "must be in (0, 1)")
        require(self.erase_at >= 1, "generate.erase_at", self.erase_at, "must be at least 1")


@dataclasses.dataclass(frozen=True)
class EvalSettings:
    """What the `instruments` job measures: pYIN f0 error per note (slow on CPU), at most
    `max_notes` notes (0: all; held-out notes first)."""

    f0: bool
    max_notes: int

    def __post_init__(self) -> None:
        require(self.max_notes >= 0, "eval.max_notes", self.max_notes,
                "must not be negative (0: every note)")


@dataclasses.dataclass(frozen=True)
class TncaSettings:
    """A TNCA job: `note` (one recording) or `instruments` (many notes of several
    instruments, one conditioned model). They share every section but their data (and the
    `instruments` job's note request and evaluation)."""

    job: Literal["note", "instruments"]
    representation: Literal["mel", "stft", "mag_if"]
    contract: str | dict
    vocoder: str
    vocoder_path: str | None
    seed: int
    data: NoteData | CorpusData
    model: ModelSettings
    train: TrainSettings
    generate: GenerateSettings | NoteRequestSettings
    eval: EvalSettings | None

    def __post_init__(self) -> None:
        from tnca_jax.model import TNCA
        from tnca_jax.representations import get_representation

        many = self.job == "instruments"
        sections = ((self.data, CorpusData if many else NoteData),
                    (self.generate, NoteRequestSettings if many else GenerateSettings))
        for section, kind in sections:
            require(type(section) is kind, "data" if kind in (NoteData, CorpusData)
                    else "generate", "...", f"must be the {self.job} job's section "
                    "(see configs/)")
        require((self.eval is not None) == many, "eval", self.eval,
                "is a section of the instruments job only")
        try:
            representation = get_representation(self.representation, self.spectral_contract)
        except ConfigError as err:
            raise ConfigError(f"--config.{err}") from None
        train = self.train
        require(not train.waveform_weight or representation.grows_phase,
                "train.waveform_weight", train.waveform_weight, "needs a representation that "
                f"grows the phase (mag_if), not {self.representation!r}; set it to 0")
        require(self.representation == "mel" or not self.generate.refinement.postprocesses,
                "representation", self.representation, "has no log-mel to post-process; set "
                "generate.gaussian_sigma, temporal_median and harmonic_gain to 0")
        if many:
            require(self.representation == "mel", "representation", self.representation,
                    "cannot be grown by the instruments job, which grows log-mels: use mel")
            require(not train.uses_audio, "train.audio_weight", train.audio_weight,
                    "is not available in the instruments job (nor waveform_weight); set 0")
        model = self.model
        try:
            TNCA.check_sizes(model.channels, representation.n_values)
        except ValueError as err:
            raise ConfigError(f"--config.model: {err}") from None

    @property
    def spectral_contract(self) -> SpectralContract:
        """The contract the config names (a learned vocoder may bring its own: see
        `tnca_jax.inverse.load_inverse`)."""
        return get_contract(self.contract)

    @property
    def conditioned(self) -> bool:
        """Whether the model is told each note (many notes) or grows one note."""
        return self.job == "instruments"


def read_tnca(config: Any) -> TncaSettings:
    """The settings of a `note` or `instruments` config (or of a run.json's)."""
    if hasattr(config, "to_dict"):  # an ml_collections ConfigDict
        config = config.to_dict()
    job = config.get("job") if isinstance(config, dict) else None
    require(job in ("note", "instruments"), "job", job, "must be 'note' or 'instruments'")
    if job == "note":
        config = {"eval": None, **config}  # the note job measures everything
    hints = dict(typing.get_type_hints(TncaSettings))
    hints["data"] = CorpusData if job == "instruments" else NoteData
    hints["generate"] = NoteRequestSettings if job == "instruments" else GenerateSettings
    hints["eval"] = EvalSettings if job == "instruments" else type(None)
    kind = dataclasses.make_dataclass("_Reading", [(f.name, hints[f.name])
                                                   for f in dataclasses.fields(TncaSettings)])
    values = read(kind, config)
    return TncaSettings(**{f.name: getattr(values, f.name) for f in dataclasses.fields(kind)})
