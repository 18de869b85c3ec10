"""Does training diverge? A table of notes x configs x stabilisers, trained and recorded.

Each row trains one config (a `configs/violin.py` variant, e.g. `quick,stft`) with one set of
overrides (a stabiliser: warm-up, a lower rate, a lighter audio loss) on one recording, in a
fresh workdir, and records: finished (trained to the end), the retries at a lower learning
rate (`tnca_jax.train` retries a rejected step from the last good state, at most 3 times) and
the steps they were made at, the step where the run gave up (diverged) if it did, the final
grid L1 (dB) and the time. Only training runs: nothing is rendered or measured. One JSON line
per row goes to `--out` as it finishes (a cut-off bench keeps its rows).

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
from tnca_jax.target import load_target
from tnca_jax.train import NonFiniteError, train
from tnca_jax.workdir import Workdir

IOWA_VIOLIN = Path(__file__).resolve().parent.parent / "data" / "iowa_mis" / "violin"
# Stabilisers: config overrides (dotted keys) tried against divergence.
VARIANTS: dict[str, dict] = {
    "shipped": {},
    "warmup50": {"train.warmup_steps": 50},
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
    config.audio_path = str(audio_path)
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
    config = configure(config_arg, variant, note, iterations)
    row = {"note": note.name, "config": config_arg, "variant": variant,
           "overrides": VARIANTS[variant], "iterations": config.train.iterations}
    target = load_target(config)
    row["seconds_of_audio"] = round(len(target.audio) / target.contract.sample_rate, 3)
    row["grid"] = list(target.features.shape[1:])
    with tempfile.TemporaryDirectory() as workdir:
        start = time.perf_counter()
        try:
            train(config, workdir, target, progress=False)
            row.update(finished=True, diverged_at=None)
        except NonFiniteError as err:
            row.update(finished=False, diverged_at=int(str(err).split(" at step ")[1].split()[0]))
        row["train_seconds"] = round(time.perf_counter() - start, 1)
        log, retries = Workdir(workdir).read_log(), Workdir(workdir).read_retries()
    row["retries"] = [{"rejected_step": r["rejected_step"], "from_step": r["step"],
                       "learning_rate_scale": r["learning_rate_scale"]} for r in retries]
    row["final_step"] = log[-1]["step"] if log else 0
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
