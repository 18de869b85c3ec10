"""The modes of the two TNCA jobs (`note`: one recording; `instruments`: many notes), each
`(settings, workdir) -> summary dict`:

- `train` (default): train on the notes, then render, measure and report (`train_and_evaluate`).
- `evaluate`: measure and report a trained workdir again (report.html).
- `growth`: growth.wav and growth.gif of a trained workdir (every growth stage rendered).
- `ceiling`: the vocoder on the recordings' own features, before any training.
- `generate`: a trained workdir's note (a `note` run's, or `generate`'s request of an
  `instruments` run) rendered with the settings' vocoder under the same contract.
- `play`: a MIDI file (`generate.midi`; None: a demo phrase) played by an instruments model.
- `export`: the trained model as one weights file (`model.safetensors`), which `generate()`,
  `play()` and the modes load without a workdir.
An instruments job's `evaluate`-free modes (generate, growth, play) use the shipped model when
the workdir holds no run: nothing to train first.

Settings are checked as they are made (`tnca_jax.settings`); each mode then loads what it
needs (the recordings, the vocoder) before it writes anything.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from tnca_jax import distributed, evaluation, plots
from tnca_jax import report as report_page
from tnca_jax.conditioning import InstrumentSpec, NoteSpec
from tnca_jax.console import Console
from tnca_jax.contract import measuring_contract
from tnca_jax.corpus import midi_to_name
from tnca_jax.errors import ConfigError, WorkdirError
from tnca_jax.generation import (
    GenerationResult,
    note_spec,
    parse_instrument,
    render,
    render_features,
)
from tnca_jax.growth import write_growth
from tnca_jax.inverse import Inverse, load_inverse
from tnca_jax.notes import NoteSet, load_note, load_note_set
from tnca_jax.phrases import DEMO, Phrase, phrase_notes, render_phrase
from tnca_jax.records import RunMetrics, summarise
from tnca_jax.report import write_phrase_page
from tnca_jax.runs import (
    SHIPPED_MODEL,
    Run,
    check_resumable,
    describe,
    export_weights,
    load_run,
    notes_of,
    recording_of,
)
from tnca_jax.settings import CorpusData, TncaSettings
from tnca_jax.tnca_training import plan_training
from tnca_jax.training import merge_state, train
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
)


def load_notes(settings: TncaSettings, inverse: Inverse) -> NoteSet:
    """The recordings of the settings' data, as the representation the vocoder expects."""
    if isinstance(settings.data, CorpusData):
        return load_note_set(settings.data, inverse.representation, settings.model.prior)
    return load_note(settings.data, inverse.representation)


def new_inverse(settings: TncaSettings) -> Inverse:
    """The settings' way back to audio for a new run (a learned vocoder brings its contract)."""
    return load_inverse(settings.representation, settings.vocoder, settings.vocoder_path,
                        contract=settings.contract)


# ------------------------------------------------------------------------ train
def train_and_evaluate(settings: TncaSettings, workdir: str | os.PathLike, *,
                       progress: bool = True, console: Console | None = None
                       ) -> RunMetrics | None:
    """`--mode=train`: the whole job in `workdir`; returns the metrics written to metrics.json.
    With `progress`, the progress bar shows; stage lines and the closing summary go to
    `console` (default: stderr when `progress`, else nowhere). In a multi-process run
    (`tnca_jax.distributed`) every process trains and process 0 alone writes, evaluates and
    reports; the others return None."""
    main = distributed.is_main()
    console = console or Console(enabled=progress and main)
    workdir = Workdir(workdir)
    with contextlib.ExitStack() as held:  # the workdir's lock, from its first write on
        with console.stage("load") as stage:
            # The TNCA grows exactly what the vocoder expects: the notes under its contract.
            inverse = new_inverse(settings)
            notes = load_notes(settings, inverse)
            check_resumable(workdir, settings, notes)
            if main:
                workdir.refuse_if_in_use()  # before the slow compile; `lock` checks again
            # The audio losses, if any, render through the run's vocoder where it is
            # differentiable JAX (music), else through unrolled Griffin-Lim.
            program = plan_training(settings, notes,
                                    lambda w: w.write_run(describe(settings, notes)),
                                    vocoder=inverse.differentiable_vocoder)
            if main:
                workdir.prepare()
                held.enter_context(workdir.lock())
                if not notes.conditioned:
                    workdir.write_wav(TARGET_WAV, notes.notes[0].audio,
                                      notes.representation.contract.sample_rate)
            distributed.barrier("workdir locked")
            stage.detail = (f"{_describe_notes(notes)} -> {notes.representation.name} grid "
                            f"{notes.representation.n_bins} x {notes.grid_frames} "
                            f"({notes.representation.contract.name}, "
                            f"~{program.memory.peak / 1e9:.2g} GB a step)")
        for note in notes.notes:
            if note.cut:
                console.line(f"note: {note.cut}")
        with console.stage("train") as stage:
            graphdefs, state = train(program, workdir, settings.train, progress=progress)
            log = workdir.read_log()
            stage.detail = (f"{settings.train.iterations} iterations, grid L1 "
                            f"{log[-1]['grid_l1_db']:.2f} dB" if log else "")
        if not main:
            return None
        model, _ = merge_state(graphdefs, distributed.local_copy(state))
        run = Run.trained(workdir, settings, notes, model)
        return evaluate_and_report(run, notes, inverse, console)


