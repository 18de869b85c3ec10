"""Training a TNCA through the music vocoder against rendering with it only, on held-out notes.

  python -m bench.through_vocoder [--weights=vocoders/music_vocoder.safetensors] \\
      [--notes=NAME ...] [--seeds=0,1] [--out=bench/results/through_vocoder_cpu.jsonl]

For each violin note (default: three the vocoder never saw, pitch classes A, C#/Db and F on
three strings) and each seed, the quick note job twice, in one run:
- "render": `configs/violin.py:quick` with `--config.vocoder=music`: the grid losses only,
  the grown log-mel rendered by the music vocoder;
- "through": `configs/violin.py:quick,music`: the same plus the audio loss on the vocoder's
  differentiable audio.
Each grown note is scored against its recording (`tnca_jax.modes.train_and_evaluate`'s
metrics.json: the anchors' MR-STFT, spectral convergence, mel L1), beside the vocoder's
ceiling on that note. Prints JSON lines, also written to `--out`; the last ("kind":
"comparison") has the mean per mode and on how many (note, seed) pairs "through" wins.
Workdirs go under a temporary folder, removed at the end.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from configs.violin import get_config
from tnca_jax import modes
from tnca_jax.settings import read_tnca
from vocoders.music import WEIGHTS_PATH

VIOLIN = Path(__file__).resolve().parent.parent / "data" / "iowa_mis" / "violin"
NOTES = ("Violin.arco.ff.sulD.F4.stereo.flac", "Violin.arco.ff.sulA.Db5.stereo.flac",
         "Violin.arco.ff.sulE.A5.stereo.flac")
SCORED = ("mrstft_auraloss", "spectral_convergence", "mel_l1_db")
MODES = {"render": "quick", "through": "quick,music"}


def run_once(note: Path, seed: int, mode: str, weights: Path, workdir: Path) -> dict:
    config = get_config(MODES[mode])
    config.vocoder = "music"
    config.vocoder_path = str(weights)
    config.seed = seed
    config.data.audio_path = str(note)
    start = time.perf_counter()
    report = modes.train_and_evaluate(read_tnca(config), workdir, progress=False)
    [measured] = report.notes
    return {"kind": "run", "note": note.name, "seed": seed, "mode": mode,
            "seconds": time.perf_counter() - start,
            **{name: getattr(measured.generated, name) for name in SCORED},
            **{f"ceiling_{name}": getattr(measured.ceiling, name) for name in SCORED}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", type=Path, default=WEIGHTS_PATH)
    parser.add_argument("--notes", nargs="+", default=list(NOTES),
                        help=f"file names under {VIOLIN}")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent
                        / "results" / "through_vocoder_cpu.jsonl")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    lines = []
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch, args.out.open("w") as out:
        for name in args.notes:
            for seed in seeds:
                for mode in MODES:
                    line = run_once(VIOLIN / name, seed, mode, args.weights,
                                    Path(scratch) / f"{name}_{seed}_{mode}")
                    lines.append(line)
                    print(json.dumps(line), flush=True)
                    out.write(json.dumps(line) + "\n")
        runs = {(r["note"], r["seed"], r["mode"]): r for r in lines}
        pairs = [(n, s) for n in args.notes for s in seeds]
        comparison = {"kind": "comparison", "weights": str(args.weights), "runs": len(pairs),
                      **{mode: {key: float(np.mean([runs[n, s, mode][key] for n, s in pairs]))
                                for key in SCORED} for mode in MODES},
                      "through_wins": {key: sum(runs[n, s, "through"][key]
                                                < runs[n, s, "render"][key] for n, s in pairs)
                                       for key in SCORED}}
        print(json.dumps(comparison))
        out.write(json.dumps(comparison) + "\n")


if __name__ == "__main__":
    main()
