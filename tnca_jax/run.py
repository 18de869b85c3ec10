"""The main job: train on a recording, grow the note, vocode it, measure it, draw it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import jax
import ml_collections
import numpy as np

from tnca_jax import audio as audio_lib
from tnca_jax import metrics, plots
from tnca_jax import report as report_page
from tnca_jax.checks import check_config
from tnca_jax.contract import get_contract
from tnca_jax.generate import (
    RUN_FILE,
    GenerationResult,
    TrainedRun,
    generate,
    load_inverse,
    load_run,
    read_run_file,
    render,
    write_run_file,
)
from tnca_jax.growth import write_growth
from tnca_jax.model import TNCA
from tnca_jax.refine import Refinement
from tnca_jax.representations import Inverse, Representation, config_kind
from tnca_jax.train import Target, load_target, train
from tnca_jax.workdir import prepare_workdir, replacing

METRICS_FILE = metrics.METRICS_FILE


class WorkdirMismatchError(ValueError):
    """The workdir holds a run whose contract, grid or model differs from this config's."""


def write_json(path: Path, payload: dict) -> None:
    """Write `payload` to `path` as JSON, replacing the file only once complete."""
    with replacing(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2))


def _check_resumable(workdir: Path, config: ml_collections.ConfigDict, target: Target) -> None:
    if not (workdir / RUN_FILE).exists():
        return
    previous = read_run_file(workdir)
    if previous["contract"] != target.contract.to_dict():
        from tnca_jax.contract import SpectralContract

        old = SpectralContract.from_dict(previous["contract"])
        field = old.first_difference(target.contract)
        raise WorkdirMismatchError(
            f"{workdir} holds a run under contract {old.name!r} ({field} differs from "
            f"{target.contract.name!r}); use a new --workdir")
    if previous["n_frames"] != target.log_mel.shape[1]:
        raise WorkdirMismatchError(
            f"{workdir} holds a run on a {previous['n_frames']}-frame target, this config gives "
            f"{target.log_mel.shape[1]} frames (another recording?); use a new --workdir")
    stored, current = previous["config"], json.loads(config.to_json())
    keys = [("model", key) for key in current["model"]] + [("train", "pool_size")]
    changed = [f"{section}.{key} ({stored[section].get(key)!r} there, {current[section][key]!r} "
               "here)" for section, key in keys
               if stored[section].get(key) != current[section][key]]
    if config_kind(stored) != config_kind(current):
        changed.append(f"representation ({config_kind(stored)!r} there, "
                       f"{config_kind(current)!r} here)")
    if changed:
        raise WorkdirMismatchError(
            f"{workdir} holds a run with another {', '.join(changed)}, which its checkpoints "
            "depend on; use the same values or a new --workdir")


def _scores(reference: np.ndarray, audio: np.ndarray, inverse: Inverse) -> dict:
    """Every metric of `audio` rendered by `inverse`; SNR is flagged where the phase was not
    grown but invented by the vocoder."""
    scores = metrics.compare(reference, audio, inverse.contract).to_dict()
    if not inverse.representation.grows_phase:
        scores["notes"]["snr_db"] = metrics.SNR_VOCODER_PHASE
    return scores


def vocoder_ceiling(target: Target, inverse: Inverse) -> tuple[dict, np.ndarray]:
    """The inverse (vocoder) on the target's own features: its metrics against the recording
    (those of metrics.json) and its audio [samples]."""
    audio = np.asarray(inverse(target.features[None])[0])
    return _scores(target.audio, audio, inverse), audio


def evaluate(target: Target, result: GenerationResult, inverse: Inverse
             ) -> tuple[dict, np.ndarray]:
    """Metrics of the generated note, the inverse's ceiling and the static baseline, and the
    ceiling's audio (the inverse on the true features)."""
    contract = target.contract
    ceiling, ceiling_audio = vocoder_ceiling(target, inverse)
    static_features = np.broadcast_to(target.features.mean(axis=-1, keepdims=True),
                                      target.features.shape)
    static_audio = np.asarray(inverse(static_features[None])[0])
    generated = _scores(target.audio, result.audio, inverse)
    static = _scores(target.audio, static_audio, inverse)
    return {
        "generated": generated,
        "ceiling": ceiling,
        "static_baseline": static,
        "temporal_gain": static["mel_l1_db"] / max(generated["mel_l1_db"], 1e-9),
        # The grown level (log-mel or log magnitude) against the target's, before inversion.
        "grid_l1_db": metrics.mel_l1_db_from_log_mel(target.features[0], result.spectrogram,
                                                     contract),
        "representation": target.representation.kind,
        "contract": contract.name,
        "vocoder": inverse.name,
        "target_seconds": len(target.audio) / contract.sample_rate,
        "best_of": result.selection.to_dict() if result.selection else None,
    }, ceiling_audio


