"""Does training diverge? A table of notes x configs x stabilisers, trained and recorded.

Each row trains one config (a `configs/violin.py` variant, e.g. `quick,stft`) with one set of
overrides (a stabiliser: warm-up, a lower rate, a lighter audio loss) on one recording, in a
fresh workdir, and records: finished (trained to the end), the retries at a lower learning
rate (`tnca_jax.training.train` retries a rejected iteration from the last good state, at most 3
times) and the iterations they were made at, the iteration where the run gave up (diverged) if
it did, the final grid L1 (dB) and the time. Only training runs: nothing is rendered or
measured. One JSON line per row goes to `--out` as it finishes (a cut-off bench keeps its rows);
its `rejected_step`, `from_step`, `diverged_at` and `final_step` count iterations.

  python -m bench.stability --notes sulD.D4,sulD.Eb4 --configs quick,stft quick,mag_if \\
      --variants shipped warmup50 --out bench/results/stability_quick.jsonl
  python -m bench.stability --notes all --configs quick,stft quick,mag_if --iterations 40 \\
      --out bench/results/stability_quick_all.jsonl   # every Iowa violin note

`--iterations` shortens every row (recorded in the row); the learning-rate schedule then spans
the shortened run.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from configs.violin import get_config
from tnca_jax.modes import load_notes, new_inverse
from tnca_jax.runs import describe
from tnca_jax.settings import read_tnca
from tnca_jax.tnca_training import plan_training
from tnca_jax.training import NonFiniteError, train
from tnca_jax.workdir import Workdir

IOWA_VIOLIN = Path(__file__).resolve().parent.parent / "data" / "iowa_mis" / "violin"
# Stabilisers: config overrides (dotted keys) tried against divergence.
VARIANTS: dict[str, dict] = {
    "shipped": {},
    "warmup50": {"train.warmup_iterations": 50},
    "lr_half": {"train.learning_rate": 1e-3},
    "audio_half": {"audio_scale": 0.5},  # the audio-loss weight halved
}


def note_paths(names: str, directory: Path, every: int = 1) -> list[Path]:
    """Iowa violin notes by unique parts of their file names (e.g. `sulD.D4,sulE.B5`), or
    "all" of them, every `every`-th (sorted by name)."""
    recordings = sorted(p for p in directory.iterdir() if p.suffix in (".flac", ".wav"))
    if names == "all":
        return recordings[::every]
    paths = []
    for name in names.split(","):
        found = [p for p in recordings if name in p.name]
        if len(found) != 1:
            raise SystemExit(f"{name!r} matches {len(found)} files in {directory}")
        paths.append(found[0])
    return paths


def configure(config_arg: str, variant: str, audio_path: Path, iterations: int | None):
    config = get_config(config_arg)
    config.data.audio_path = str(audio_path)
    if iterations is not None:
        config.train.iterations = iterations
    for key, value in VARIANTS[variant].items():
        if key == "audio_scale":
            config.train.audio_weight *= value
            continue
        section, leaf = key.split(".")
        config[section][leaf] = value
    return config


def run_row(note: Path, config_arg: str, variant: str, iterations: int | None) -> dict:
    settings = read_tnca(configure(config_arg, variant, note, iterations))
    row = {"note": note.name, "config": config_arg, "variant": variant,
           "overrides": VARIANTS[variant], "iterations": settings.train.iterations}
    inverse = new_inverse(settings)
    notes = load_notes(settings, inverse)
    recording = notes.notes[0]
    row["seconds_of_audio"] = round(len(recording.audio) / inverse.contract.sample_rate, 3)
    row["grid"] = list(recording.features.shape[1:])
    with tempfile.TemporaryDirectory() as directory:
        workdir = Workdir(directory)
        program = plan_training(settings, notes, lambda w: w.write_run(describe(settings, notes)),
                                vocoder=inverse.differentiable_vocoder)
        start = time.perf_counter()
        try:
            train(program, workdir, settings.train, progress=False)
            row.update(finished=True, diverged_at=None)
        except NonFiniteError as err:
            row.update(finished=False,
                       diverged_at=int(str(err).split(" at iteration ")[1].split()[0]))
        row["train_seconds"] = round(time.perf_counter() - start, 1)
        log, retries = workdir.read_log(), workdir.read_retries()
    row["retries"] = [{"rejected_step": r["rejected_iteration"], "from_step": r["iteration"],
                       "learning_rate_scale": r["learning_rate_scale"]} for r in retries]
    row["final_step"] = log[-1]["iteration"] if log else 0
    row["final_grid_l1_db"] = round(log[-1]["grid_l1_db"], 3) if log else None
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--notes", default="sulD.D4",
                        help="comma-separated unique parts of Iowa violin file names, or all")
    parser.add_argument("--every", type=int, default=1, help="with --notes=all: every N-th")
    parser.add_argument("--data", type=Path, default=IOWA_VIOLIN)
    parser.add_argument("--configs", nargs="+", default=["quick,stft", "quick,mag_if"])
    parser.add_argument("--variants", nargs="+", default=["shipped"], choices=list(VARIANTS))
    parser.add_argument("--iterations", type=int, default=None)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    notes = note_paths(args.notes, args.data, args.every)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for note in notes:
        for config_arg in args.configs:
            for variant in args.variants:
                row = run_row(note, config_arg, variant, args.iterations)
                print(json.dumps(row), flush=True)
                with args.out.open("a") as out:
                    out.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
