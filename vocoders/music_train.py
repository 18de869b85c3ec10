"""Training the music vocoder (`vocoders.music`) on instrument recordings: the `vocoder` job.

  python main.py --config=configs/vocoder.py --workdir=runs/vocoder

- Data (`vocoders.music_data`): the audio files under `data.paths`, resampled to the
  contract's rate and trimmed; the held-out split is the project-wide rule or `data.held_out`
  globs.
- One jitted train step (run by the loop every job shares, `tnca_jax.training.train`: lock,
  resume, damaged-checkpoint fallback, non-finite iterations rejected and retried at a lower
  rate, one line for what cannot go on): the PRNG key is `fold_in(key(seed), iteration)`
  inside the step; it draws a batch of segments, applies a random gain, takes the contract's
  log-mel (plus optional Gaussian noise, for robustness to the slightly-off log-mels a TNCA
  grows), renders it and takes the weighted losses:
    mrstft     the multi-resolution STFT distance (`tnca_jax.losses`, the metric itself),
    mel        L1 of the rendered audio's log-mel, in dB, floored 80 dB below the peak,
    magnitude  L1 of the predicted log-magnitude against the recording's STFT (APNet),
    phase      instantaneous-phase, group-delay and instantaneous-frequency losses against
               the recording's STFT phase (APNet; chordal, wrap-free distances),
    adversarial, feature_matching
               with `train.adversarial_weight` > 0: least-squares GAN and feature-matching
               losses of period and resolution discriminators (`vocoders.discriminators`),
               which train in the same step on their own loss (the vocoder's audio held
               constant for them, they held constant for the vocoder),
  then AdamW with warmup and cosine decay, global-norm clipping (the vocoder's and the
  discriminators' parameters clipped apart).
- `train_and_evaluate` exports the weights (music_vocoder.safetensors, refused if not finite)
  into the workdir and measures the vocoder's ceiling (the recording's own log-mel through it)
  on every held-out note into metrics.json.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Collection
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from tnca_jax import distributed, losses, metrics
from tnca_jax.console import Console
from tnca_jax.contract import MelContract, get_contract
from tnca_jax.dsp import istft, log_mel, stft
from tnca_jax.errors import ConfigError, WorkdirError
from tnca_jax.inverse import Vocoder
from tnca_jax.records import NoteMetrics, RunMetrics, summarise
from tnca_jax.settings import LoopSettings, read, require, to_dict
from tnca_jax.training import (
    GraphDefs,
    TrainProgram,
    TrainState,
    compile_program,
    data_mesh,
    jit_train_step,
    keep_if_finite,
    merge_state,
    scale_by_scaled_schedule,
    split_state,
    train,
)
from tnca_jax.workdir import Workdir
from vocoders.discriminators import (
    CRITIC_SAMPLES,
    Discriminators,
    discriminator_loss,
    feature_matching_loss,
    generator_loss,
)
from vocoders.music import Architecture, MusicVocoder, load_weights, save_weights
from vocoders.music_data import (
    Corpus,
    LoadedCorpus,
    held_out_notes,
    load_corpus,
    sample_segments,
    span_needed,
    split_files,
)

WEIGHTS_FILE = "music_vocoder.safetensors"
SCORED = ("mrstft", "mrstft_auraloss", "mel_l1_db", "spectral_convergence", "mcd_db", "rms_ratio",
          "f0_error_cents")
MEMORY_KNOBS = "--config.train.batch_size or --config.train.segment_frames"


# ------------------------------------------------------------------------ settings
@dataclasses.dataclass(frozen=True)
class VocoderData:
    """Recordings (folders or globs), the held-out rule ("pitch") or globs, the trim level,
    and how long a held-out note is measured (as a TNCA target is capped)."""

    paths: tuple[str, ...]
    held_out: Literal["pitch"] | tuple[str, ...]
    trim_db: float | None
    eval_max_seconds: float | None

    def __post_init__(self) -> None:
        require(bool(self.paths), "data.paths", self.paths, "must list folders or globs")
        require(self.trim_db is None or self.trim_db > 0, "data.trim_db", self.trim_db,
                "must be positive (or None)")


@dataclasses.dataclass(frozen=True)
class VocoderTrain(LoopSettings):
    """The loop's settings, then: weights to start from (None: scratch), batch, segment
    length (frames), AdamW's decay and clipping, the loss weights, augmentation."""

    init_weights: str | None
    batch_size: int
    segment_frames: int
    weight_decay: float
    clip_norm: float
    mrstft_weight: float
    mel_weight: float
    consistency_weight: float
    magnitude_weight: float
    phase_weight: float
    phase_ip_weight: float
    phase_weighting: Literal["magnitude", "uniform"]
    adversarial_weight: float
    feature_matching_weight: float
    pitch_shift_semitones: float
    gain_db_min: float
    gain_db_max: float
    input_noise: float

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("batch_size", "segment_frames"):
            require(getattr(self, key) >= 1, f"train.{key}", getattr(self, key),
                    "must be at least 1")
        for key in ("weight_decay", "clip_norm", "mrstft_weight", "mel_weight",
                    "consistency_weight", "magnitude_weight", "phase_weight", "phase_ip_weight",
                    "adversarial_weight", "feature_matching_weight", "pitch_shift_semitones",
                    "input_noise"):
            require(getattr(self, key) >= 0, f"train.{key}", getattr(self, key),
                    "must not be negative")
        require(self.pitch_shift_semitones <= 12, "train.pitch_shift_semitones",
                self.pitch_shift_semitones, "must be at most 12")
        require(self.feature_matching_weight == 0 or self.adversarial_weight > 0,
                "train.feature_matching_weight", self.feature_matching_weight,
                "needs the discriminators: set --config.train.adversarial_weight > 0")
        require(self.gain_db_min <= self.gain_db_max, "train.gain_db_min", self.gain_db_min,
                f"exceeds --config.train.gain_db_max={self.gain_db_max}")

    @property
    def adversarial(self) -> bool:
        return self.adversarial_weight > 0


