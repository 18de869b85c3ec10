"""The report page: one self-contained HTML file that settles "does it sound like the recording".

`write_report(workdir)` reads what a run left in its workdir and writes `report.html`: audio
players (target, generated, ceiling; growth.wav where `--mode=growth` ran), the comparison
figure, the growth strip (and growth.gif), the training curve, the metrics table (generated,
ceiling and static baseline beside each other, with each metric's ideal and meaning) and the
best-of-N record; for a many-note (timbre) run, the notes measured (seen and held out) and
players for generated, morphed, gliding and regrown notes. Audio and images are embedded as
base64 data URIs and the page runs no script, so the single file opens anywhere, offline.
`show(workdir)` displays it in a notebook. Every number on the page is read from
metrics.json.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
from pathlib import Path

from tnca_jax import metrics, plots
from tnca_jax.errors import WorkdirError
from tnca_jax.phrases import Phrase
from tnca_jax.records import NoteMetrics, RunMetrics
from tnca_jax.workdir import (
    CEILING_WAV,
    COMPARISON_PNG,
    GENERATED_WAV,
    GROWTH_GIF,
    GROWTH_PNG,
    GROWTH_WAV,
    MORPH_PNG,
    REPORT_FILE,
    TARGET_WAV,
    TRAIN_LOG,
    Workdir,
)

SECTIONS = (("generated", "generated"), ("ceiling", "ceiling"),
            ("static_baseline", "static baseline"))
PLAYERS = (
    (TARGET_WAV, "target", "the recording the TNCA learned"),
    (GENERATED_WAV, "generated", "the grown note, vocoded"),
    (CEILING_WAV, "ceiling", "the vocoder on the recording's own spectrogram: the best a "
                             "grown spectrogram can sound through this vocoder"),
)
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222;
       padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
.players { display: flex; gap: 1.5em; flex-wrap: wrap; }
.player { flex: 1; min-width: 260px; } .player p { margin: 0.2em 0; font-size: 0.9em; }
audio { width: 100%; } img { max-width: 100%; border: 1px solid #eee; }
table { border-collapse: collapse; font-size: 0.92em; width: 100%; }
th, td { border-bottom: 1px solid #e4e4e4; padding: 0.35em 0.6em; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.muted { color: #666; font-size: 0.9em; } code { background: #f4f4f4; padding: 0 0.2em; }
"""


def _data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _image(data: bytes, mime: str, alt: str) -> str:
    return f'<img src="{_data_uri(data, mime)}" alt="{html.escape(alt)}">'


def format_value(value: float | None) -> str:
    """How the page writes a metric value: 4 significant digits, "n/a" when missing."""
    if value is None:
        return "n/a"
    if math.isinf(value):
        return "∞" if value > 0 else "-∞"
    return f"{value:.4g}"


def _players(workdir: Workdir) -> str:
    cells = []
    for name, label, about in PLAYERS:
        path = workdir.file(name)
        if not path.exists():
            cells.append(f'<div class="player"><b>{label}</b><p class="muted">{name} missing: '
                         "run <code>--mode=evaluate</code> to write it</p></div>")
            continue
        cells.append(f'<div class="player"><b>{label}</b><p class="muted">{html.escape(about)}'
                     f'</p><audio controls preload="auto" data-name="{label}" '
                     f'src="{_data_uri(path.read_bytes(), "audio/wav")}"></audio></div>')
    return f'<div class="players">{"".join(cells)}</div>'


def _other_vocoders(workdir: Workdir, report: RunMetrics) -> str:
    """Players and main metrics of the same grown note (and ceiling) through the companion
    vocoder, beside the run's own."""
    others = report.other_vocoders
    if not others:
        return ""
    parts = []
    for name, entry in others.items():
        cells = []
        for file, label in zip(entry["files"], ("generated", "ceiling"), strict=True):
            path = workdir.file(file)
            if path.exists():
                scores = ", ".join(f"{key} {format_value(value)}"
                                   for key, value in entry[label].items())
                cells.append(f'<div class="player"><b>{label}, {html.escape(name)}</b>'
                             f'<p class="muted">{scores}</p><audio controls preload="metadata" '
                             f'data-name="{label}_{html.escape(name)}" '
                             f'src="{_data_uri(path.read_bytes(), "audio/wav")}"></audio></div>')
        parts.append(f'<div class="players">{"".join(cells)}</div>')
    return (f"<p>The same grown note, and the recording's own log-mel, through "
            f"{', '.join(others)} (the run's vocoder is {html.escape(report.vocoder)}):</p>"
            + "".join(parts))


