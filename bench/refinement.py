"""Best-of-N and post-processing, measured on a trained workdir of the note job.

  python -m bench.refinement --workdir=runs/violin [--groups=3] [--n=8] [--metrics=a,b]

Grows groups x n candidates (growth seeds 0 .. groups*n - 1, one jitted call per group) with the
workdir's generate settings, vocodes each batch with the run's vocoder and scores every candidate
with every metric of `tnca_jax.metrics` (or those of `--metrics`: without ViSQOL and pYIN it
takes a fraction of the time) against the run's recording. Writes
bench/results/refinement.json and prints a summary:
- best_of: per selection metric, the kept candidate's metrics against the group's first
  candidate (what N = 1 gives for that seed) and the group's mean (N = 1 on average), averaged
  over the groups;
- postprocessing: per option (tnca_jax.refine), every metric averaged over all candidates,
  beside no post-processing.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from tnca_jax import metrics
from tnca_jax.contract import measuring_contract
from tnca_jax.generation import grow_features
from tnca_jax.inverse import load_inverse
from tnca_jax.refine import Refinement, postprocess
from tnca_jax.runs import load_run, recording_of

OPTIONS = {
    "none": Refinement(),
    "gaussian_sigma=0.5": Refinement(gaussian_sigma=0.5),
    "gaussian_sigma=1": Refinement(gaussian_sigma=1.0),
    "temporal_median=3": Refinement(temporal_median=3),
    "temporal_median=5": Refinement(temporal_median=5),
    "harmonic_gain=0.5": Refinement(harmonic_gain=0.5),
    "harmonic_gain=1": Refinement(harmonic_gain=1.0),
}
SELECTION_METRICS = ("mel_l1_db", "mrstft", "visqol_moslqo")
RESULTS = Path(__file__).resolve().parent / "results" / "refinement.json"


def _flat(groups: list[list[dict]]) -> list[dict]:
    return [row for group in groups for row in group]


def _mean(rows: list[dict]) -> dict:
    return {name: float(np.mean([row[name] for row in rows if row[name] is not None]))
            for name in metrics.METRICS if any(row[name] is not None for row in rows)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--groups", type=int, default=3)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--metrics", default=",".join(metrics.METRICS),
                        help="comma-separated metrics to measure (default: all)")
    args = parser.parse_args()
    measured = [name for name in args.metrics.split(",") if name]
    unknown = [name for name in measured if name not in metrics.METRICS]
    if unknown:
        parser.error(f"unknown metric {unknown[0]!r}; choose from {', '.join(metrics.METRICS)}")
    selection = [name for name in SELECTION_METRICS if name in measured]
    if not selection:
        parser.error(f"--metrics must include one of {', '.join(SELECTION_METRICS)} (the "
                     "metrics a best-of-N selects by)")

    run = load_run(args.workdir)
    if run.conditioned:
        parser.error(f"{args.workdir} holds an instruments run: best-of-N needs a note run")
    if run.representation.name != "mel":
        parser.error(f"{args.workdir} grew {run.representation.name!r}: post-processing "
                     "applies to log-mels only")
    reference = recording_of(run).audio
    inverse = load_inverse(run.representation, run.settings.vocoder, run.settings.vocoder_path)
    measuring = measuring_contract(run.contract)
    generate = run.settings.generate
    groups = [list(range(g * args.n, (g + 1) * args.n)) for g in range(args.groups)]
    grown = [np.stack(grow_features(run, None, seeds=seeds, growth_steps=generate.growth_steps,
                                    num_stages=1))[:, -1] for seeds in groups]

    scores = {}  # option -> [group][candidate] -> metrics
    for option, refinement in OPTIONS.items():
        scores[option] = []
        for features in grown:  # [n, 1, n_mels, frames]
            audio = np.asarray(inverse(postprocess(features, run.contract, refinement)))
            scores[option].append([row.to_dict() for row in metrics.compare_many(
                reference, list(audio), measuring, only=measured)])
        print(json.dumps({"option": option, "mean": _mean(_flat(scores[option]))}))

    best_of = {}
    for metric in selection:
        kept = [min(group, key=lambda row: metrics.badness(metric, row[metric]))
                for group in scores["none"]]
        best_of[metric] = {"kept": _mean(kept),
                           "first": _mean([group[0] for group in scores["none"]]),
                           "mean": _mean(_flat(scores["none"]))}
        print(json.dumps({"best_of": args.n, "selected_by": metric, **best_of[metric]}))
    summary = {
        "workdir": str(args.workdir), "checkpoint_step": run.step, "n": args.n,
        "groups": args.groups, "growth_steps": generate.growth_steps,
        "contract": run.contract.name,
        "best_of": best_of,
        "postprocessing": {option: _mean(_flat(rows)) for option, rows in scores.items()},
        "candidates": scores,
    }
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(summary, indent=1))
    print(f"wrote {args.results}")


if __name__ == "__main__":
    main()