@dataclasses.dataclass(frozen=True)
class VocoderEval:
    f0: bool  # pYIN f0 error per held-out note (slow on CPU)


@dataclasses.dataclass(frozen=True)
class VocoderSettings:
    """The `vocoder` job (configs/vocoder.py)."""

    job: Literal["vocoder"]
    contract: str | dict
    seed: int
    data: VocoderData
    model: Architecture
    train: VocoderTrain
    eval: VocoderEval

    def __post_init__(self) -> None:
        contract = get_contract(self.contract)
        try:
            nnx.eval_shape(lambda: MusicVocoder(contract, self.model, rngs=nnx.Rngs(0)))
        except (ValueError, ConfigError) as err:
            raise ConfigError(f"--config.contract / --config.model: {err}") from None


def read_vocoder(config) -> VocoderSettings:
    """The settings of a `vocoder` config."""
    return read(VocoderSettings, config)


# ------------------------------------------------------------------------ losses
def phase_losses(predicted: jax.Array, reference: jax.Array, weight: jax.Array | None = None
                 ) -> dict[str, jax.Array]:
    """APNet's phase losses between unit phasors [batch, bins, frames] (a zero phasor where the
    reference is silent): instantaneous phase, group delay (phase difference between adjacent
    bins) and instantaneous frequency (between adjacent frames).

    Each compares two phases a, b by the chord |e^{ia} - e^{ib}| = 2 |sin((a - b) / 2)|: it
    ignores whole turns, and its gradient stays bounded where a phase is undefined. With
    `weight` [batch, bins, frames] (the reference's magnitude), each is a weighted mean (a
    difference between two cells weighs the geometric mean of theirs).
    """
    weight = jnp.ones(predicted.shape, jnp.float32) if weight is None else weight

    def mean(distance: jax.Array, w: jax.Array) -> jax.Array:
        return jnp.sum(w * distance) / jnp.maximum(jnp.sum(w), 1e-12)

    def bins_step(u: jax.Array) -> jax.Array:
        return u[:, 1:] * jnp.conj(u[:, :-1])

    def frames_step(u: jax.Array) -> jax.Array:
        return u[..., 1:] * jnp.conj(u[..., :-1])

    return {
        "phase_ip": mean(jnp.abs(predicted - reference), weight),
        "phase_gd": mean(jnp.abs(bins_step(predicted) - bins_step(reference)),
                         jnp.sqrt(weight[:, 1:] * weight[:, :-1])),
        "phase_iaf": mean(jnp.abs(frames_step(predicted) - frames_step(reference)),
                          jnp.sqrt(weight[..., 1:] * weight[..., :-1])),
    }


