"""The configuration, checked in one place before anything is loaded or written."""

from __future__ import annotations

import math
import numbers

import ml_collections

from tnca_jax.conditioning import NOTE_TIME_FEATURES, PITCH_FEATURES, pitch_to_midi
from tnca_jax.contract import SpectralContract, get_contract
from tnca_jax.errors import ConfigError
from tnca_jax.metrics import METRICS
from tnca_jax.model import TNCA
from tnca_jax.refine import Refinement
from tnca_jax.representations import config_representation_name, get_representation

LOSS_WEIGHTS = ("growth_weight", "overflow_weight", "multiscale_weight", "temporal_weight",
                "audio_weight", "waveform_weight")


def _require(ok: bool, key: str, value, rule: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r} {rule}")


def check_growth(steps: int, num_stages: int, prefix: str = "--config.generate.") -> None:
    """Growth steps and kept stages of a rendered note: whole numbers, at least 1."""
    for key, value in (("steps", steps), ("num_stages", num_stages)):
        _require(isinstance(value, numbers.Integral) and not isinstance(value, bool),
                 f"{prefix}{key}", value, "must be a whole number")
        _require(value >= 1, f"{prefix}{key}", value, "must be at least 1")


def check_refinement(refinement: Refinement, prefix: str = "--config.generate.") -> None:
    """Best-of-N and post-processing settings that can work (see `tnca_jax.refine`)."""
    _require(refinement.best_of >= 1, f"{prefix}best_of", refinement.best_of,
             "must be at least 1")
    _require(refinement.best_of_metric in METRICS, f"{prefix}best_of_metric",
             refinement.best_of_metric, f"is not a metric; choose one of {', '.join(METRICS)}")
    for key in ("gaussian_sigma", "temporal_median", "harmonic_gain"):
        value = getattr(refinement, key)
        _require(value >= 0, f"{prefix}{key}", value, "must not be negative (0 = off)")


def check_sharding(train_config: ml_collections.ConfigDict, device_count: int) -> None:
    """batch_size and pool_size must split evenly over the devices training is sharded across."""
    for key in ("batch_size", "pool_size"):
        value = train_config[key]
        _require(value % device_count == 0, f"--config.train.{key}", value,
                 f"must be a multiple of the {device_count} devices training is split over "
                 f"(jax.devices()); use e.g. --config.train.{key}="
                 f"{math.ceil(value / device_count) * device_count}")


def check_train_section(train: ml_collections.ConfigDict) -> None:
    """A config's `train` section: iteration and step counts, batch and pool, the learning
    rate and its schedule, the memory budget, logging and checkpoints, loss weights."""
    _require(train.iterations >= 1, "--config.train.iterations", train.iterations,
             "must be at least 1")
    _require(train.min_steps >= 1, "--config.train.min_steps", train.min_steps,
             "must be at least 1")
    _require(train.min_steps <= train.max_steps, "--config.train.min_steps", train.min_steps,
             f"exceeds --config.train.max_steps={train.max_steps}; set min_steps <= max_steps")
    _require(1 <= train.batch_size <= train.pool_size, "--config.train.batch_size",
             train.batch_size, f"must be between 1 and --config.train.pool_size={train.pool_size}")
    _require(math.isfinite(train.learning_rate) and train.learning_rate > 0,
             "--config.train.learning_rate", train.learning_rate, "must be a positive number")
    _require(0 < train.final_lr_fraction <= 1, "--config.train.final_lr_fraction",
             train.final_lr_fraction, "must be in (0, 1]")
    warmup = train.get("warmup_steps", 0)
    _require(0 <= warmup < train.iterations, "--config.train.warmup_steps", warmup,
             f"must be at least 0 and below --config.train.iterations={train.iterations}")
    budget = train.get("memory_budget_gb")
    _require(budget is None or budget > 0, "--config.train.memory_budget_gb", budget,
             "must be positive (GB per device; None: no limit)")
    for key in ("log_every", "checkpoint_every", "keep_checkpoints"):
        _require(train[key] >= 1, f"--config.train.{key}", train[key], "must be at least 1")
    for key in LOSS_WEIGHTS:
        _require(train.get(key, 0.0) >= 0, f"--config.train.{key}", train.get(key),
                 "must not be negative")


