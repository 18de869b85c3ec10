"""The vocoder modes: what a vocoder can do for the recording before any training (its
ceiling), and a trained workdir rendered again with another vocoder under the same contract."""

from __future__ import annotations

import os
from pathlib import Path

import ml_collections
import numpy as np

from tnca_jax import audio as audio_lib
from tnca_jax.checks import check_config
from tnca_jax.generate import load_inverse, load_run
from tnca_jax.run import (
    evaluate,
    load_config_inverse,
    render_for_config,
    trained_target,
    vocoder_ceiling,
    write_json,
)
from tnca_jax.train import load_target
from tnca_jax.workdir import prepare_workdir


def _write(workdir: Path, stem: str, audio: np.ndarray, sample_rate: int, report: dict) -> Path:
    audio_lib.write_wav(workdir / f"{stem}.wav", audio, sample_rate)
    write_json(workdir / f"{stem}.json", report)
    return workdir / f"{stem}.json"


def ceiling(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict:
    """`--mode=ceiling`: the config's recording, under the config's vocoder's contract, through
    that vocoder. Writes ceiling_<vocoder>.wav and ceiling_<vocoder>.json (metrics, vocoder,
    contract) into `workdir`; returns a summary."""
    workdir = Path(workdir)
    check_config(config)
    inverse = load_config_inverse(config)
    target = load_target(config, inverse.contract)
    prepare_workdir(workdir)
    scores, audio = vocoder_ceiling(target, inverse)
    report = {"ceiling": scores, "vocoder": config.vocoder, "vocoder_path": config.vocoder_path,
              "contract": target.contract.to_dict(), "audio_path": config.audio_path,
              "target_seconds": len(target.audio) / target.contract.sample_rate}
    path = _write(workdir, f"ceiling_{config.vocoder}", audio, target.contract.sample_rate,
                  report)
    return {"workdir": str(workdir), "report": str(path), "ceiling": scores}


def generate_workdir(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict:
    """`--mode=generate`: grow a trained workdir's note again (the config's seed and `generate`
    section) and render it with the config's vocoder, whose contract must equal the workdir's
    (else ContractMismatchError). Writes generated_<vocoder>.wav and generated_<vocoder>.json
    (the sections of metrics.json); the training's own outputs stay as they are."""
    workdir = Path(workdir)
    check_config(config)
    run = load_run(workdir)
    inverse = load_inverse(run.representation, config.vocoder, config.vocoder_path)
    target = trained_target(run, workdir)
    result = render_for_config(config, run.model, target, inverse)
    report, _ = evaluate(target, result, inverse)
    report["vocoder_path"] = config.vocoder_path
    path = _write(workdir, f"generated_{config.vocoder}", result.audio, result.sample_rate,
                  report)
    return {"workdir": str(workdir), "report": str(path), "checkpoint_step": run.step,
            "generated": report["generated"], "ceiling": report["ceiling"]}