def consistency(spectrum: jax.Array, audio: jax.Array, contract: MelContract) -> jax.Array:
    """How far a predicted STFT [batch, bins, frames] is from the STFT of the audio it renders:
    ||S - STFT(iSTFT(S))|| / ||S||, averaged over the batch (APNet's consistency loss)."""
    rebuilt = stft(audio, contract)
    return jnp.mean(jnp.linalg.norm(jnp.abs(spectrum - rebuilt), axis=(-2, -1))
                    / jnp.maximum(jnp.linalg.norm(jnp.abs(spectrum), axis=(-2, -1)), 1e-12))


def vocoder_losses(model: MusicVocoder, segments: jax.Array, model_input: jax.Array,
                   train: VocoderTrain, discriminators: Discriminators | None = None,
                   critic_start: jax.Array | int = 0) -> dict[str, jax.Array]:
    """Every loss term (unweighted) of `model` rendering `model_input` (the log-mel of
    `segments` [batch, samples], possibly with noise) against `segments`; with
    `discriminators`, the adversarial terms too, on `CRITIC_SAMPLES` from `critic_start`
    ("discriminator" is theirs: its gradient reaches only them, the others' only the
    vocoder)."""
    contract = model.contract
    log_magnitude, phasor = model.components(model_input)
    spectrum = jnp.exp(log_magnitude) * phasor
    audio = istft(spectrum, contract, contract.num_samples(spectrum.shape[-1]))
    terms = {}
    if discriminators is not None:
        length = min(CRITIC_SAMPLES, segments.shape[-1])
        real_part, fake_part = (jax.lax.dynamic_slice_in_dim(x, critic_start, length, axis=-1)
                                for x in (segments, audio))
        graphdef, params = nnx.split(discriminators)
        held = nnx.merge(graphdef, jax.lax.stop_gradient(params))
        real, fake = discriminators(real_part), held(fake_part)
        terms["adversarial"] = generator_loss(fake)
        terms["feature_matching"] = feature_matching_loss(real, fake)  # real held constant
        terms["discriminator"] = discriminator_loss(
            real, discriminators(jax.lax.stop_gradient(fake_part)))
    terms |= {
        "mrstft": losses.mrstft_distance(segments, audio, contract.sample_rate),
        "mel_db": losses.log_mel_l1_db(log_mel(segments, contract), log_mel(audio, contract),
                                       contract),
    }
    if train.consistency_weight:
        terms["consistency"] = consistency(spectrum, audio, contract)
    if train.magnitude_weight or train.phase_weight or train.phase_ip_weight:
        reference = stft(segments, contract)
        magnitude = jnp.abs(reference)
        floor = np.log(losses.MRSTFT_FLOOR)
        terms["magnitude"] = jnp.mean(jnp.abs(
            jnp.maximum(log_magnitude, floor) - jnp.maximum(jnp.log(magnitude + 1e-12), floor)))
        terms.update(phase_losses(
            phasor, reference / jnp.maximum(magnitude, 1e-12),
            magnitude if train.phase_weighting == "magnitude" else None))
    return terms


