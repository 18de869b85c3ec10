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

from tnca_jax import metrics, plots, timbre_train
from tnca_jax import report as report_page
from tnca_jax import timbre as timbre_lib
from tnca_jax.audio import fit_full_scale
from tnca_jax.checks import check_config, check_timbre_config
from tnca_jax.conditioning import InstrumentSpec, NoteSpec, pitch_to_midi
from tnca_jax.console import Console
from tnca_jax.contract import measuring_contract
from tnca_jax.corpus import midi_to_name
from tnca_jax.generation import (
    GenerationResult,
    RenderSettings,
    TrainedRun,
    load_run,
    render,
    render_run,
)
from tnca_jax.growth import write_growth
from tnca_jax.inverse import Inverse, companion, load_inverse
from tnca_jax.model import TNCA
from tnca_jax.note_set import Note, NoteSet, load_note_set
from tnca_jax.representations import config_representation_name
from tnca_jax.target import Target, load_target
from tnca_jax.timbre import TimbreRun, load_timbre_run, note_spec, render_request
from tnca_jax.train import plan_training, train
from tnca_jax.workdir import (
    CEILING_WAV,
    COMPARISON_PNG,
    GENERATED_WAV,
    GROWTH_PNG,
    METRICS_FILE,
    MORPH_PNG,
    NOTES_DIR,
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


OTHER_VOCODER_METRICS = ("mel_l1_db", "mrstft", "rms_ratio")


def other_vocoders(workdir: Workdir, target: Target, result: GenerationResult,
                   inverse: Inverse) -> dict:
    """The grown note and the recording's own features through the companion vocoder
    (`tnca_jax.inverse.companion`: Griffin-Lim beside the music vocoder and the reverse),
    written as generated_<vocoder>.wav and ceiling_<vocoder>.wav, with their main metrics:
    {vocoder: {"generated": ..., "ceiling": ..., "files": [...]}} (empty without one)."""
    other = companion(inverse)
    if other is None:
        return {}
    generated = fit_full_scale(other(result.features[None])[0])
    best = ceiling_audio(target, other)
    files = [f"generated_{other.name}.wav", f"ceiling_{other.name}.wav"]
    for name, audio in zip(files, (generated, best), strict=True):
        workdir.write_wav(name, audio, target.contract.sample_rate)
    ours, ceiling = (scored.to_dict() for scored in metrics.compare_many(
        target.audio, [generated, best], measuring_contract(target.contract),
        only=OTHER_VOCODER_METRICS))
    keep = {name: ours[name] for name in OTHER_VOCODER_METRICS}
    return {other.name: {"generated": keep, "files": files,
                         "ceiling": {name: ceiling[name] for name in OTHER_VOCODER_METRICS}}}


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
        report["other_vocoders"] = other_vocoders(workdir, target, result, inverse)
        workdir.write_wav(CEILING_WAV, ceiling_audio, result.sample_rate)
        workdir.write_metrics(report)
        stage.detail = f"{METRICS_FILE}: generated, {inverse.name} ceiling, static baseline"
        if report["other_vocoders"]:
            stage.detail += f", the same note through {', '.join(report['other_vocoders'])}"
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
            # The audio losses, if any, render through the run's vocoder where it is
            # differentiable JAX (music), else through unrolled Griffin-Lim.
            program = plan_training(config, target, vocoder=inverse.differentiable_vocoder)
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


# ------------------------------------------------------------------------ the timbre job
def check_timbre_resumable(workdir: Workdir, config: ml_collections.ConfigDict,
                           note_set: NoteSet) -> None:
    """Refuse a workdir that holds a run this timbre config cannot continue."""
    if not workdir.has_run():
        return
    previous = workdir.read_run()
    if previous.timbre is None:
        raise WorkdirError(f"{workdir} holds a single-note run; use a new --workdir for the "
                           "timbre job")
    field = previous.contract.first_difference(note_set.representation.contract)
    changed = [f"contract ({field} differs)"] if field else []
    if previous.n_frames != note_set.grid_frames:
        changed.append(f"grid ({previous.n_frames} frames there, {note_set.grid_frames} here)")
    if "prior" not in previous.timbre:
        changed.append("model version (trained without the spectrum prior)")
    trained = sum(not n["held_out"] for n in previous.timbre["notes"])
    if trained != len(note_set.training):
        changed.append(f"training set ({trained} notes there, {len(note_set.training)} here)")
    if tuple(previous.timbre["instruments"]) != note_set.instruments:
        changed.append(f"instruments ({', '.join(previous.timbre['instruments'])} there, "
                       f"{', '.join(note_set.instruments)} here)")
    stored, current = previous.config, json.loads(config.to_json())
    changed += [f"{section}.{key} ({stored[section].get(key)!r} there, "
                f"{current[section][key]!r} here)"
                for section, key in [("model", k) for k in current["model"]]
                + [("train", "pool_size")] if stored[section].get(key) != current[section][key]]
    if changed:
        raise WorkdirError(f"{workdir} holds a timbre run with another {', '.join(changed)}, "
                           "which its checkpoints depend on; use the same values or a new "
                           "--workdir")


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "#-" else "_" for c in text).strip("_")