def check_config(config: ml_collections.ConfigDict, *,
                 device_count: int | None = None) -> SpectralContract:
    """Refuse a configuration that cannot train or render; returns its contract.

    Covers the contract (a preset name or a dict of fields, e.g. n_mels too many for n_fft or
    fmax above Nyquist), the recording's length limits, the training and growth numbers and
    the model's own checks. The audio file and the vocoder are checked as they load.
    `device_count`: the devices training will shard over (see `check_sharding`); None to skip.
    """
    contract = get_contract(config.contract)
    _require(bool(config.audio_path), "--config.audio_path", config.audio_path,
             "must name a recording")
    max_seconds, min_seconds = config.max_seconds, config.min_seconds
    _require(max_seconds is None or max_seconds > 0, "--config.max_seconds", max_seconds,
             "must be positive (or None for the whole file)")
    _require(min_seconds >= 0, "--config.min_seconds", min_seconds, "must not be negative")
    _require(max_seconds is None or min_seconds <= max_seconds, "--config.min_seconds",
             min_seconds, f"exceeds --config.max_seconds={max_seconds}; lower it")
    _require(config.trim_db is None or config.trim_db > 0, "--config.trim_db", config.trim_db,
             "must be positive (or None to keep leading and trailing silence)")

    check_train_section(config.train)
    train = config.train
    kind = config_representation_name(config)
    try:
        representation = get_representation(kind, contract)
    except ConfigError as err:
        raise ConfigError(f"--config.{err}") from None
    _require(not train.get("waveform_weight", 0.0) or representation.grows_phase,
             "--config.train.waveform_weight", train.get("waveform_weight"),
             f"needs a representation that grows the phase (mag_if), not {kind!r}; set it to 0")
    if train.get("audio_weight", 0.0):
        _require(train.audio_griffinlim_iterations >= 1,
                 "--config.train.audio_griffinlim_iterations",
                 train.audio_griffinlim_iterations, "must be at least 1")
    if device_count is not None:
        check_sharding(train, device_count)
    check_growth(config.generate.steps, config.generate.num_stages)
    refinement = Refinement.from_config(config.generate)
    check_refinement(refinement)
    _require(kind == "mel" or not refinement.postprocesses, "--config.representation", kind,
             "has no log-mel to post-process; set generate.gaussian_sigma, temporal_median "
             "and harmonic_gain to 0")

    _require(config.model.hidden >= 1, "--config.model.hidden", config.model.hidden,
             "must be at least 1")
    _require(config.model.get("time_frequencies", 0) >= 0, "--config.model.time_frequencies",
             config.model.get("time_frequencies"), "must not be negative (0 = off)")
    try:  # The model's own checks (channels, fire rate, ...).
        TNCA.from_config(config, representation.n_bins, representation.n_values)
    except ValueError as err:
        raise ConfigError(f"--config.model: {err}") from None
    return contract


def check_timbre_config(config: ml_collections.ConfigDict, *,
                        device_count: int | None = None) -> SpectralContract:
    """Refuse a timbre-job configuration (`configs/instruments.py`) that cannot train or
    render; returns its contract. The recordings are checked as they load."""
    contract = get_contract(config.contract)
    kind = config_representation_name(config)
    _require(kind == "mel", "--config.representation", kind,
             "cannot be grown by the timbre job, which grows log-mels: use mel")
    representation = get_representation(kind, contract)
    data = config.data
    _require(bool(data.paths) and not isinstance(data.paths, str), "--config.data.paths",
             data.paths, "must list folders or globs of recordings, e.g. '(\"data/vsco2\",)'")
    _require(data.held_out == "pitch" or not isinstance(data.held_out, str),
             "--config.data.held_out", data.held_out,
             "must be 'pitch' (the project-wide rule) or a tuple of globs")
    _require(data.max_seconds is not None and data.max_seconds > 0, "--config.data.max_seconds",
             data.max_seconds, "must be positive: every note is grown on one grid that long")
    _require(data.trim_db is None or data.trim_db > 0, "--config.data.trim_db", data.trim_db,
             "must be positive (or None to keep leading and trailing silence)")
    train = config.train
    check_train_section(train)
    for key in ("audio_weight", "waveform_weight"):
        _require(not train.get(key, 0.0), f"--config.train.{key}", train.get(key),
                 "is not available in the timbre job; set it to 0")
    _require(0 <= train.damage < train.batch_size, "--config.train.damage", train.damage,
             f"must be at least 0 and below --config.train.batch_size={train.batch_size} "
             "(the worst sample of a batch is reseeded, not damaged)")
    low, high = train.damage_frames
    _require(0 < low <= high < 1, "--config.train.damage_frames", train.damage_frames,
             "must be (low, high) fractions of a note with 0 < low <= high < 1")
    if device_count is not None:
        check_sharding(train, device_count)
    generate = config.generate
    check_growth(generate.steps, generate.num_stages)
    _require(generate.seconds > 0, "--config.generate.seconds", generate.seconds,
             "must be positive")
    _require(0 < generate.erase_fraction < 1, "--config.generate.erase_fraction",
             generate.erase_fraction, "must be in (0, 1)")
    _require(generate.erase_at >= 1, "--config.generate.erase_at", generate.erase_at,
             "must be at least 1")
    try:
        pitch_to_midi(generate.pitch)
    except ConfigError as err:
        raise ConfigError(f"--config.generate.{err}") from None
    _require(config.eval.max_notes >= 0, "--config.eval.max_notes", config.eval.max_notes,
             "must not be negative (0: every note)")
    _require(config.model.hidden >= 1, "--config.model.hidden", config.model.hidden,
             "must be at least 1")
    try:  # The model's own checks (channels, fire rate, ...).
        TNCA.from_config(config, representation.n_bins, representation.n_values, instruments=1,
                         pitch_features=PITCH_FEATURES, note_time_features=NOTE_TIME_FEATURES)
    except ValueError as err:
        raise ConfigError(f"--config.model: {err}") from None
    return contract