def trained_target(run: TrainedRun, workdir: Path) -> Target:
    """The recording a workdir's TNCA was trained on, checked to give the same grid."""
    target = load_target(run.config, run.contract)
    if target.log_mel.shape[1] != run.n_frames:
        raise WorkdirMismatchError(
            f"{workdir} was trained on a {run.n_frames}-frame target, but its recording "
            f"{run.config.audio_path} now gives {target.log_mel.shape[1]} frames; evaluate "
            "against the recording it was trained on")
    return target


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | os.PathLike,
                       *, progress: bool = True) -> dict:
    """Run the whole job in `workdir`; returns the metrics written to metrics.json."""
    workdir = Path(workdir)
    # Everything that can fail is checked before the first write.
    check_config(config, device_count=jax.device_count())
    # The TNCA grows exactly what the vocoder expects: the target under the vocoder's contract.
    inverse = load_config_inverse(config)
    target = load_target(config, inverse.contract)
    _check_resumable(workdir, config, target)
    prepare_workdir(workdir)
    write_run_file(workdir, config, target.contract, target.log_mel.shape[1])
    audio_lib.write_wav(workdir / "target.wav", target.audio, target.contract.sample_rate)

    model = train(config, workdir, target, progress=progress)
    return render_and_report(config, workdir, target, model, inverse)


def load_config_inverse(config: ml_collections.ConfigDict) -> Inverse:
    """The config's way back to audio: its vocoder (under the vocoder's contract: learned
    vocoders bring theirs) for `mel`, the representation's own inverse otherwise."""
    import vocoders

    kind = config_kind(config)
    if kind != "mel":
        return load_inverse(Representation(kind, get_contract(config.contract)),
                            config.vocoder, config.vocoder_path)
    vocoder = vocoders.load(config.vocoder, config.vocoder_path, contract=config.contract)
    return Inverse(Representation("mel", vocoder.contract), vocoder)


def render_for_config(config: ml_collections.ConfigDict, model: TNCA, target: Target,
                      inverse: Inverse) -> GenerationResult:
    """Grow and render the note as the config's seed and `generate` section say (best-of-N
    candidates scored against `target`'s recording)."""
    return render(model, target.features.shape[-1], inverse, steps=config.generate.steps,
                  num_stages=config.generate.num_stages, seed=config.seed,
                  refinement=Refinement.from_config(config.generate), reference=target.audio)


def render_and_report(config: ml_collections.ConfigDict, workdir: Path, target: Target,
                      model: TNCA, inverse: Inverse) -> dict:
    """Grow the note as `config.generate` says, vocode, measure and draw it into `workdir`
    (generated.wav, ceiling.wav, metrics.json, comparison.png, growth.png, report.html);
    returns the metrics written to metrics.json."""
    result = render_for_config(config, model, target, inverse)
    audio_lib.write_wav(workdir / "generated.wav", result.audio, result.sample_rate)
    report, ceiling_audio = evaluate(target, result, inverse)
    report["refinement"] = Refinement.from_config(config.generate).to_dict()
    audio_lib.write_wav(workdir / "ceiling.wav", ceiling_audio, result.sample_rate)
    write_json(workdir / METRICS_FILE, report)
    plots.comparison(workdir / "comparison.png", target.audio, result.audio, target.contract,
                     title=f"mel L1 {report['generated']['mel_l1_db']:.2f} dB "
                           f"(ceiling {report['ceiling']['mel_l1_db']:.2f}, static "
                           f"{report['static_baseline']['mel_l1_db']:.2f})")
    vmax = float(np.max(target.contract.to_db(target.features[0])))
    plots.growth(workdir / "growth.png", result.stages, result.stage_steps, target.contract,
                 vmax)
    report_page.write_report(workdir)
    return report


def evaluate_workdir(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict:
    """`--mode=evaluate`: grow, measure and draw a trained workdir again, without training.

    The model and the recording come from the workdir (its run.json and latest checkpoint);
    `config` gives the seed, the vocoder and the `generate` section (steps, best-of-N,
    post-processing). Writes what `render_and_report` writes; returns a summary.
    """
    workdir = Path(workdir)
    check_config(config)
    run = load_run(workdir)
    target = trained_target(run, workdir)
    inverse = load_inverse(run.representation, config.vocoder, config.vocoder_path)
    report = render_and_report(config, workdir, target, run.model, inverse)
    return {"workdir": str(workdir), "report": str(workdir / report_page.REPORT_FILE),
            "checkpoint_step": run.step, "generated": report["generated"],
            "ceiling": report["ceiling"], "best_of": report["best_of"]}


def growth_workdir(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict:
    """`--mode=growth`: growth.wav and growth.gif of a trained workdir (see `tnca_jax.growth`);
    the report page, where the workdir has been evaluated, is written again to include them.

    `config` gives the seed, the vocoder and the `generate` section (steps, num_stages,
    best-of-N, post-processing); the model comes from the workdir.
    """
    workdir = Path(workdir)
    check_config(config)
    result = generate(workdir, steps=config.generate.steps,
                      num_stages=config.generate.num_stages, seed=config.seed,
                      vocoder=config.vocoder, vocoder_path=config.vocoder_path,
                      refinement=Refinement.from_config(config.generate), return_stages=True)
    wav, gif = write_growth(workdir, result)
    summary = {"workdir": str(workdir), "growth_wav": str(wav), "growth_gif": str(gif),
               "stage_steps": result.stage_steps}
    if (workdir / METRICS_FILE).exists():
        summary["report"] = str(report_page.write_report(workdir))
    return summary