def _describe_notes(notes: NoteSet) -> str:
    if not notes.conditioned:
        note = notes.notes[0]
        return f"{note.path}: {len(note.audio) / notes.representation.contract.sample_rate:.2f} s"
    return (f"{len(notes.training)} training notes of {', '.join(notes.instruments)}, "
            f"{len(notes.held_out)} held out")


# ------------------------------------------------------------------------ measure and report
def evaluate_and_report(run: Run, notes: NoteSet, inverse: Inverse, console: Console
                        ) -> RunMetrics:
    """Grow, render, measure and draw a run's notes into its workdir (metrics.json,
    report.html and the job's own files), one console stage each, then the closing lines."""
    if run.conditioned:
        report = _instruments_report(run, notes, inverse, console)
    else:
        report = _note_report(run, notes, inverse, console)
    console.line(console.timing_summary())
    parts = []
    for split, part in report.summary.items():
        parts.append(f"{split} mel L1 {part['mel_l1_db']['mean']:.2f} dB (ceiling "
                     f"{part.get('ceiling_mel_l1_db', float('nan')):.2f}, static "
                     f"{part['static_baseline_mel_l1_db']:.2f}; temporal gain "
                     f"{part['temporal_gain']['mean']:.1f}x), MR-STFT "
                     f"{part['mrstft']['mean']:.2f}")
    console.line(f"done in {console.elapsed:.0f} s: {'; '.join(parts)}; open "
                 f"{run.workdir.file(REPORT_FILE)}")
    return report


def _note_report(run: Run, notes: NoteSet, inverse: Inverse, console: Console) -> RunMetrics:
    """A `note` run: generated.wav, ceiling.wav, metrics.json, comparison.png, growth.png,
    report.html."""
    note, generate, workdir = notes.notes[0], run.settings.generate, run.workdir
    with console.stage("render") as stage:
        result = render(run, inverse, generate, run.settings.seed, reference=note.audio)
        workdir.write_wav(GENERATED_WAV, result.audio, result.sample_rate)
        stage.detail = (f"{GENERATED_WAV}: {generate.growth_steps} growth steps, best of "
                        f"{generate.best_of}, {inverse.name}")
    with console.stage("measure") as stage:
        [ceiling_audio] = render_features(inverse, [note.features])
        measured = evaluation.measure(note, result.audio, inverse, ceiling=ceiling_audio,
                                      grown=result.spectrogram)
        workdir.write_wav(CEILING_WAV, ceiling_audio, result.sample_rate)
        report = RunMetrics(
            job=run.settings.job, contract=run.contract.name, vocoder=inverse.name,
            representation=run.representation.name, checkpoint_step=run.step,
            notes=[measured], summary=summarise([measured]),
            refinement=generate.refinement.to_dict(),
            best_of=result.selection.to_dict() if result.selection else None,
            other_vocoders=evaluation.other_vocoders(workdir, note, result, inverse),
            extra={"target_seconds": len(note.audio) / result.sample_rate})
        workdir.write_metrics(report.to_dict())
        stage.detail = f"{METRICS_FILE}: generated, {inverse.name} ceiling, static baseline"
        if report.other_vocoders:
            stage.detail += f", the same note through {', '.join(report.other_vocoders)}"
    with console.stage("report") as stage:
        _draw_note(workdir, note, result, measured)
        report_page.write_report(workdir)
        stage.detail = f"{COMPARISON_PNG}, {GROWTH_PNG}, {REPORT_FILE}"
    if measured.temporal_gain <= 1.0:
        console.warn(f"the generated note is no better than the static baseline (mel L1 "
                     f"{measured.generated.mel_l1_db:.2f} dB vs "
                     f"{measured.static_baseline.mel_l1_db:.2f} dB: its time structure was "
                     "not learned); train longer or check the recording")
    return report