def total_loss(terms: dict[str, jax.Array], train: VocoderTrain) -> jax.Array:
    loss = train.mrstft_weight * terms["mrstft"] + train.mel_weight * terms["mel_db"]
    if "discriminator" in terms:
        loss += (terms["discriminator"] + train.adversarial_weight * terms["adversarial"]
                 + train.feature_matching_weight * terms["feature_matching"])
    if "consistency" in terms:
        loss += train.consistency_weight * terms["consistency"]
    if "magnitude" in terms:
        loss += (train.magnitude_weight * terms["magnitude"]
                 + train.phase_weight * (terms["phase_gd"] + terms["phase_iaf"])
                 + train.phase_ip_weight * terms["phase_ip"])
    return loss


# ------------------------------------------------------------------------ model and step
def make_optimizer(train: VocoderTrain) -> optax.GradientTransformation:
    """AdamW (b1 0.8, b2 0.99) with a linear warm-up and cosine decay, global-norm clipping,
    times the retry scale (`tnca_jax.training.scale_by_scaled_schedule`); the vocoder's and
    the discriminators' parameters (`Trainee`) each clipped on their own."""
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, train.learning_rate, min(train.warmup_iterations, train.iterations - 1),
        train.iterations, train.learning_rate * train.final_lr_fraction)

    def adamw() -> optax.GradientTransformation:
        return optax.chain(optax.clip_by_global_norm(train.clip_norm),
                           optax.scale_by_adam(b1=0.8, b2=0.99),
                           optax.add_decayed_weights(train.weight_decay),
                           scale_by_scaled_schedule(schedule))

    def labels(params):
        return jax.tree_util.tree_map_with_path(lambda path, _: str(path[0].key), params)

    return optax.multi_transform({"vocoder": adamw(), "discriminators": adamw()}, labels)


class Trainee(nnx.Module):
    """What the vocoder job trains: the vocoder and, for adversarial training, the
    discriminators (None otherwise)."""

    def __init__(self, vocoder: MusicVocoder, discriminators: Discriminators | None):
        self.vocoder = vocoder
        self.discriminators = discriminators


def new_trainee(settings: VocoderSettings) -> Trainee:
    """A fresh network, or (`train.init_weights`) one started from a weights file of the same
    contract and architecture (fine-tuning, e.g. on your own instrument), with fresh
    discriminators for adversarial training."""
    contract = get_contract(settings.contract)
    model = MusicVocoder(contract, settings.model, rngs=nnx.Rngs(settings.seed))
    path = settings.train.init_weights
    if path:
        start = load_weights(path)
        same = dataclasses.replace(start.architecture,
                                   refine_iterations=settings.model.refine_iterations)
        if same != settings.model or start.contract.first_difference(contract):
            raise ConfigError(
                f"--config.train.init_weights={path} holds a vocoder with architecture "
                f"{start.architecture.to_dict()} under contract {start.contract.name!r}; this "
                f"config trains {settings.model.to_dict()} under {contract.name!r}: set "
                "--config.model.* and --config.contract to match, or drop init_weights")
        nnx.update(model, nnx.state(start, nnx.Param))
    discriminators = (Discriminators(contract.sample_rate, rngs=nnx.Rngs(settings.seed + 1))
                      if settings.train.adversarial else None)
    return Trainee(model, discriminators)


