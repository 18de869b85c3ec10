"""Training the music vocoder (`tnca_jax.neural_vocoder`) on instrument recordings.

  python main.py --config=configs/vocoder.py --workdir=runs/vocoder

- Corpus: the audio files under `config.data.paths` (folders or globs), resampled to the
  contract's rate and trimmed of audio `trim_db` below their peak. The held-out split is the
  project-wide rule of `tnca_jax.corpus` (pitch classes A, C#/Db, F and unpitched phrases), or
  the files matching `config.data.held_out` when that is a list of globs.
- One jitted train step: the PRNG key is `fold_in(key(seed), step)` inside the step; it draws
  a batch of segments (a training file uniformly, then a uniform offset in it), applies a
  random gain, takes the contract's log-mel (plus optional Gaussian noise, for robustness to
  the slightly-off log-mels a TNCA grows), renders it and takes the weighted losses:
    mrstft     the multi-resolution STFT distance (`tnca_jax.losses`, the metric itself),
    mel        L1 of the rendered audio's log-mel, in dB, floored 80 dB below the peak,
    magnitude  L1 of the predicted log-magnitude against the recording's STFT (APNet),
    phase      instantaneous-phase, group-delay and instantaneous-frequency losses against
               the recording's STFT phase (APNet; chordal, wrap-free distances),
  then AdamW with warmup and cosine decay, global-norm clipping. A step whose loss or update is
  not finite is skipped (and counted in the log).
- A tqdm bar with loss and steps/s, a jsonl log, orbax checkpoints every `checkpoint_every`
  steps: rerunning the same command resumes from the latest one.
- `train_and_evaluate` exports the weights (one safetensors file) into the workdir and measures
  the vocoder's ceiling (the recording's own log-mel through it) on every held-out note.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import sys
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from tnca_jax import audio as audio_lib
from tnca_jax import corpus, losses, metrics
from tnca_jax.contract import MelContract, SpectralContract, get_contract
from tnca_jax.dsp import log_mel, stft
from tnca_jax.errors import ConfigError, MissingFileError
from tnca_jax.neural_vocoder import (
    Architecture,
    MusicVocoder,
    NeuralVocoder,
    load_weights,
    overlap_add,
    save_weights,
)
from tnca_jax.train import keep_if_finite
from tnca_jax.workdir import Workdir

logger = logging.getLogger(__name__)

WEIGHTS_FILE = "music_vocoder.safetensors"
EVAL_FILE = "held_out_metrics.json"
TOP_DB = 80.0  # The mel loss floors both log-mels this far below the reference's peak.


# ------------------------------------------------------------------------ corpus
@dataclasses.dataclass(frozen=True)
class Corpus:
    """Training recordings, concatenated for sampling inside the jitted step.

    Attributes:
      audio: [total_samples] float32, every recording after the other.
      starts: [files] int32 offset of each recording in `audio`.
      lengths: [files] int32 samples of each recording.
      recordings: the labelled files, in the same order.
    """

    audio: np.ndarray
    starts: np.ndarray
    lengths: np.ndarray
    recordings: tuple[corpus.Recording, ...]

    @property
    def seconds(self) -> float:
        return float(self.lengths.sum())


def split_recordings(data_config: ml_collections.ConfigDict
                     ) -> tuple[list[corpus.Recording], list[corpus.Recording]]:
    """(training, held-out) recordings of `data_config.paths`.

    `data_config.held_out` is "pitch" (the project-wide rule of `tnca_jax.corpus`) or a list
    of globs naming the held-out files. Raises MissingFileError when a path holds no audio,
    ConfigError when either side is empty.
    """
    try:
        recordings = corpus.find_recordings(data_config.paths)
        chosen = (set() if data_config.held_out == "pitch"
                  else {r.path for r in corpus.find_recordings(data_config.held_out)})
    except FileNotFoundError as err:
        raise MissingFileError(str(err)) from None
    if data_config.held_out == "pitch":
        training, held_out = corpus.split_held_out(recordings)
    else:
        training = [r for r in recordings if r.path not in chosen]
        held_out = [r for r in recordings if r.path in chosen]
    if not training or not held_out:
        raise ConfigError(
            f"{len(training)} training and {len(held_out)} held-out recordings in "
            f"{', '.join(data_config.paths)}: both must be non-empty; name files by pitch "
            "(e.g. violin_Bb4.wav; A, C#/Db and F are held out) or list held-out globs in "
            "--config.data.held_out")
    return training, held_out


def load_corpus(recordings: Sequence[corpus.Recording], contract: SpectralContract, *,
                trim_db: float | None, min_samples: int) -> Corpus:
    """The recordings at the contract's rate, trimmed; those shorter than `min_samples` are
    left out (with a warning). Raises ConfigError when none is long enough."""
    kept, pieces = [], []
    for recording in recordings:
        audio = audio_lib.load_audio(recording.path, contract.sample_rate, trim_db=trim_db)
        if len(audio) < min_samples:
            logger.warning("%s: %.2f s after trimming, shorter than one training segment; left "
                           "out", recording.path, len(audio) / contract.sample_rate)
            continue
        kept.append(recording)
        pieces.append(audio)
    if not pieces:
        raise ConfigError(f"no training recording lasts one segment ({min_samples} samples) "
                         "after trimming; lower --config.train.segment_frames")
    lengths = np.array([len(p) for p in pieces], np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    if lengths.sum() >= 2**31:
        raise ConfigError(f"the training corpus holds {lengths.sum()} samples, more than int32 "
                         "indexing allows; train on fewer files")
    return Corpus(audio=np.concatenate(pieces).astype(np.float32),
                  starts=starts.astype(np.int32), lengths=lengths.astype(np.int32),
                  recordings=tuple(kept))


RESAMPLE_TAPS = 16  # Zero crossings of the windowed-sinc interpolator on each side.


def span_needed(segment_samples: int, max_semitones: float) -> int:
    """Recording samples one segment may read: pitch-shifted up by `max_semitones`, with the
    interpolator's taps on both sides."""
    if not max_semitones:
        return segment_samples
    return math.ceil(segment_samples * 2 ** (max_semitones / 12)) + 2 * RESAMPLE_TAPS + 1