def _metrics_table(note: NoteMetrics) -> str:
    head = "".join(f"<th>{label}</th>" for _, label in SECTIONS)
    sections = {section: getattr(note, section).to_dict() for section, _ in SECTIONS}
    rows = []
    for name, info in metrics.METRICS.items():
        cells = []
        for section, _ in SECTIONS:
            value = sections[section].get(name)
            note_text = sections[section]["notes"].get(name)
            title = f' title="{html.escape(note_text)}"' if note_text else ""
            cells.append(f'<td class="num" data-section="{section}" data-metric="{name}" '
                         f'data-value="{value!r}"{title}>{format_value(value)}'
                         f'{" *" if note_text else ""}</td>')
        better = "higher" if info.higher_is_better else "lower"
        if name == "rms_ratio":
            better = "closer to 1"
        unit = f" ({info.unit})" if info.unit else ""
        rows.append(f"<tr><td><code>{name}</code>{unit}</td>{''.join(cells)}"
                    f'<td class="num">{format_value(info.ideal)}</td><td>{better}</td>'
                    f"<td>{html.escape(info.about)}</td></tr>")
    notes = sorted({(name, text) for section, _ in SECTIONS
                    for name, text in sections[section]["notes"].items()})
    footnotes = "".join(f"<li><code>{name}</code>: {html.escape(text)}</li>"
                        for name, text in notes)
    return (f"<table><thead><tr><th>metric</th>{head}<th>ideal</th><th>better</th>"
            f"<th>what it measures</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
            + (f'<p class="muted">* Notes:</p><ul class="muted">{footnotes}</ul>' if notes else ""))


def _best_of(report: RunMetrics) -> str:
    refinement = report.refinement or {}
    knobs = ", ".join(f"<code>{key}={value}</code>" for key, value in refinement.items())
    selection = report.best_of
    if not selection:
        return f"<p>One candidate grown (best_of = 1). Settings: {knobs or 'defaults'}.</p>"
    scores = ", ".join(f"seed {seed}: {format_value(score)}"
                       for seed, score in zip(selection["seeds"], selection["scores"],
                                              strict=True))
    return (f"<p>{selection['n']} candidates grown in one batch and scored by "
            f"<code>{selection['metric']}</code>; kept seed {selection['chosen_seed']} "
            f"({format_value(selection['best'])}). Gain over one candidate: "
            f"<b>{format_value(selection['gain_over_first'])}</b> over the first, "
            f"<b>{format_value(selection['gain_over_mean'])}</b> over the mean of all "
            f"(in the metric's unit, positive = better).</p><p class='muted'>{scores}. "
            f"Settings: {knobs}.</p>")


def _page(title: str, body: str) -> str:
    return ('<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            '<link rel="icon" href="data:,">'
            f"<title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>\n{body}\n</body></html>\n")


def _training(records: list[dict]) -> str:
    if not records:
        return f'<p class="muted">No {TRAIN_LOG} in this workdir.</p>'
    buffer = io.BytesIO()
    plots.training_curve(buffer, records)
    return _image(buffer.getvalue(), "image/png", "training curve")


NOTE_COLUMNS = (("mel_l1_db", "mel L1 (dB)"), ("static_mel_l1_db", "static (dB)"),
                ("ceiling_mel_l1_db", "ceiling (dB)"), ("temporal_gain", "temporal gain"),
                ("mrstft", "MR-STFT"), ("rms_ratio", "RMS ratio"),
                ("f0_error_cents", "f0 error (cents)"))


def _note_row(note: NoteMetrics) -> dict:
    """The columns of one measured note."""
    row = {key: getattr(note.generated, key, None) for key, _ in NOTE_COLUMNS}
    row["static_mel_l1_db"] = note.static_baseline and note.static_baseline.mel_l1_db
    row["ceiling_mel_l1_db"] = note.ceiling and note.ceiling.mel_l1_db
    row["temporal_gain"] = note.temporal_gain
    return row


def _notes_table(notes: list[NoteMetrics]) -> str:
    head = "".join(f"<th>{label}</th>" for _, label in NOTE_COLUMNS)
    body = []
    for note in sorted(notes, key=lambda n: (not n.held_out, n.note["instrument"],
                                             n.note["midi"])):
        row = _note_row(note)
        cells = "".join(f'<td class="num" data-metric="{key}" data-value="{row[key]!r}">'
                        f"{format_value(row[key])}</td>" for key, _ in NOTE_COLUMNS)
        body.append(f'<tr data-note="{html.escape(note.name)}"><td>{html.escape(note.name)}'
                    f"</td><td>{html.escape(note.note['instrument'])}</td>"
                    f'<td class="num">{note.note["midi"]:.1f}</td>'
                    f"<td>{'held out' if note.held_out else 'seen'}</td>{cells}</tr>")
    return (f"<table><thead><tr><th>note</th><th>instrument</th><th>MIDI</th><th>split</th>"
            f"{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")