def make_train_step(graphdefs: GraphDefs, settings: VocoderSettings, mesh):
    """The jitted step: (state, corpus) -> (state, corpus, metrics); iteration n's randomness
    `fold_in(key(seed), n)`."""
    train_settings = settings.train
    base_key = jax.random.key(settings.seed)

    def train_step(state: TrainState, data: Corpus):
        trainee, optimizer = merge_state(graphdefs, state)
        contract = trainee.vocoder.contract
        segment_key, gain_key, noise_key = jax.random.split(
            jax.random.fold_in(base_key, optimizer.step[...]), 3)
        segments = sample_segments(data, segment_key, train_settings.batch_size,
                                   train_settings.segment_frames * contract.hop_length,
                                   train_settings.pitch_shift_semitones)
        gain_db = jax.random.uniform(gain_key, (train_settings.batch_size, 1),
                                     minval=train_settings.gain_db_min,
                                     maxval=train_settings.gain_db_max)
        segments = segments * 10.0 ** (gain_db / 20.0)
        model_input = log_mel(segments, contract)
        model_input = jnp.maximum(
            model_input + train_settings.input_noise * jax.random.normal(noise_key,
                                                                        model_input.shape),
            contract.log_min)

        critic_start = jax.random.randint(  # (a key of its own: the others draw as before)
            jax.random.fold_in(noise_key, 1), (), 0,
            max(segments.shape[-1] - CRITIC_SAMPLES, 0) + 1)

        def loss_fn(trainee: Trainee):
            terms = vocoder_losses(trainee.vocoder, segments, model_input, train_settings,
                                   trainee.discriminators, critic_start)
            return total_loss(terms, train_settings), terms

        (loss, terms), grads = nnx.value_and_grad(loss_fn, has_aux=True)(trainee)
        optimizer.update(trainee, grads)
        finite, new_state = keep_if_finite(loss, grads, TrainState(nnx.state(trainee),
                                                                   nnx.state(optimizer)), state)
        return new_state, data, {"loss": loss, **terms, "finite": finite}

    return jit_train_step(train_step, mesh, split_carry=False)


def describe(settings: VocoderSettings, data: LoadedCorpus, held_out: list) -> dict:
    """run.json of a vocoder run."""
    return {"job": "vocoder", "settings": to_dict(settings),
            "contract": get_contract(settings.contract).to_dict(),
            "fingerprint": data.fingerprint(),
            "training": [str(f.path) for f in data.files],
            "held_out": [str(f.path) for f in held_out]}


FREE = {"iterations", "log_every", "checkpoint_every", "keep_checkpoints", "memory_budget_gb"}


def check_resumable(workdir: Workdir, settings: VocoderSettings, data: LoadedCorpus) -> None:
    """Refuse (one line) a workdir that holds another run: another job, other training audio,
    or other settings its checkpoints depend on."""
    if not workdir.has_run():
        return
    run = workdir.read_run()
    if run.get("job") != "vocoder":
        raise WorkdirError(f"{workdir} holds a {run.get('job')!r} run, not a vocoder's; use a "
                           "new --workdir")
    try:
        before = to_dict(read_vocoder(run["settings"]))
    except (KeyError, ConfigError) as err:
        raise WorkdirError(f"{workdir.file('run.json')} is damaged or was edited ({err}); "
                           "train again in a new --workdir") from None
    now = to_dict(settings)
    changed = [f"{section}.{key}" for section in ("model", "train", "data")
               for key in now[section] if key not in FREE
               and before[section].get(key) != now[section][key]]
    changed += [key for key in ("contract", "seed") if before[key] != now[key]]
    if run.get("fingerprint") != data.fingerprint():
        changed.append("training audio")
    if changed:
        raise WorkdirError(f"{workdir} holds a vocoder run with another {', '.join(changed)}, "
                           "which its checkpoints depend on; use the same settings and "
                           "recordings, or a new --workdir")


def plan(settings: VocoderSettings, data: LoadedCorpus, held_out: list) -> TrainProgram:
    mesh = data_mesh({"train.batch_size": settings.train.batch_size})
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())

    def init():
        trainee = new_trainee(settings)
        graphdefs, state = split_state(trainee, nnx.Optimizer(
            trainee, make_optimizer(settings.train), wrt=nnx.Param))
        return graphdefs, jax.device_put(state, replicated), jax.device_put(data.arrays,
                                                                            replicated)

    return compile_program(settings.train, mesh, init,
                           lambda graphdefs: make_train_step(graphdefs, settings, mesh),
                           lambda workdir: workdir.write_run(describe(settings, data, held_out)),
                           MEMORY_KNOBS, checkpoint_carry=False)