def _draw_note(workdir: Workdir, note, result: GenerationResult, measured) -> None:
    figure = io.BytesIO()
    plots.comparison(figure, note.audio, result.audio, measuring_contract(result.contract),
                     title=f"mel L1 {measured.generated.mel_l1_db:.2f} dB (ceiling "
                           f"{measured.ceiling.mel_l1_db:.2f}, static "
                           f"{measured.static_baseline.mel_l1_db:.2f})")
    workdir.write_bytes(COMPARISON_PNG, figure.getvalue())
    figure = io.BytesIO()
    vmax = float(np.max(result.contract.to_db(note.features[0])))
    plots.growth(figure, result.stages, result.stage_steps, result.contract, vmax,
                 result.representation.bin_label)
    workdir.write_bytes(GROWTH_PNG, figure.getvalue())


def _instruments_report(run: Run, notes: NoteSet, inverse: Inverse, console: Console
                        ) -> RunMetrics:
    """An `instruments` run: every evaluated note (held-out first) measured, the demos under
    notes/, metrics.json, morph.png, report.html."""
    settings = run.settings
    with console.stage("measure") as stage:
        measured = evaluation.evaluation_notes(notes, settings.eval.max_notes)
        names = (evaluation.NOTE_METRICS if settings.eval.f0
                 else evaluation.NOTE_METRICS[:-1])
        rows = evaluation.measure_notes(run, inverse, measured,
                                        growth_steps=settings.generate.growth_steps,
                                        seed=settings.seed, only=names, ceiling=True)
        stage.detail = (f"{len(rows)} notes against their recordings "
                        f"({sum(r.held_out for r in rows)} held out)")
    with console.stage("demos") as stage:
        demos = evaluation.demos(run, inverse, measured)
        stage.detail = f"{len(demos['demos'])} WAVs in {run.workdir.file(NOTES_DIR)}"
    report = RunMetrics(
        job=settings.job, contract=run.contract.name, vocoder=inverse.name,
        representation=run.representation.name, checkpoint_step=run.step, notes=rows,
        summary=summarise(rows), **demos,
        extra={"instruments": list(run.instruments),
               "training_notes": sum(not n["held_out"] for n in run.notes)})
    with console.stage("report") as stage:
        run.workdir.write_metrics(report.to_dict())
        if report.morph:
            figure = io.BytesIO()
            plots.morph_curve(figure, report.morph)
            run.workdir.write_bytes(MORPH_PNG, figure.getvalue())
        report_page.write_report(run.workdir)
        stage.detail = f"{METRICS_FILE}, {REPORT_FILE}"
    losing = [r.name for r in rows if not r.held_out and r.temporal_gain <= 1.0]
    if losing:
        console.warn(f"{len(losing)} seen notes are no better than their static baseline: "
                     f"{', '.join(losing[:5])}{' ...' if len(losing) > 5 else ''}; train longer")
    return report


# ------------------------------------------------------------------------ trained workdirs
@contextlib.contextmanager
def _trained(settings: TncaSettings, workdir: str | os.PathLike) -> Iterator[tuple[Run, Inverse]]:
    """A trained workdir of this job (locked for the block) and the settings' vocoder for it.
    The model and its notes are the workdir's; how it is grown, rendered and measured (the
    seed, `generate`, `eval`, the vocoder) are the settings'."""
    output = Workdir(workdir)
    if not output.has_run() and settings.job == "instruments":
        run = dataclasses.replace(load_run(None), workdir=output)  # the shipped model
        output.prepare()
        Console().line(f"note: {output} holds no trained run: using the shipped model "
                       f"({SHIPPED_MODEL.name}, {', '.join(run.instruments)})")
    else:
        run = load_run(workdir)
    if run.settings.job != settings.job:
        raise WorkdirError(f"{run.workdir} holds a {run.settings.job!r} run; this config is a "
                           f"{settings.job!r} job")
    run = dataclasses.replace(run, settings=dataclasses.replace(
        run.settings, seed=settings.seed, generate=settings.generate, eval=settings.eval,
        vocoder=settings.vocoder, vocoder_path=settings.vocoder_path))
    inverse = load_inverse(run.representation, settings.vocoder, settings.vocoder_path)
    with run.workdir.lock():
        yield run, inverse