def _summary_line(summary: dict) -> str:
    parts = []
    for split, part in summary.items():
        parts.append(f"<b>{split.replace('_', '-')}</b> ({part['notes']} notes): mel L1 "
                     f"{format_value(part['mel_l1_db']['mean'])} dB against the static "
                     f"baseline's {format_value(part['static_baseline_mel_l1_db'])} dB, temporal "
                     f"gain {format_value(part['temporal_gain']['mean'])}x (worst "
                     f"{format_value(part['temporal_gain']['worst'])}x), "
                     f"{part['beat_static']} of {part['notes']} better than static")
    return "<p>" + "; ".join(parts) + ".</p>"


def _demo_players(workdir: Workdir, demos: list[dict], kinds: tuple[str, ...]) -> str:
    cells = []
    for demo in demos:
        if demo["kind"] not in kinds or not workdir.file(demo["file"]).exists():
            continue
        data = workdir.file(demo["file"]).read_bytes()
        cells.append(f'<div class="player"><p>{html.escape(demo["label"])}</p>'
                     f'<audio controls preload="none" data-name="{html.escape(demo["file"])}" '
                     f'src="{_data_uri(data, "audio/wav")}"></audio></div>')
    return f'<div class="players">{"".join(cells)}</div>'


def render_instruments_page(workdir: Workdir, report: RunMetrics) -> str:
    """The report of an instruments run: notes measured against their recordings (seen and
    held out), and players for generated, morphed, gliding and regrown notes."""
    records = workdir.read_log()
    instruments = report.extra["instruments"]
    sections = [
        f"<h1>tnca_jax instruments report: {html.escape(workdir.path.name)}</h1>",
        f'<p class="muted">One TNCA for {len(instruments)} instruments '
        f"({html.escape(', '.join(instruments))}), trained on "
        f"{report.extra['training_notes']} notes ({report.checkpoint_step} iterations); "
        f"contract <code>{report.contract}</code>, vocoder <code>{report.vocoder}</code>. Each "
        "note below is grown from its instrument, pitch, loudness and length alone and "
        "measured against its recording, beside the static baseline (the recording's own mean "
        "spectrum held still).</p>",
        _summary_line(report.summary),
        "<h2>Notes</h2>", _notes_table(report.notes),
        "<h2>Listen: new notes</h2>",
        _demo_players(workdir, report.demos, ("note",)),
    ]
    if report.morph:
        morph = report.morph
        sections += [
            f"<h2>Morph: {html.escape(morph['start'])} to {html.escape(morph['end'])}</h2>",
            _demo_players(workdir, report.demos, ("morph", "glide")),
        ]
        if workdir.file(MORPH_PNG).exists():
            sections.append(_image(workdir.file(MORPH_PNG).read_bytes(), "image/png",
                                   "morph curve"))
    if report.regrowth:
        rows = "".join(f"<tr><td>{html.escape(r['note'])}</td>"
                       f'<td class="num">{format_value(r["undamaged_mel_l1_db"])}</td>'
                       f'<td class="num">{format_value(r["regrown_mel_l1_db"])}</td>'
                       f'<td class="num" data-metric="regrowth_ratio">'
                       f"{format_value(r['ratio'])}</td></tr>" for r in report.regrowth)
        first = report.regrowth[0]
        sections += [
            "<h2>Regrowth</h2>",
            f'<p class="muted">The middle {first["erase_fraction"]:.0%} of each note\'s frames '
            f"erased after {first['erase_at']} growth steps, then {first['steps_after']} more "
            "steps; mel L1 against the recording, undamaged and regrown.</p>",
            "<table><thead><tr><th>note</th><th>undamaged (dB)</th><th>regrown (dB)</th>"
            f"<th>ratio</th></tr></thead><tbody>{rows}</tbody></table>",
            _demo_players(workdir, report.demos, ("regrown",)),
        ]
    sections += ["<h2>Training</h2>", _training(records)]
    return _page(f"tnca_jax instruments report: {workdir.path.name}", "\n".join(sections))