def timbre_demos(config: ml_collections.ConfigDict, run: TimbreRun, inverse: Inverse,
                 measured: list[Note]) -> dict:
    """What a listener hears of a timbre run, written under notes/: one note of every
    instrument at a pitch it was not trained on, a morph between the two instruments with
    the most notes (and its centroid and harmonic-to-noise curve), a glide between them, and
    regrowth of up to three measured notes after erasing the middle of their frames.
    Returns metrics.json's "demos", "morph" and "regrowth" sections."""
    generate = config.generate
    seed, steps = config.seed, generate.steps
    frames = run.frames(generate.seconds)
    rate = run.contract.sample_rate
    demos = []
    for instrument in run.instruments:
        unseen = [n["midi"] for n in run.notes if n["instrument"] == instrument and n["held_out"]]
        midi = unseen[0] if unseen else pitch_to_midi(generate.pitch)
        result = render_request(run, inverse, note_spec(run, instrument, midi, frames),
                                steps=steps, seed=seed, num_stages=1)
        name = f"{NOTES_DIR}/{instrument}_{midi_to_name(midi)}.wav"
        run.workdir.write_wav(name, result.audio, rate)
        unheard = " (a pitch it never trained on)" if unseen else ""
        demos.append({"file": name, "kind": "note",
                      "label": f"{instrument} {midi_to_name(midi)}, {generate.seconds:g} s"
                               f"{unheard}"})
    counts = {i: sum(n["instrument"] == i and not n["held_out"] for n in run.notes)
              for i in run.instruments}
    morph = None
    if len(run.instruments) > 1:
        start, end = sorted(run.instruments, key=lambda i: -counts[i])[:2]
        midi = pitch_to_midi(generate.pitch)
        curve = timbre_lib.morph_curve(run, inverse, start, end, midi, frames, steps=steps,
                                       seed=seed)
        for weight, audio in zip(curve["weights"], curve.pop("audio"), strict=True):
            name = f"{NOTES_DIR}/morph_{start}_{end}_{weight:.2f}.wav"
            run.workdir.write_wav(name, audio, rate)
            demos.append({"file": name, "kind": "morph",
                          "label": f"{1 - weight:.2f} {start} + {weight:.2f} {end}, "
                                   f"{midi_to_name(midi)}"})
        glide = render_request(run, inverse, note_spec(run, start, midi, frames, end),
                               steps=steps, seed=seed, num_stages=1)
        name = f"{NOTES_DIR}/glide_{start}_{end}.wav"
        run.workdir.write_wav(name, glide.audio, rate)
        demos.append({"file": name, "kind": "glide",
                      "label": f"{start} gliding to {end}, {midi_to_name(midi)}"})
        morph = curve
    regrowth = []
    erase = timbre_lib.Erase(generate.erase_fraction, generate.erase_at)
    contract = measuring_contract(run.contract)
    for note in measured[:3]:
        kept, _, regrown = timbre_lib.regrow_notes(
            run, [note.spec], erase_fraction=erase.fraction, erase_at=erase.at_step,
            steps=steps, seed=seed)[0]
        kept_audio, regrown_audio = timbre_lib.render_features(inverse, [kept, regrown])
        undamaged = metrics.mel_l1_db(note.audio, kept_audio, contract)
        healed = metrics.mel_l1_db(note.audio, regrown_audio, contract)
        name = f"{NOTES_DIR}/regrown_{_slug(note.name)}.wav"
        run.workdir.write_wav(name, regrown_audio, rate)
        demos.append({"file": name, "kind": "regrown",
                      "label": f"{note.name}: the middle {erase.fraction:.0%} of its frames "
                               f"erased after {erase.at_step} steps, regrown for {steps}"})
        regrowth.append({"note": note.name, "held_out": note.held_out,
                         "erase_fraction": erase.fraction, "erase_at": erase.at_step,
                         "steps_after": steps, "undamaged_mel_l1_db": undamaged,
                         "regrown_mel_l1_db": healed, "ratio": healed / max(undamaged, 1e-9)})
    return {"demos": demos, "morph": morph, "regrowth": regrowth}