def sample_segments(audio: jax.Array, starts: jax.Array, lengths: jax.Array, key: jax.Array,
                    batch_size: int, segment_samples: int, max_semitones: float = 0.0
                    ) -> jax.Array:
    """[batch, segment_samples] segments: a file uniformly, then a uniform offset in it.

    With `max_semitones`, each segment is pitch-shifted by a uniform random amount in
    [-max_semitones, max_semitones] (resampled by windowed-sinc interpolation, band-limited
    when shifting up; duration changes with pitch, as on a tape), so that the vocoder meets
    every pitch, not only the training notes'.
    """
    file_key, offset_key, shift_key = jax.random.split(key, 3)
    files = jax.random.randint(file_key, (batch_size,), 0, starts.shape[0])
    span = span_needed(segment_samples, max_semitones)
    room = (lengths[files] - span + 1).astype(jnp.float32)
    offsets = jnp.floor(jax.random.uniform(offset_key, (batch_size,)) * room).astype(jnp.int32)
    first = starts[files] + offsets
    if not max_semitones:
        return jax.vmap(lambda s: jax.lax.dynamic_slice(audio, (s,), (segment_samples,)))(first)
    semitones = jax.random.uniform(shift_key, (batch_size, 1), minval=-max_semitones,
                                   maxval=max_semitones)
    rate = 2.0 ** (semitones / 12)  # recording samples per output sample
    position = RESAMPLE_TAPS + jnp.arange(segment_samples) * rate  # [B, L], from `first`
    whole = jnp.floor(position).astype(jnp.int32)
    taps = jnp.arange(-RESAMPLE_TAPS + 1, RESAMPLE_TAPS + 1)
    distance = (position - whole)[..., None] - taps  # [B, L, 2 * taps]
    stretch = jnp.maximum(rate, 1.0)[..., None]  # low-pass below the new Nyquist
    kernel = (jnp.sinc(distance / stretch) / stretch
              * (0.5 + 0.5 * jnp.cos(jnp.pi * jnp.clip(distance / (RESAMPLE_TAPS * stretch),
                                                       -1.0, 1.0))))
    samples = audio[first[:, None, None] + whole[..., None] + taps]
    return jnp.sum(samples * kernel, axis=-1)


