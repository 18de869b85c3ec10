"""The jobs of the command line (`--mode`), each `(config, workdir) -> summary dict`:

- `train` (default): train on the config's recording, then render, measure and report
  (`train_and_evaluate`).
- `evaluate`: grow, render, measure and report a trained workdir again (report.html).
- `growth`: growth.wav and growth.gif of a trained workdir (every growth stage vocoded).
- `ceiling`: the config's vocoder on the recording's own features, before any training.
- `generate`: a trained workdir rendered with the config's vocoder under the same contract.

Every mode checks the config before it reads or writes anything (`check_config`).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Callable, Iterator

import jax
import ml_collections
import numpy as np

from tnca_jax import metrics, plots
from tnca_jax import report as report_page
from tnca_jax.audio import fit_full_scale
from tnca_jax.checks import check_config
from tnca_jax.console import Console
from tnca_jax.contract import measuring_contract
from tnca_jax.generation import (
    GenerationResult,
    RenderSettings,
    TrainedRun,
    load_run,
    render,
    render_run,
)
from tnca_jax.growth import write_growth
from tnca_jax.inverse import Inverse, load_inverse
from tnca_jax.model import TNCA
from tnca_jax.representations import config_representation_name
from tnca_jax.target import Target, load_target
from tnca_jax.train import plan_training, train
from tnca_jax.workdir import (
    CEILING_WAV,
    COMPARISON_PNG,
    GENERATED_WAV,
    GROWTH_PNG,
    METRICS_FILE,
    REPORT_FILE,
    TARGET_WAV,
    Workdir,
    WorkdirError,
)


# ------------------------------------------------------------------------ measuring
def scores(reference: np.ndarray, audios: list[np.ndarray], inverse: Inverse) -> list[dict]:
    """Every metric of each of `audios` rendered by `inverse` against `reference` (one batch
    for the optional metrics' worker); SNR is flagged where the phase was not grown but
    invented by the vocoder."""
    results = [result.to_dict() for result in metrics.compare_many(
        reference, audios, measuring_contract(inverse.contract))]
    if not inverse.representation.grows_phase:
        for result in results:
            result["notes"]["snr_db"] = metrics.SNR_VOCODER_PHASE
    return results


def ceiling_audio(target: Target, inverse: Inverse) -> np.ndarray:
    """The inverse (vocoder) on the target's own features: the best it can sound."""
    return fit_full_scale(inverse(target.features[None])[0])


def evaluate(target: Target, result: GenerationResult, inverse: Inverse
             ) -> tuple[dict, np.ndarray]:
    """Metrics of the generated note, the inverse's ceiling and the static baseline (the
    recording's per-band time average), and the ceiling's audio."""
    contract = target.contract
    best = ceiling_audio(target, inverse)
    static_features = np.broadcast_to(target.features.mean(axis=-1, keepdims=True),
                                      target.features.shape)
    static_audio = np.asarray(inverse(static_features[None])[0])
    generated, ceiling, static = scores(target.audio, [result.audio, best, static_audio],
                                        inverse)
    return {
        "generated": generated,
        "ceiling": ceiling,
        "static_baseline": static,
        "temporal_gain": static["mel_l1_db"] / max(generated["mel_l1_db"], 1e-9),
        # The grown level (log-mel or log magnitude) against the target's, before inversion.
        "grid_l1_db": metrics.mel_l1_db_from_log_mel(target.features[0], result.spectrogram,
                                                     contract),
        "representation": target.representation.name,
        "contract": contract.name,
        "vocoder": inverse.name,
        "target_seconds": len(target.audio) / contract.sample_rate,
        "best_of": result.selection.to_dict() if result.selection else None,
    }, best


def worse_than_static(report: dict) -> list[str]:
    """The metrics on which the generated note is worse than the static baseline, each as
    "name generated vs static" (metrics noted as not meaningful for the run left out)."""
    worse = []
    for name in metrics.METRICS:
        generated, static = report["generated"].get(name), report["static_baseline"].get(name)
        if generated is None or static is None or name in report["generated"]["notes"]:
            continue
        if metrics.badness(name, generated) > metrics.badness(name, static):
            worse.append(f"{name} {generated:.3g} vs {static:.3g}")
    return worse


def render_and_report(config: ml_collections.ConfigDict, workdir: Workdir, target: Target,
                      model: TNCA, inverse: Inverse, console: Console) -> dict:
    """Grow the note as the config says, render, measure and draw it into `workdir`
    (generated.wav, ceiling.wav, metrics.json, comparison.png, growth.png, report.html), one
    console stage each, then the closing lines; returns the metrics written to
    metrics.json."""
    settings = RenderSettings.from_config(config)
    with console.stage("render") as stage:
        result = render(model, target.n_frames, inverse, settings, reference=target.audio)
        workdir.write_wav(GENERATED_WAV, result.audio, result.sample_rate)
        stage.detail = (f"{GENERATED_WAV}: {settings.steps} growth steps, best of "
                        f"{settings.refinement.best_of}, {inverse.name}")
    with console.stage("measure") as stage:
        report, ceiling_audio = evaluate(target, result, inverse)
        report["refinement"] = settings.refinement.to_dict()
        workdir.write_wav(CEILING_WAV, ceiling_audio, result.sample_rate)
        workdir.write_metrics(report)
        stage.detail = f"{METRICS_FILE}: generated, {inverse.name} ceiling, static baseline"
    with console.stage("report") as stage:
        figure = io.BytesIO()
        plots.comparison(figure, target.audio, result.audio,
                         measuring_contract(target.contract),
                         title=f"mel L1 {report['generated']['mel_l1_db']:.2f} dB "
                               f"(ceiling {report['ceiling']['mel_l1_db']:.2f}, static "
                               f"{report['static_baseline']['mel_l1_db']:.2f})")
        workdir.write_bytes(COMPARISON_PNG, figure.getvalue())
        figure = io.BytesIO()
        vmax = float(np.max(target.contract.to_db(target.features[0])))
        plots.growth(figure, result.stages, result.stage_steps, target.contract, vmax,
                     target.representation.bin_label)
        workdir.write_bytes(GROWTH_PNG, figure.getvalue())
        page = report_page.write_report(workdir)
        stage.detail = f"{COMPARISON_PNG}, {GROWTH_PNG}, {REPORT_FILE}"
    _closing_lines(report, page, console)
    return report


def _closing_lines(report: dict, page, console: Console) -> None:
    """The warnings a run deserves, the timing of each stage, and the headline figures."""
    generated, ceiling = report["generated"], report["ceiling"]
    static = report["static_baseline"]
    if report["temporal_gain"] <= 1.0:
        console.warn(f"the generated note is no better than the static baseline (mel L1 "
                     f"{generated['mel_l1_db']:.2f} dB vs {static['mel_l1_db']:.2f} dB: its "
                     "time structure was not learned); train longer or check the recording")
    worse = worse_than_static(report)
    if worse:
        console.warn(f"worse than the static baseline on {len(worse)} metric(s) (generated "
                     f"vs static): {'; '.join(worse)}")
    console.line(console.timing_summary())
    console.line(f"done in {console.elapsed:.0f} s: mel L1 {generated['mel_l1_db']:.2f} dB "
                 f"(ceiling {ceiling['mel_l1_db']:.2f}, static baseline "
                 f"{static['mel_l1_db']:.2f}; temporal gain {report['temporal_gain']:.1f}x), "
                 f"MR-STFT {generated['mrstft']:.2f} (ceiling {ceiling['mrstft']:.2f}, static "
                 f"{static['mrstft']:.2f}); open {page}")


# ------------------------------------------------------------------------ the modes
def check_resumable(workdir: Workdir, config: ml_collections.ConfigDict, target: Target
                    ) -> None:
    """Refuse a workdir that holds a run this config cannot continue: another contract,
    recording length, model, pool size or representation."""
    if not workdir.has_run():
        return
    previous = workdir.read_run()
    field = previous.contract.first_difference(target.contract)
    if field is not None:
        raise WorkdirError(f"{workdir} holds a run under contract {previous.contract.name!r} "
                           f"({field} differs from {target.contract.name!r}); use a new "
                           "--workdir")
    if previous.n_frames != target.n_frames:
        raise WorkdirError(
            f"{workdir} holds a run on a {previous.n_frames}-frame target, this config gives "
            f"{target.n_frames} frames (another recording?); use a new --workdir")
    stored, current = previous.config, json.loads(config.to_json())
    # A model key newer than the stored run (absent there) was trained at its default.
    keys = [("model", key) for key in current["model"] if key in stored["model"]]
    keys.append(("train", "pool_size"))
    changed = [f"{section}.{key} ({stored[section].get(key)!r} there, {current[section][key]!r} "
               "here)" for section, key in keys
               if stored[section].get(key) != current[section][key]]
    if config_representation_name(stored) != config_representation_name(current):
        changed.append(f"representation ({config_representation_name(stored)!r} there, "
                       f"{config_representation_name(current)!r} here)")
    if changed:
        raise WorkdirError(
            f"{workdir} holds a run with another {', '.join(changed)}, which its checkpoints "
            "depend on; use the same values or a new --workdir")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | os.PathLike,
                       *, progress: bool = True, console: Console | None = None) -> dict:
    """`--mode=train`: the whole job in `workdir`; returns the metrics written to
    metrics.json. With `progress`, the progress bar shows; stage lines and the closing summary
    go to `console` (default: stderr when `progress`, else nowhere)."""
    console = console or Console(enabled=progress)
    workdir = Workdir(workdir)
    with contextlib.ExitStack() as held:  # the workdir's lock, from its first write on
        with console.stage("load") as stage:
            # Everything that can fail is checked before the first write, memory included.
            check_config(config, device_count=jax.device_count())
            # The TNCA grows exactly what the vocoder expects: the target under its contract.
            inverse = load_inverse(config_representation_name(config), config.vocoder,
                                   config.vocoder_path, contract=config.contract)
            target = load_target(config, inverse.representation)
            check_resumable(workdir, config, target)
            workdir.refuse_if_in_use()  # before the slow compile; `lock` checks again
            program = plan_training(config, target)
            workdir.prepare()
            held.enter_context(workdir.lock())
            workdir.write_wav(TARGET_WAV, target.audio, target.contract.sample_rate)
            seconds = len(target.audio) / target.contract.sample_rate
            stage.detail = (f"{config.audio_path}: {seconds:.2f} s -> "
                            f"{target.representation.name} grid {target.features.shape[1]} x "
                            f"{target.n_frames} ({target.contract.name}, "
                            f"~{program.memory.peak / 1e9:.2g} GB a step)")
        if target.cut:
            console.line(f"note: {target.cut}")
        with console.stage("train") as stage:
            model = train(config, workdir, target, progress=progress, program=program)
            log = workdir.read_log()
            stage.detail = (f"{config.train.iterations} iterations, grid L1 "
                            f"{log[-1]['grid_l1_db']:.2f} dB" if log else "")
        return render_and_report(config, workdir, target, model, inverse, console)