def timbre_render_and_report(config: ml_collections.ConfigDict, run: TimbreRun,
                             note_set: NoteSet, inverse: Inverse, console: Console) -> dict:
    """Measure every evaluated note (held-out first) against its recording, write the demos,
    metrics.json and report.html of a timbre run, one console stage each; returns the
    metrics written."""
    generate = config.generate
    with console.stage("measure") as stage:
        measured = timbre_lib.evaluation_notes(note_set, config.eval.max_notes)
        rows = timbre_lib.measure_notes(run, inverse, measured, steps=generate.steps,
                                        seed=config.seed, f0=config.eval.f0)
        summary = timbre_lib.summarise(rows)
        stage.detail = (f"{len(rows)} notes against their recordings "
                        f"({sum(r['held_out'] for r in rows)} held out)")
    with console.stage("demos") as stage:
        demos = timbre_demos(config, run, inverse, measured)
        stage.detail = f"{len(demos['demos'])} WAVs in {run.workdir.file(NOTES_DIR)}"
    report = {"job": "timbre", "contract": run.contract.name, "vocoder": inverse.name,
              "instruments": list(run.instruments), "checkpoint_step": run.step,
              "training_notes": sum(not n["held_out"] for n in run.notes),
              "notes": rows, "summary": summary, **demos}
    with console.stage("report") as stage:
        run.workdir.write_metrics(report)
        if demos["morph"]:
            figure = io.BytesIO()
            plots.morph_curve(figure, demos["morph"])
            run.workdir.write_bytes(MORPH_PNG, figure.getvalue())
        page = report_page.write_report(run.workdir)
        stage.detail = f"{METRICS_FILE}, {REPORT_FILE}"
    seen = [r for r in rows if not r["held_out"]]
    losing = [r["name"] for r in seen if r["temporal_gain"] <= 1.0]
    if losing:
        console.warn(f"{len(losing)} of {len(seen)} seen notes are no better than their static "
                     f"baseline: {', '.join(losing[:5])}{' ...' if len(losing) > 5 else ''}; "
                     "train longer")
    console.line(console.timing_summary())
    parts = [f"{split} mel L1 {part['mel_l1_db']['mean']:.2f} dB (static "
             f"{part['static_mel_l1_db']['mean']:.2f}; temporal gain "
             f"{part['temporal_gain']['mean']:.1f}x, worst {part['temporal_gain']['worst']:.1f}x)"
             for split, part in summary.items()]
    console.line(f"done in {console.elapsed:.0f} s: {'; '.join(parts)}; open {page}")
    return report


def timbre_train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | os.PathLike,
                              *, progress: bool = True, console: Console | None = None) -> dict:
    """The timbre job's `--mode=train`: load and label the notes, train one TNCA on them,
    then measure, render the demos and report (see `timbre_render_and_report`)."""
    console = console or Console(enabled=progress)
    workdir = Workdir(workdir)
    with contextlib.ExitStack() as held:
        with console.stage("load") as stage:
            check_timbre_config(config, device_count=jax.device_count())
            inverse = load_inverse("mel", config.vocoder, config.vocoder_path,
                                   contract=config.contract)
            note_set = load_note_set(config.data, inverse.representation)
            check_timbre_resumable(workdir, config, note_set)
            workdir.refuse_if_in_use()
            program = timbre_train.plan_training(config, note_set)
            workdir.prepare()
            held.enter_context(workdir.lock())
            stage.detail = (f"{len(note_set.training)} training notes of "
                            f"{', '.join(note_set.instruments)}, {len(note_set.held_out)} held "
                            f"out; grid {note_set.representation.n_bins} x "
                            f"{note_set.grid_frames}, ~{program.memory.peak / 1e9:.2g} GB a step")
        with console.stage("train") as stage:
            model = train(config, workdir, program=program, progress=progress)
            log = workdir.read_log()
            stage.detail = (f"{config.train.iterations} iterations, grid L1 "
                            f"{log[-1]['grid_l1_db']:.2f} dB" if log else "")
        run = TimbreRun(workdir=workdir, config=config, representation=note_set.representation,
                        instruments=note_set.instruments,
                        notes=tuple(n.to_dict() for n in note_set.notes),
                        prior=note_set.prior, grid_frames=note_set.grid_frames, model=model,
                        step=config.train.iterations)
        return timbre_render_and_report(config, run, note_set, inverse, console)