# ------------------------------------------------------------------------ losses
def phase_losses(predicted: jax.Array, reference: jax.Array, weight: jax.Array | None = None
                 ) -> dict[str, jax.Array]:
    """APNet's phase losses between unit phasors [batch, bins, frames] (a zero phasor where the
    reference is silent): instantaneous phase, group delay (phase difference between adjacent
    bins) and instantaneous frequency (between adjacent frames).

    Each compares two phases a, b by the chord |e^{ia} - e^{ib}| = 2 |sin((a - b) / 2)|:
    like APNet's anti-wrapping |a - b| wrapped into [0, pi], it ignores whole turns, and its
    gradient stays bounded where a phase is undefined (angle() has none there). With `weight`
    [batch, bins, frames] (the reference's magnitude), each is a weighted mean (a difference
    between two cells weighs the geometric mean of theirs): the phase of partials counts, that
    of near-silent bins hardly does.
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


def mel_l1_db(reference_log_mel: jax.Array, generated_log_mel: jax.Array,
              contract: SpectralContract) -> jax.Array:
    """Mean |dB difference| of two log-mels [batch, n_mels, frames], both floored `TOP_DB`
    below each reference's peak (as the mel_l1_db metric)."""
    ref_db, gen_db = contract.to_db(reference_log_mel), contract.to_db(generated_log_mel)
    floor = jnp.max(ref_db, axis=(-2, -1), keepdims=True) - TOP_DB
    return jnp.mean(jnp.abs(jnp.maximum(ref_db, floor) - jnp.maximum(gen_db, floor)))


def vocoder_losses(model: MusicVocoder, segments: jax.Array, model_input: jax.Array,
                   train_config: ml_collections.ConfigDict) -> dict[str, jax.Array]:
    """Every loss term (unweighted) of `model` rendering `model_input` (the log-mel of
    `segments` [batch, samples], possibly with noise) against `segments`."""
    contract = model.contract
    log_magnitude, phasor = model.components(model_input)
    spectrum = jnp.exp(log_magnitude) * phasor
    audio = overlap_add(spectrum, contract)
    terms = {
        "mrstft": losses.mrstft_distance(segments, audio, contract.sample_rate),
        "mel_db": mel_l1_db(log_mel(segments, contract), log_mel(audio, contract), contract),
    }
    if train_config.consistency_weight:
        terms["consistency"] = consistency(spectrum, audio, contract)
    if train_config.magnitude_weight or train_config.phase_weight or train_config.phase_ip_weight:
        reference = stft(segments, contract)
        magnitude = jnp.abs(reference)
        floor = np.log(losses.MRSTFT_FLOOR)
        terms["magnitude"] = jnp.mean(jnp.abs(
            jnp.maximum(log_magnitude, floor) - jnp.maximum(jnp.log(magnitude + 1e-12), floor)))
        terms.update(phase_losses(
            phasor, reference / jnp.maximum(magnitude, 1e-12),
            magnitude if train_config.phase_weighting == "magnitude" else None))
    return terms


def consistency(spectrum: jax.Array, audio: jax.Array, contract: SpectralContract
                ) -> jax.Array:
    """How far a predicted STFT [batch, bins, frames] is from the STFT of the audio it renders
    (its consistent projection): ||S - STFT(iSTFT(S))|| / ||S||, averaged over the batch. Zero
    for the STFT of any signal, whatever its phase; no reference needed (APNet's STFT
    consistency loss, normalised as a spectral convergence)."""
    rebuilt = stft(audio, contract)
    return jnp.mean(jnp.linalg.norm(jnp.abs(spectrum - rebuilt), axis=(-2, -1))
                    / jnp.maximum(jnp.linalg.norm(jnp.abs(spectrum), axis=(-2, -1)), 1e-12))