def evaluate(settings: TncaSettings, workdir: str | os.PathLike) -> dict:
    """`--mode=evaluate`: grow, measure and report a trained workdir again, without training
    (the notes are the run's own; the settings give the vocoder)."""
    with _trained(settings, workdir) as (run, inverse):
        report = evaluate_and_report(run, notes_of(run), inverse, Console())
    return {"workdir": str(run.workdir), "report": str(run.workdir.file(REPORT_FILE)),
            "checkpoint_step": run.step, "summary": report.summary}


def _request(settings: TncaSettings, run: Run) -> NoteSpec | None:
    """`generate`'s note of an instruments run (None for a note run: its own note)."""
    if not run.conditioned:
        return None
    generate = settings.generate
    return note_spec(run, generate.instrument, generate.pitch, run.frames(generate.seconds),
                     generate.glide_to)


def growth(settings: TncaSettings, workdir: str | os.PathLike) -> dict:
    """`--mode=growth`: growth.wav and growth.gif of a trained workdir's note (see
    `tnca_jax.growth`); the report page, where the workdir has been measured, is written
    again to include them."""
    with _trained(settings, workdir) as (run, inverse):
        result = render(run, inverse, settings.generate, settings.seed,
                        request=_request(settings, run), return_stages=True,
                        reference=(None if run.conditioned or settings.generate.best_of == 1
                                   else recording_of(run).audio))
        wav, gif = write_growth(run.workdir, result)
        summary = {"workdir": str(run.workdir), "growth_wav": str(wav), "growth_gif": str(gif),
                   "stage_steps": result.stage_steps}
        if run.workdir.has_metrics() and not run.conditioned:
            summary["report"] = str(report_page.write_report(run.workdir))
    return summary


def _describe_request(request: NoteSpec) -> str:
    def name(spec: InstrumentSpec) -> str:
        return spec if isinstance(spec, str) else "+".join(f"{k}{w:g}" for k, w in spec.items())

    glide = f"_to_{name(request.glide_to)}" if request.glide_to is not None else ""
    return evaluation._slug(f"{name(request.instrument)}{glide}_{midi_to_name(request.midi)}")


def generate(settings: TncaSettings, workdir: str | os.PathLike) -> dict:
    """`--mode=generate`: a `note` run's note grown again and rendered with the settings'
    vocoder (whose contract must equal the run's), measured against its recording, written as
    generated_<vocoder>.wav and .json; an `instruments` run's `generate` request (instrument or
    blend, glide_to, pitch, seconds), written as generated_<note>.wav and .json."""
    with _trained(settings, workdir) as (run, inverse):
        request = _request(settings, run)
        if request is None:
            note = recording_of(run)
            result = render(run, inverse, settings.generate, settings.seed, reference=note.audio)
            payload = {"note": evaluation.measure(note, result.audio, inverse,
                                                  grown=result.spectrogram).to_dict(),
                       "vocoder": inverse.name, "vocoder_path": settings.vocoder_path}
            stem = f"generated_{inverse.name}"
        else:
            result = render(run, inverse, settings.generate, settings.seed, request=request)
            payload = {"instrument": request.instrument, "glide_to": request.glide_to,
                       "midi": request.midi, "loudness_db": request.loudness_db,
                       "frames": request.frames, "vocoder": inverse.name}
            stem = f"generated_{_describe_request(request)}"
        payload.update(seconds=len(result.audio) / result.sample_rate, checkpoint_step=run.step)
        wav = run.workdir.write_wav(f"{stem}.wav", result.audio, result.sample_rate)
        path = run.workdir.write_json(f"{stem}.json", payload)
    return {"workdir": str(run.workdir), "wav": str(wav), "report": str(path), **payload}