@contextlib.contextmanager
def _trained_timbre(config: ml_collections.ConfigDict, workdir: str | os.PathLike
                    ) -> Iterator[tuple[TimbreRun, Inverse]]:
    check_timbre_config(config)
    run = load_timbre_run(workdir)
    inverse = load_inverse(run.representation, config.vocoder, config.vocoder_path)
    with run.workdir.lock():
        yield run, inverse


def timbre_evaluate(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict:
    """`--mode=evaluate` of the timbre job: measure, demos and report again, no training (the
    notes are those of the run's own config)."""
    with _trained_timbre(config, workdir) as (run, inverse):
        note_set = load_note_set(run.config.data, run.representation)
        report = timbre_render_and_report(config, run, note_set, inverse, Console())
    return {"workdir": str(run.workdir), "report": str(run.workdir.file(REPORT_FILE)),
            "checkpoint_step": run.step, "summary": report["summary"]}


def _requested(config: ml_collections.ConfigDict, run: TimbreRun) -> NoteSpec:
    generate = config.generate
    return note_spec(run, generate.instrument, generate.pitch, run.frames(generate.seconds),
                     generate.glide_to)


def _describe_request(request: NoteSpec) -> str:
    def name(spec: InstrumentSpec) -> str:
        return spec if isinstance(spec, str) else "+".join(f"{k}{w:g}" for k, w in spec.items())

    glide = f"_to_{name(request.glide_to)}" if request.glide_to is not None else ""
    return _slug(f"{name(request.instrument)}{glide}_{midi_to_name(request.midi)}")


def timbre_generate(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict:
    """`--mode=generate` of the timbre job: the note of `config.generate` (instrument or blend,
    glide_to, pitch, seconds), written as generated_<note>.wav with its request as JSON."""
    with _trained_timbre(config, workdir) as (run, inverse):
        request = _requested(config, run)
        result = render_request(run, inverse, request, steps=config.generate.steps,
                                seed=config.seed, num_stages=1)
        stem = f"generated_{_describe_request(request)}"
        wav = run.workdir.write_wav(f"{stem}.wav", result.audio, result.sample_rate)
        note = {"instrument": request.instrument, "glide_to": request.glide_to,
                "midi": request.midi, "loudness_db": request.loudness_db,
                "frames": request.frames, "seconds": len(result.audio) / result.sample_rate,
                "vocoder": inverse.name, "checkpoint_step": run.step}
        path = run.workdir.write_json(f"{stem}.json", note)
    return {"workdir": str(run.workdir), "wav": str(wav), "report": str(path), **note}


def timbre_growth(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict:
    """`--mode=growth` of the timbre job: growth.wav and growth.gif of the note of
    `config.generate` (a blend or glide too)."""
    with _trained_timbre(config, workdir) as (run, inverse):
        result = render_request(run, inverse, _requested(config, run),
                                steps=config.generate.steps, seed=config.seed,
                                num_stages=config.generate.num_stages, return_stages=True)
        wav, gif = write_growth(run.workdir, result)
    return {"workdir": str(run.workdir), "growth_wav": str(wav), "growth_gif": str(gif),
            "stage_steps": result.stage_steps}


def timbre_train_summary(config: ml_collections.ConfigDict, workdir: str | os.PathLike
                         ) -> dict:
    """The timbre job's `--mode=train` as the command line reports it."""
    report = timbre_train_and_evaluate(config, workdir)
    return {"job": "timbre", "workdir": str(workdir),
            "report": str(Workdir(workdir).file(REPORT_FILE)), "summary": report["summary"],
            "regrowth": report["regrowth"]}


TIMBRE_MODES: dict[str, Callable[[ml_collections.ConfigDict, str], dict]] = {
    "train": timbre_train_summary,
    "evaluate": timbre_evaluate,
    "growth": timbre_growth,
    "generate": timbre_generate,
}