def total_loss(terms: dict[str, jax.Array], train_config: ml_collections.ConfigDict
               ) -> jax.Array:
    loss = (train_config.mrstft_weight * terms["mrstft"]
            + train_config.mel_weight * terms["mel_db"])
    if "consistency" in terms:
        loss += train_config.consistency_weight * terms["consistency"]
    if "magnitude" in terms:
        loss += (train_config.magnitude_weight * terms["magnitude"]
                 + train_config.phase_weight * (terms["phase_gd"] + terms["phase_iaf"])
                 + train_config.phase_ip_weight * terms["phase_ip"])
    return loss


# ------------------------------------------------------------------------ model and step
def architecture(model_config: ml_collections.ConfigDict) -> Architecture:
    return Architecture(**model_config.to_dict())


def make_optimizer(train_config: ml_collections.ConfigDict) -> optax.GradientTransformation:
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, train_config.learning_rate, min(train_config.warmup_steps, train_config.steps - 1),
        train_config.steps, train_config.learning_rate * train_config.final_lr_fraction)
    return optax.chain(optax.clip_by_global_norm(train_config.clip_norm),
                       optax.adamw(schedule, b1=0.8, b2=0.99,
                                   weight_decay=train_config.weight_decay))


def init_train_state(config: ml_collections.ConfigDict
                     ) -> tuple[nnx.GraphDef, nnx.State]:
    """Fresh (graphdef, model + optimizer state). With `config.train.init_weights` (a weights
    file, e.g. the shipped one) the network starts from those weights (fine-tuning, e.g. on
    your own instrument); their contract and architecture must be the config's."""
    contract, arch = get_contract(config.contract), architecture(config.model)
    model = MusicVocoder(contract, arch, rngs=nnx.Rngs(config.seed))
    init_weights = config.train.get("init_weights")
    if init_weights:
        start = load_weights(init_weights)
        same = dataclasses.replace(start.architecture,
                                   refine_iterations=arch.refine_iterations) == arch
        if not same or start.contract.first_difference(contract):
            raise ConfigError(
                f"--config.train.init_weights={init_weights} holds a vocoder with architecture "
                f"{start.architecture.to_dict()} under contract {start.contract.name!r}; this "
                f"config trains {arch.to_dict()} under {contract.name!r}: set --config.model.* "
                "and --config.contract to match, or drop init_weights")
        nnx.update(model, nnx.state(start, nnx.Param))
    optimizer = nnx.Optimizer(model, make_optimizer(config.train), wrt=nnx.Param)
    return nnx.split((model, optimizer))


def make_train_step(graphdef: nnx.GraphDef, config: ml_collections.ConfigDict):
    """The jitted step: (train_state, corpus audio, starts, lengths, step) ->
    (train_state, metrics). Its randomness is `fold_in(key(config.seed), step)`."""
    train_config = config.train
    base_key = jax.random.key(config.seed)

    def train_step(train_state: nnx.State, audio: jax.Array, starts: jax.Array,
                   lengths: jax.Array, step: jax.Array):
        model, optimizer = nnx.merge(graphdef, train_state)
        contract = model.contract
        segment_key, gain_key, noise_key = jax.random.split(
            jax.random.fold_in(base_key, step), 3)
        segments = sample_segments(audio, starts, lengths, segment_key, train_config.batch_size,
                                   train_config.segment_frames * contract.hop_length,
                                   train_config.pitch_shift_semitones)
        gain_db = jax.random.uniform(gain_key, (train_config.batch_size, 1),
                                     minval=train_config.gain_db_min,
                                     maxval=train_config.gain_db_max)
        segments = segments * 10.0 ** (gain_db / 20.0)
        model_input = log_mel(segments, contract)
        model_input = jnp.maximum(
            model_input + train_config.input_noise * jax.random.normal(noise_key,
                                                                      model_input.shape),
            contract.log_min)

        def loss_fn(model: MusicVocoder):
            terms = vocoder_losses(model, segments, model_input, train_config)
            return total_loss(terms, train_config), terms

        (loss, terms), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
        optimizer.update(model, grads)
        # A non-finite step is skipped: the state stays as it was.
        finite, new_state = keep_if_finite(loss, grads, nnx.state((model, optimizer)),
                                           train_state)
        return new_state, {"loss": loss, "finite": finite, **terms}

    return jax.jit(train_step, donate_argnums=(0,))