def ceiling(settings: TncaSettings, workdir: str | os.PathLike) -> dict:
    """`--mode=ceiling`: the settings' recordings (a note job's one; an instruments job's
    evaluated notes, held-out first), under the vocoder's contract, through that vocoder:
    what no model can beat with it. Writes ceiling_<vocoder>.wav (the first note) and
    ceiling_<vocoder>.json (every note's metrics) into `workdir`."""
    workdir = Workdir(workdir)
    inverse = new_inverse(settings)
    notes = load_notes(settings, inverse)
    chosen = (evaluation.evaluation_notes(notes, settings.eval.max_notes)
              if notes.conditioned else list(notes.notes))
    only = None if not notes.conditioned else evaluation.NOTE_METRICS[
        :None if settings.eval.f0 else -1]
    rendered = render_features(inverse, [note.features for note in chosen])
    rows = [{"note": note.to_dict(), "ceiling": evaluation.measure(
        note, audio, inverse, only=only, ceiling=False).generated.to_dict()}
            for note, audio in zip(chosen, rendered, strict=True)]
    workdir.prepare()
    stem = f"ceiling_{inverse.name}"
    with workdir.lock():
        workdir.write_wav(f"{stem}.wav", rendered[0], inverse.contract.sample_rate)
        path = workdir.write_json(f"{stem}.json", {
            "vocoder": inverse.name, "vocoder_path": settings.vocoder_path,
            "contract": inverse.contract.to_dict(), "notes": rows})
    return {"workdir": str(workdir), "report": str(path),
            "ceiling": rows[0]["ceiling"] if len(rows) == 1 else
            {"notes": len(rows), "mel_l1_db": float(np.mean(
                [r["ceiling"]["mel_l1_db"] for r in rows]))}}


def play(settings: TncaSettings, workdir: str | os.PathLike) -> dict:
    """`--mode=play`: `generate.midi` (None: a demo phrase) played with `generate.instrument`,
    written as play_<name>.wav and play_<name>.html (its piano roll over its log-mel)."""
    if settings.job != "instruments":
        raise ConfigError("--mode=play needs an instruments model (configs/instruments.py)")
    generate = settings.generate
    notes = phrase_notes(generate.midi if generate.midi else DEMO)
    with _trained(settings, workdir) as (run, inverse):
        note_spec(run, generate.instrument, notes[0].midi, 2)
        audio = render_phrase(run, inverse, notes, parse_instrument(generate.instrument),
                              growth_steps=generate.growth_steps, seed=settings.seed)
        phrase = Phrase(audio, run.contract.sample_rate, tuple(notes),
                        parse_instrument(generate.instrument), run.contract)
        name = Path(generate.midi).stem if generate.midi else "demo"
        page = write_phrase_page(run.workdir, f"play_{evaluation._slug(name)}", phrase)
    return {"workdir": str(run.workdir), "wav": str(page.with_suffix(".wav")),
            "report": str(page), "notes": len(notes),
            "seconds": len(audio) / phrase.sample_rate}


def export(settings: TncaSettings, workdir: str | os.PathLike) -> dict:
    """`--mode=export`: a trained workdir's model as one weights file, model.safetensors."""
    run = load_run(workdir)
    if run.settings.job != settings.job:
        raise WorkdirError(f"{run.workdir} holds a {run.settings.job!r} run; this config is a "
                           f"{settings.job!r} job")
    path = run.workdir.file(EXPORT_FILE)
    with run.workdir.lock(), run.workdir.writing(name=EXPORT_FILE):
        export_weights(run, path)
    return {"workdir": str(run.workdir), "weights": str(path), "checkpoint_step": run.step,
            "megabytes": round(path.stat().st_size / 1e6, 2)}


def train_summary(settings: TncaSettings, workdir: str | os.PathLike) -> dict:
    """`--mode=train` as the command line reports it."""
    report = train_and_evaluate(settings, workdir)
    if report is None:
        return distributed.helper_summary(settings.job, workdir, settings.train.iterations)
    return {"job": settings.job, "workdir": str(workdir),
            "report": str(Workdir(workdir).file(REPORT_FILE)), "summary": report.summary}


MODES = {"train": train_summary, "evaluate": evaluate, "growth": growth, "ceiling": ceiling,
         "generate": generate, "play": play, "export": export}
EXPORT_FILE = "model.safetensors"