def render_page(workdir: str | os.PathLike) -> str:
    """The report page of a workdir as one HTML string (see the module docstring)."""
    workdir = Workdir(workdir)
    try:
        report = RunMetrics.from_dict(workdir.read_metrics())
    except (KeyError, TypeError, ValueError) as err:
        raise WorkdirError(f"{workdir.file('metrics.json')} cannot be read ({err}); run "
                           "--mode=evaluate to write it again") from None
    if report.job == "instruments":
        return render_instruments_page(workdir, report)
    note = report.note
    records = workdir.read_log()
    sections = [
        f"<h1>tnca_jax report: {html.escape(workdir.path.name)}</h1>",
        f'<p class="muted">Recording <code>{html.escape(str(note.note["path"]))}'
        f"</code> ({report.extra['target_seconds']:.2f} s), contract <code>{report.contract}"
        f"</code>, vocoder <code>{report.vocoder}</code>"
        + (f", {records[-1]['iteration']} training iterations" if records else "") + ".</p>",
        "<p>Mel L1 of the grown note: <b>"
        f"{format_value(note.generated.mel_l1_db)} dB</b>; the vocoder's ceiling "
        f"{format_value(note.ceiling.mel_l1_db)} dB; the static baseline (the recording's mean "
        f"spectrum held still) {format_value(note.static_baseline.mel_l1_db)} dB; "
        f"temporal gain {format_value(note.temporal_gain)}x. A good model sits near the "
        "ceiling and far below the baseline.</p>",
        "<h2>Listen</h2>", _players(workdir), _other_vocoders(workdir, report),
        "<h2>Look: target against generated</h2>",
        '<p class="muted">Waveforms and RMS envelopes (top); log-mel spectrograms of both '
        "waveforms on one dB scale, and their difference (bottom). The mean |difference| is "
        "the generated note's mel L1.</p>",
        _image(workdir.file(COMPARISON_PNG).read_bytes(), "image/png", "comparison"),
        "<h2>Growth</h2>",
        '<p class="muted">The grown log-mel at successive growth steps, from the seed columns '
        "to the final note.</p>",
        _image(workdir.file(GROWTH_PNG).read_bytes(), "image/png", "growth strip"),
    ]
    if workdir.file(GROWTH_WAV).exists() and workdir.file(GROWTH_GIF).exists():
        sections += [
            '<p>Hear it grow (each stage vocoded, joined by short crossfades):</p>',
            f'<audio controls preload="auto" data-name="growth" '
            f'src="{_data_uri(workdir.file(GROWTH_WAV).read_bytes(), "audio/wav")}"></audio>',
            _image(workdir.file(GROWTH_GIF).read_bytes(), "image/gif", "growth animation")]
    else:
        sections.append('<p class="muted">Run <code>--mode=growth</code> to hear and watch '
                        "the note grow.</p>")
    sections += ["<h2>Training</h2>", _training(records)]
    sections += [
        "<h2>Metrics</h2>",
        '<p class="muted">Each metric of the generated note against the recording, beside the '
        "vocoder's ceiling and the static baseline.</p>",
        _metrics_table(note),
        "<h2>Refinement</h2>", _best_of(report),
    ]
    return _page(f"tnca_jax report: {workdir.path.name}", "\n".join(sections))


def write_report(workdir: str | os.PathLike) -> Path:
    """Write `workdir/report.html`; returns its path."""
    return Workdir(workdir).write_text(REPORT_FILE, render_page(workdir))


def write_phrase_page(workdir: Workdir, stem: str, phrase: Phrase) -> Path:
    """`<stem>.wav` and `<stem>.html` of a played phrase (`tnca_jax.phrases`): a player, and the
    phrase's log-mel with its notes drawn over it (a piano roll)."""
    wav = workdir.write_wav(f"{stem}.wav", phrase.audio, phrase.sample_rate)
    figure = io.BytesIO()
    plots.piano_roll(figure, phrase.audio, phrase.contract,
                     [(n.midi, n.start, n.duration) for n in phrase.notes])
    instrument = (phrase.instrument if isinstance(phrase.instrument, str) else
                  ", ".join(f"{w:g} {name}" for name, w in phrase.instrument.items()))
    body = "\n".join([
        f"<h1>tnca_jax: a phrase played by {html.escape(instrument)}</h1>",
        f'<p class="muted">{len(phrase.notes)} notes, '
        f"{len(phrase.audio) / phrase.sample_rate:.1f} s, contract "
        f"<code>{phrase.contract.name}</code>. Each note was grown by the model from its "
        "pitch, loudness (velocity) and length, rendered and placed at its start.</p>",
        f'<audio controls preload="auto" data-name="{html.escape(stem)}" '
        f'src="{_data_uri(wav.read_bytes(), "audio/wav")}"></audio>',
        _image(figure.getvalue(), "image/png", "piano roll over the log-mel")])
    return workdir.write_text(f"{stem}.html", _page(f"tnca_jax: {stem}", body))


class ReportView:
    """A report page that notebooks (Jupyter, Colab, VS Code) display: the page sits in an
    iframe's srcdoc, so its style stays its own."""

    def __init__(self, page: str, height: int):
        self.page, self.height = page, height

    def _repr_html_(self) -> str:
        return (f'<iframe srcdoc="{html.escape(self.page, quote=True)}" '
                f'style="width:100%;height:{self.height}px;border:0"></iframe>')


def show(workdir: str | os.PathLike, height: int = 1600) -> ReportView:
    """The report of `workdir` for a notebook: the last expression of a cell displays it.
    Writes the report first if the workdir has none."""
    path = Path(workdir) / REPORT_FILE
    if not path.exists():
        write_report(workdir)
    return ReportView(path.read_text(encoding="utf-8"), height)