# ------------------------------------------------------------------------ training loop
def train(config: ml_collections.ConfigDict, workdir: str | os.PathLike,
          training: Corpus, *, progress: bool = True,
          stop_at: int | None = None) -> MusicVocoder:
    """Train (or resume) the music vocoder on `training`; returns the trained model.

    Checkpoints go to `workdir/checkpoints`; a rerun with the same workdir resumes from the
    latest. `stop_at` ends this call after that step (checkpointed); the schedule always spans
    `config.train.steps`. Raises FloatingPointError when every step of a log window was
    skipped as non-finite.
    """
    workdir = Workdir(workdir)
    train_config = config.train
    graphdef, train_state = init_train_state(config)
    checkpoints = workdir.checkpoints(keep=train_config.keep_checkpoints,
                                      every=train_config.checkpoint_every)
    start = checkpoints.latest() or 0
    workdir.trim_log(start)
    if start:
        restored = checkpoints.restore(start, nnx.to_pure_dict(train_state))
        nnx.replace_by_pure_dict(train_state, restored)
        print(f"Resuming from checkpoint at step {start} in {checkpoints.directory}",
              file=sys.stderr)
    train_step = make_train_step(graphdef, config)
    data = (jnp.asarray(training.audio), jnp.asarray(training.starts),
            jnp.asarray(training.lengths))
    last = train_config.steps if stop_at is None else min(stop_at, train_config.steps)

    from tqdm.auto import tqdm

    bar = tqdm(initial=start, total=train_config.steps, disable=not progress, desc="vocoder",
               dynamic_ncols=True, mininterval=2.0)
    window: list[dict] = []
    window_start = time.perf_counter()
    try:
        with workdir.log_appender(checkpoints) as append_log:
            for step in range(start, last):
                train_state, step_metrics = train_step(train_state, *data, jnp.int32(step))
                window.append(step_metrics)
                done = step + 1
                if done % train_config.log_every == 0 or done == last:
                    record = _summarise(jax.device_get(window), done,
                                        len(window) / (time.perf_counter() - window_start))
                    append_log(record)
                    bar.set_postfix(loss=f"{record['loss']:.4f}",
                                    mrstft=f"{record['mrstft']:.3f}",
                                    steps_s=f"{record['steps_per_s']:.2f}")
                    window, window_start = [], time.perf_counter()
                if done == last or checkpoints.should_save(done):
                    with workdir.writing(checkpoints):
                        checkpoints.save(done, nnx.to_pure_dict(train_state))
                bar.update(1)
            with workdir.writing(checkpoints):
                checkpoints.wait()
    finally:
        bar.close()
        with contextlib.suppress(OSError, ValueError):
            checkpoints.close()
    model, _ = nnx.merge(graphdef, train_state)
    return model


def _summarise(window: list[dict], step: int, steps_per_s: float) -> dict:
    """One log record: the means of a window of step metrics over its finite steps."""
    finite = [m for m in window if m["finite"]]
    if not finite:
        raise FloatingPointError(
            f"every step from {step - len(window) + 1} to {step} was non-finite (skipped); "
            "rerun with a lower --config.train.learning_rate")
    record = {"step": step, "skipped_steps": len(window) - len(finite),
              "steps_per_s": steps_per_s}
    record.update({name: float(np.mean([m[name] for m in finite]))
                   for name in finite[0] if name != "finite"})
    return record


# ------------------------------------------------------------------------ evaluation
def held_out_notes(recordings: Sequence[corpus.Recording], contract: MelContract,
                   data_config: ml_collections.ConfigDict) -> list[tuple[str, np.ndarray]]:
    """(name relative to its source folder, mono audio cut to whole frames) of each held-out
    recording, trimmed and capped at `eval_max_seconds` as a TNCA target is (a longer one is
    cut at a quiet point and faded out, `tnca_jax.audio.load_audio`)."""
    notes = []
    for recording in recordings:
        audio = audio_lib.load_audio(recording.path, contract.sample_rate,
                                     trim_db=data_config.trim_db,
                                     max_seconds=data_config.eval_max_seconds)
        audio = audio[: contract.num_samples(contract.num_frames(len(audio)))]
        notes.append((f"{recording.path.parent.name}/{recording.path.name}", audio))
    return notes