# ------------------------------------------------------------------------ the job
def evaluate(vocoder: Vocoder, notes: list[tuple[dict, np.ndarray]], *,
             names: Collection[str]) -> list[NoteMetrics]:
    """A vocoder's ceiling on each note (its own log-mel through the vocoder, any
    `tnca_jax.inverse.Vocoder` under a mel contract), scored on the metrics `names`."""
    contract = vocoder.contract
    measured = []
    for labels, audio in notes:
        rendered = np.asarray(vocoder(log_mel(audio, contract)[None], contract=contract))[0]
        labels = {**labels, "frames": contract.num_frames(len(audio))}
        measured.append(NoteMetrics(note=labels, generated=metrics.compare(
            audio, rendered, contract, only=names)))
    return measured


def train_and_evaluate(settings: VocoderSettings, workdir: str | os.PathLike, *,
                       progress: bool = True) -> RunMetrics | None:
    """Train (resuming if checkpointed), export `workdir/music_vocoder.safetensors`, measure
    the held-out split into metrics.json; returns what it wrote. In a multi-process run
    (`tnca_jax.distributed`) every process trains and process 0 alone writes and measures;
    the others return None."""
    main = distributed.is_main()
    console = Console(enabled=progress and main)
    workdir = Workdir(workdir)
    contract = get_contract(settings.contract)
    with contextlib.ExitStack() as held:
        with console.stage("load") as stage:
            training, held_out = split_files(settings.data.paths, settings.data.held_out)
            train_settings = settings.train
            data = load_corpus(training, contract, trim_db=settings.data.trim_db,
                               min_samples=span_needed(
                                   train_settings.segment_frames * contract.hop_length,
                                   train_settings.pitch_shift_semitones))
            check_resumable(workdir, settings, data)
            if main:
                workdir.refuse_if_in_use()
            program = plan(settings, data, held_out)
            if main:
                workdir.prepare()
                held.enter_context(workdir.lock())
            distributed.barrier("workdir locked")
            stage.detail = (f"{len(data.files)} recordings ({data.seconds:.0f} s); "
                            f"{len(held_out)} held out")
        with console.stage("train"):
            graphdefs, state = train(program, workdir, train_settings, progress=progress)
        if not main:
            return None
        model = merge_state(graphdefs, distributed.local_copy(state))[0].vocoder
        with console.stage("measure") as stage:
            weights = workdir.file(WEIGHTS_FILE)
            with workdir.writing(name=WEIGHTS_FILE):
                save_weights(model, weights)
            notes = held_out_notes(held_out, contract, trim_db=settings.data.trim_db,
                                   max_seconds=settings.data.eval_max_seconds)
            measured = evaluate(model, notes,
                                names=SCORED if settings.eval.f0 else SCORED[:-1])
            report = RunMetrics(
                job="vocoder", contract=contract.name, vocoder=MusicVocoder.name,
                representation="mel", checkpoint_step=train_settings.iterations,
                notes=measured, summary=summarise(measured),
                extra={"weights": str(weights), "architecture": model.architecture.to_dict(),
                       "training_recordings": len(data.files),
                       "training_seconds": data.seconds})
            workdir.write_metrics(report.to_dict())
            stage.detail = f"{WEIGHTS_FILE}, metrics.json ({len(measured)} held-out notes)"
    return report


def train_summary(settings: VocoderSettings, workdir: str | os.PathLike) -> dict:
    """`--mode=train` of the vocoder job as the command line reports it."""
    report = train_and_evaluate(settings, workdir)
    if report is None:
        return distributed.helper_summary("vocoder", workdir, settings.train.iterations)
    return {"job": "vocoder", "workdir": str(workdir), "weights": report.extra["weights"],
            "iterations": report.checkpoint_step,
            "training_recordings": report.extra["training_recordings"],
            "held_out": report.summary.get("held_out")}


MODES = {"train": train_summary}
