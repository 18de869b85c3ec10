"""One TNCA for many notes against one TNCA per note, at the same total training budget.

  python -m bench.timbre                               # configs/instruments.py:quick (CPU)
  python -m bench.timbre --size full                   # the full corpus (GPU)
  python -m bench.timbre --set train.iterations=3000 --out bench/results/timbre_quick.jsonl

Runs the instruments job (`tnca_jax.modes.train_and_evaluate` on `configs/instruments.py`) in
`<workdir>/timbre` (a workdir already trained there is only measured again,
`tnca_jax.modes.evaluate`), then, for every seen note it measured, the note job
(`configs/violin.py:quick` on that recording, at the instruments model's size: hidden width,
batch, growth steps, trim and length cap) for iterations / (training notes) iterations, so that
both sides train for the same number of iterations in all. Prints one JSON line per note (the
instruments model's, "timbre", and the note model's, "single": mel L1, MR-STFT, RMS ratio, f0
error and temporal gain; and their mel-L1 ratio), then a summary line: held-out and seen
means, the mean ratio and the worst, the regrowth ratios and whether the morph moved
monotonically. `--out` also writes the lines to a file.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import io
import json
import time
from pathlib import Path

import numpy as np

from configs.instruments import get_config
from configs.violin import get_config as single_note_config
from tnca_jax.console import Console
from tnca_jax.modes import evaluate, train_and_evaluate
from tnca_jax.records import NoteMetrics, RunMetrics
from tnca_jax.settings import read_tnca
from tnca_jax.workdir import Workdir

GOAL_RATIO = 1.3
MEASURED = ("mel_l1_db", "mrstft", "rms_ratio", "f0_error_cents")


def apply(config, overrides: list[str]):
    for item in overrides:
        key, _, value = item.partition("=")
        *parents, leaf = key.split(".")
        node = config
        for parent in parents:
            node = node[parent]
        try:
            node[leaf] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            node[leaf] = value
    return config


def scores(note: NoteMetrics) -> dict:
    """A measured note's generated metrics and temporal gain."""
    return {**{k: getattr(note.generated, k) for k in MEASURED},
            "temporal_gain": note.temporal_gain}


def split_summary(part: dict) -> dict:
    """A split of `RunMetrics.summary`: its note count, the means of `MEASURED` and of the
    temporal gain, the static baseline's mean mel L1 and how many notes beat it."""
    means = {k: part[k]["mean"] for k in (*MEASURED, "temporal_gain") if k in part}
    return {"notes": part["notes"], **means,
            "static_mel_l1_db": part.get("static_baseline_mel_l1_db"),
            "beat_static": part.get("beat_static")}


def single_note_run(config, path: str, workdir: Path, iterations: int) -> dict:
    """The note job on one seen note at the instruments model's size."""
    single = single_note_config("quick")
    single.data.audio_path = path
    single.data.max_seconds = config.data.max_seconds
    single.data.trim_db = config.data.trim_db
    single.model.hidden = config.model.hidden
    single.train.batch_size = config.train.batch_size
    single.train.min_growth_steps = config.train.min_growth_steps
    single.train.max_growth_steps = config.train.max_growth_steps
    single.train.iterations = iterations
    single.train.checkpoint_every = iterations
    with contextlib.redirect_stderr(io.StringIO()):
        report = train_and_evaluate(read_tnca(single), workdir, progress=False,
                                    console=Console(stream=io.StringIO()))
    return scores(report.note)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=("quick", "full"), default="quick")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--workdir", type=Path, default=Path("runs/bench_timbre"))
    parser.add_argument("--no-single", action="store_true",
                        help="measure the instruments model only")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    config = apply(get_config("quick" if args.size == "quick" else None), args.set)
    settings = read_tnca(config)
    workdir = args.workdir / "timbre"
    start = time.perf_counter()
    console = Console(stream=io.StringIO())
    with contextlib.redirect_stderr(io.StringIO()):
        if (workdir / "run.json").exists():
            evaluate(settings, workdir)
            report = RunMetrics.from_dict(Workdir(workdir).read_metrics())
        else:
            report = train_and_evaluate(settings, workdir, progress=False, console=console)
    timbre_seconds = time.perf_counter() - start
    seen = [r for r in report.notes if not r.held_out]
    training_notes = report.extra["training_notes"]
    budget = max(1, settings.train.iterations // max(1, training_notes))
    lines = []
    for row in report.notes:
        line = {"note": row.name, "instrument": row.note["instrument"], "midi": row.note["midi"],
                "held_out": row.held_out, "timbre": scores(row)}
        if not row.held_out and not args.no_single:
            single = single_note_run(config, row.note["path"],
                                     args.workdir / f"single_{len(lines)}", budget)
            line["single"] = single
            line["ratio_mel_l1"] = row.generated.mel_l1_db / single["mel_l1_db"]
        lines.append(line)
        print(json.dumps(line), flush=True)
    ratios = [line["ratio_mel_l1"] for line in lines if "ratio_mel_l1" in line]
    morph = report.morph or {}
    monotonic = {key: bool(np.all(np.diff(morph[key]) > 0) or np.all(np.diff(morph[key]) < 0))
                 for key in ("centroid_hz", "hnr_db") if key in morph}
    summary = {"summary": True, "size": args.size, "overrides": args.set,
               "iterations": settings.train.iterations,
               "training_notes": training_notes, "timbre_wall_seconds":
                   round(timbre_seconds, 1), "single_note_iterations_each": budget,
               **{split: split_summary(part) for split, part in report.summary.items()},
               "seen_beat_static": sum(r.temporal_gain > 1 for r in seen),
               "mean_ratio_mel_l1": float(np.mean(ratios)) if ratios else None,
               "worst_ratio_mel_l1": float(np.max(ratios)) if ratios else None,
               f"ratio_at_most_{GOAL_RATIO}": (sum(r <= GOAL_RATIO for r in ratios)
                                               if ratios else None),
               "regrowth_ratios": [r["ratio"] for r in report.regrowth],
               "morph_monotonic": monotonic}
    lines.append(summary)
    print(json.dumps(summary), flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("".join(json.dumps(line) + "\n" for line in lines))


if __name__ == "__main__":
    main()
