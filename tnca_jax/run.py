"""The main job: train on a recording, grow the note, vocode it, measure it, draw it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import jax.numpy as jnp
import ml_collections
import numpy as np

from tnca_jax import audio as audio_lib
from tnca_jax import metrics, plots
from tnca_jax.generate import RUN_FILE, GenerationResult, read_run_file, render, write_run_file
from tnca_jax.train import Target, load_target, train

METRICS_FILE = "metrics.json"


class WorkdirMismatchError(ValueError):
    """The workdir holds a run whose contract or grid differs from this config's."""


def _write_json(path: Path, payload: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2))
    os.replace(tmp, path)


def _check_resumable(workdir: Path, target: Target) -> None:
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


def evaluate(target: Target, result: GenerationResult, vocoder) -> dict:
    """Metrics of the generated note, the vocoder's ceiling and the static baseline."""
    contract = target.contract
    generated = metrics.compare(target.audio, result.audio, contract).to_dict()
    ceiling_audio = np.asarray(vocoder(jnp.asarray(target.log_mel)[None], contract=contract)[0])
    static_log_mel = np.repeat(target.log_mel.mean(axis=1, keepdims=True),
                               target.log_mel.shape[1], axis=1)
    static_audio = np.asarray(vocoder(jnp.asarray(static_log_mel)[None], contract=contract)[0])
    static = metrics.compare(target.audio, static_audio, contract).to_dict()
    return {
        "generated": generated,
        "ceiling": metrics.compare(target.audio, ceiling_audio, contract).to_dict(),
        "static_baseline": static,
        "temporal_gain": static["mel_l1_db"] / max(generated["mel_l1_db"], 1e-9),
        "grid_mel_l1_db": metrics.mel_l1_db_from_log_mel(target.log_mel, result.spectrogram,
                                                         contract),
        "contract": contract.name,
        "vocoder": getattr(vocoder, "name", type(vocoder).__name__),
        "target_seconds": len(target.audio) / contract.sample_rate,
    }


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | os.PathLike,
                       *, progress: bool = True) -> dict:
    """Run the whole job in `workdir`; returns the metrics written to metrics.json."""
    import vocoders

    workdir = Path(workdir)
    target = load_target(config)
    vocoder = vocoders.load(config.vocoder, config.vocoder_path, contract=config.contract)
    vocoder.contract.require_same(target.contract, what="the training target")
    workdir.mkdir(parents=True, exist_ok=True)
    _check_resumable(workdir, target)
    write_run_file(workdir, config, target.contract, target.log_mel.shape[1])
    audio_lib.write_wav(workdir / "target.wav", target.audio, target.contract.sample_rate)

    model = train(config, workdir, target, progress=progress)
    result = render(model, target.contract, target.log_mel.shape[1], vocoder,
                    steps=config.generate.steps, num_stages=config.generate.num_stages,
                    seed=config.seed)
    audio_lib.write_wav(workdir / "generated.wav", result.audio, result.sample_rate)
    report = evaluate(target, result, vocoder)
    _write_json(workdir / METRICS_FILE, report)
    plots.comparison(workdir / "comparison.png", target.audio, result.audio, target.log_mel,
                     result.spectrogram, target.contract,
                     title=f"mel L1 {report['generated']['mel_l1_db']:.2f} dB "
                           f"(ceiling {report['ceiling']['mel_l1_db']:.2f}, static "
                           f"{report['static_baseline']['mel_l1_db']:.2f})")
    vmax = float(np.max(target.contract.to_db(target.log_mel)))
    plots.growth(workdir / "growth.png", result.stages, result.stage_steps, target.contract,
                 vmax)
    return report