SCORED = ("mrstft", "mel_l1_db", "rms_ratio", "f0_error_cents")


def score(reference: np.ndarray, generated: np.ndarray, contract: SpectralContract, *,
          f0: bool = True) -> dict[str, float | None]:
    """The vocoder metrics of one note (`tnca_jax.metrics`); pYIN f0 error only with `f0`."""
    names = SCORED if f0 else SCORED[:-1]
    result = metrics.compare(reference, generated, contract, only=names).to_dict()
    return {name: result[name] for name in names}


def summarise_scores(per_note: Sequence[dict]) -> dict[str, dict[str, float]]:
    """Mean, median, worst (and for rms_ratio, min and max) of each metric over notes."""
    summary = {}
    for name in SCORED:
        values = np.array([n[name] for n in per_note if n.get(name) is not None], np.float64)
        if values.size == 0:
            continue
        stats = {"mean": float(values.mean()), "median": float(np.median(values)),
                 "count": int(values.size)}
        if name == "rms_ratio":
            stats.update(min=float(values.min()), max=float(values.max()))
        else:
            stats["worst"] = float(values.max())
        summary[name] = stats
    return summary


def evaluate(vocoder, notes: Sequence[tuple[str, np.ndarray]], *,
             f0: bool = True) -> dict:
    """The vocoder's ceiling on each note (its own log-mel through the vocoder, any
    `tnca_jax.inverse.Vocoder` under a mel contract), scored."""
    contract = vocoder.contract
    per_note = []
    for name, audio in notes:
        rendered = np.asarray(vocoder(log_mel(audio, contract)[None], contract=contract))[0]
        per_note.append({"note": name, "seconds": len(audio) / contract.sample_rate,
                         **score(audio, rendered, contract, f0=f0)})
    return {"per_note": per_note, "summary": summarise_scores(per_note)}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | os.PathLike, *,
                       progress: bool = True) -> dict:
    """Train (resuming if checkpointed), export `workdir/music_vocoder.safetensors`, evaluate
    the held-out split; returns the evaluation, also written to `workdir/held_out_metrics.json`.
    """
    workdir = Workdir(workdir)
    contract = get_contract(config.contract)
    training, held_out = split_recordings(config.data)  # Bad input fails before any write.
    workdir.prepare()
    corpus_ = load_corpus(training, contract, trim_db=config.data.trim_db,
                          min_samples=span_needed(config.train.segment_frames
                                                  * contract.hop_length,
                                                  config.train.pitch_shift_semitones))
    print(f"Training on {len(corpus_.recordings)} recordings "
          f"({corpus_.seconds / contract.sample_rate:.0f} s); {len(held_out)} held out",
          file=sys.stderr)
    model = train(config, workdir, corpus_, progress=progress)
    weights = workdir.file(WEIGHTS_FILE)
    with workdir.writing():
        save_weights(model, weights)
    result = evaluate(NeuralVocoder(model), held_out_notes(held_out, contract, config.data),
                      f0=config.eval.f0)
    result = {"weights": str(weights), "contract": contract.name,
              "architecture": model.architecture.to_dict(), "steps": config.train.steps,
              "training_recordings": len(corpus_.recordings),
              "training_seconds": corpus_.seconds / contract.sample_rate, **result}
    workdir.write_json(EVAL_FILE, result)
    return result


def train_summary(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict:
    """`--mode=train` of the vocoder job (`config.job == "vocoder"`) as the command line
    reports it: the weights written and the held-out summary."""
    result = train_and_evaluate(config, workdir)
    return {"job": "vocoder", "workdir": str(workdir), "weights": result["weights"],
            "steps": result["steps"], "training_recordings": result["training_recordings"],
            "held_out": result["summary"]}