@contextlib.contextmanager
def _trained(config: ml_collections.ConfigDict, workdir: str | os.PathLike
             ) -> Iterator[tuple[TrainedRun, Inverse]]:
    """A trained workdir (locked for the block) and the config's way back to audio for it,
    checked first."""
    check_config(config)
    run = load_run(workdir)
    inverse = load_inverse(run.representation, config.vocoder, config.vocoder_path)
    with run.workdir.lock():
        yield run, inverse


def evaluate_workdir(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict:
    """`--mode=evaluate`: grow, measure and draw a trained workdir again, without training.

    The model and the recording come from the workdir (its run.json and latest checkpoint);
    `config` gives the seed, the vocoder and the `generate` section (steps, best-of-N,
    post-processing). Writes what `render_and_report` writes; returns a summary.
    """
    with _trained(config, workdir) as (run, inverse):
        report = render_and_report(config, run.workdir, run.target(), run.model, inverse,
                                   Console())
    return {"workdir": str(run.workdir), "report": str(run.workdir.file(REPORT_FILE)),
            "checkpoint_step": run.step, "generated": report["generated"],
            "ceiling": report["ceiling"], "best_of": report["best_of"]}


def growth_workdir(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict:
    """`--mode=growth`: growth.wav and growth.gif of a trained workdir (see `tnca_jax.growth`);
    the report page, where the workdir has been evaluated, is written again to include them.

    `config` gives the seed, the vocoder and the `generate` section (steps, num_stages,
    best-of-N, post-processing); the model comes from the workdir.
    """
    with _trained(config, workdir) as (run, inverse):
        result = render_run(run, inverse, RenderSettings.from_config(config),
                            return_stages=True)
        wav, gif = write_growth(run.workdir, result)
        summary = {"workdir": str(run.workdir), "growth_wav": str(wav), "growth_gif": str(gif),
                   "stage_steps": result.stage_steps}
        if run.workdir.has_metrics():
            summary["report"] = str(report_page.write_report(run.workdir))
    return summary


def ceiling(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict:
    """`--mode=ceiling`: the config's recording, under the config's vocoder's contract, through
    that vocoder. Writes ceiling_<vocoder>.wav and ceiling_<vocoder>.json (metrics, vocoder,
    contract) into `workdir`; returns a summary."""
    workdir = Workdir(workdir)
    check_config(config)
    inverse = load_inverse(config_representation_name(config), config.vocoder,
                           config.vocoder_path, contract=config.contract)
    target = load_target(config, inverse.representation)
    workdir.prepare()
    audio = ceiling_audio(target, inverse)
    [result] = scores(target.audio, [audio], inverse)
    stem = f"ceiling_{config.vocoder}"
    with workdir.lock():
        workdir.write_wav(f"{stem}.wav", audio, target.contract.sample_rate)
        path = workdir.write_json(f"{stem}.json", {
            "ceiling": result, "vocoder": config.vocoder, "vocoder_path": config.vocoder_path,
            "contract": target.contract.to_dict(), "audio_path": config.audio_path,
            "target_seconds": len(target.audio) / target.contract.sample_rate})
    return {"workdir": str(workdir), "report": str(path), "ceiling": result}


def generate_workdir(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict:
    """`--mode=generate`: grow a trained workdir's note again (the config's seed and `generate`
    section) and render it with the config's vocoder, whose contract must equal the workdir's
    (else ContractMismatchError). Writes generated_<vocoder>.wav and generated_<vocoder>.json
    (the sections of metrics.json); the training's own outputs stay as they are."""
    with _trained(config, workdir) as (run, inverse):
        target = run.target()
        result = render_run(run, inverse, RenderSettings.from_config(config))
        report, _ = evaluate(target, result, inverse)
        report["vocoder_path"] = config.vocoder_path
        stem = f"generated_{config.vocoder}"
        run.workdir.write_wav(f"{stem}.wav", result.audio, result.sample_rate)
        path = run.workdir.write_json(f"{stem}.json", report)
    return {"workdir": str(run.workdir), "report": str(path), "checkpoint_step": run.step,
            "generated": report["generated"], "ceiling": report["ceiling"]}


def train_summary(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict:
    """`--mode=train` as the command line reports it."""
    report = train_and_evaluate(config, workdir)
    return {"workdir": str(workdir), "generated": report["generated"],
            "ceiling_mel_l1_db": report["ceiling"]["mel_l1_db"],
            "static_mel_l1_db": report["static_baseline"]["mel_l1_db"],
            "temporal_gain": report["temporal_gain"]}


MODES: dict[str, Callable[[ml_collections.ConfigDict, str], dict]] = {
    "train": train_summary,
    "evaluate": evaluate_workdir,
    "growth": growth_workdir,
    "ceiling": ceiling,
    "generate": generate_workdir,
}
