"""The TNCA on every instrument's notes: one note job per recording, measured as the job does.

  python -m bench.instruments                          # quick config, every note (CPU)
  python -m bench.instruments --size full              # configs/violin.py's full size (GPU)
  python -m bench.instruments --notes flute,trumpet --set model.hidden=96

Runs the note job's training mode (`tnca_jax.modes.train_and_evaluate`) on each recording
of `NOTES` in `<workdir>/<note>` (a note already trained there is only measured again) with
the shipped config and the `--set` overrides, and prints one JSON line per note: mel L1,
temporal gain, MR-STFT, RMS ratio, pYIN f0 error, the ceiling's and the static baseline's
mel L1, the grid L1 and the wall time of each stage; then a summary line (how many notes
beat the static baseline by 1.5x, the worst gain, the longest time). `--json` also writes the
lines to a file.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import io
import json
import time
from pathlib import Path

DATA = Path(__file__).resolve().parent.parent / "data"
# name -> recording under data/ (no extension: .flac or .wav): single notes of every instrument
# and source shipped, and the legato phrase; the cap (data.max_seconds, 4 s) cuts the longer ones.
NOTES = {
    "violin_A5_iowa": "iowa_mis/violin/Violin.arco.ff.sulE.A5.stereo",  # the shipped note
    "violin_G4_iowa": "iowa_mis/violin/Violin.arco.ff.sulD.G4.stereo",
    "violin_C6_iowa": "iowa_mis/violin/Violin.arco.ff.sulE.C6.stereo",
    "violin_E5_vsco": "vsco2/violin/E5",
    "flute_A4_vsco": "vsco2/flute/A4",
    "trumpet_G4_vsco": "vsco2/trumpet/G4",
    "flute_G4_fluidr3": "fluidr3_gm/flute_G4_m67",
    "trumpet_C5_fluidr3": "fluidr3_gm/trumpet_C5_m72",
    "cello_G2_fluidr3": "fluidr3_gm/cello_G2_m43",
    "clarinet_A3_fluidr3": "fluidr3_gm/clarinet_A3_m57",
    "violin_phrase_fluidr3": "fluidr3_gm/violin_phrase_legato",
}
GOAL_GAIN = 1.5


def parse_overrides(items: list[str]) -> dict:
    """["train.iterations=600", ...] -> {"train.iterations": 600, ...} (Python literals)."""
    overrides = {}
    for item in items:
        key, _, value = item.partition("=")
        try:
            overrides[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            overrides[key] = value
    return overrides


def find_recording(data: Path, stem: str) -> Path:
    """The recording `stem` under `data`, whichever of the audio extensions it has."""
    for suffix in (".flac", ".wav"):
        path = data / f"{stem}{suffix}"
        if path.exists():
            return path
    raise FileNotFoundError(f"no {stem}.flac or .wav under {data}")


def note_config(path: Path, size: str, overrides: dict):
    from configs.violin import get_config

    config = get_config("quick" if size == "quick" else None)
    config.data.audio_path = str(path)
    for key, value in overrides.items():
        *parents, leaf = key.split(".")
        node = config
        for parent in parents:
            node = node[parent]
        node[leaf] = value
    return config


def run_note(name: str, path: Path, workdir: Path, size: str, overrides: dict) -> dict:
    from tnca_jax.console import Console
    from tnca_jax.modes import train_and_evaluate
    from tnca_jax.settings import read_tnca

    settings = read_tnca(note_config(path, size, overrides))
    start = time.perf_counter()
    console = Console(stream=io.StringIO())  # the stage timings, kept out of the output
    with contextlib.redirect_stderr(io.StringIO()):
        report = train_and_evaluate(settings, workdir, progress=False, console=console)
    note = report.note
    generated, static = note.generated, note.static_baseline
    return {
        "note": name, "recording": str(path), "size": size, "overrides": overrides,
        "seconds": round(report.extra["target_seconds"], 2),
        "mel_l1_db": generated.mel_l1_db, "temporal_gain": note.temporal_gain,
        "mrstft": generated.mrstft, "rms_ratio": generated.rms_ratio,
        "f0_error_cents": generated.f0_error_cents, "grid_l1_db": note.grid_l1_db,
        "ceiling_mel_l1_db": note.ceiling.mel_l1_db,
        "static_mel_l1_db": static.mel_l1_db, "static_mrstft": static.mrstft,
        "wall_seconds": round(time.perf_counter() - start, 1),
        "stage_seconds": {k: round(v, 1) for k, v in console.timings.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=("quick", "full"), default="quick")
    parser.add_argument("--notes", default="", help="comma-separated substrings of NOTES names")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override, e.g. train.iterations=600 (repeatable)")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--workdir", type=Path, default=Path("runs/instruments"))
    parser.add_argument("--json", type=Path, default=None, help="also write the lines here")
    args = parser.parse_args()
    wanted = [w for w in args.notes.split(",") if w]
    names = [n for n in NOTES if not wanted or any(w in n for w in wanted)]
    overrides = parse_overrides(args.set)
    rows = []
    for name in names:
        row = run_note(name, find_recording(args.data, NOTES[name]), args.workdir / name,
                       args.size, overrides)
        rows.append(row)
        print(json.dumps(row), flush=True)
    summary = {
        "summary": True, "size": args.size, "overrides": overrides, "notes": len(rows),
        f"beat_static_by_{GOAL_GAIN}x": sum(r["temporal_gain"] >= GOAL_GAIN for r in rows),
        "min_temporal_gain": min(r["temporal_gain"] for r in rows),
        "mean_mel_l1_db": sum(r["mel_l1_db"] for r in rows) / len(rows),
        "max_wall_seconds": max(r["wall_seconds"] for r in rows),
    }
    print(json.dumps(summary), flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text("".join(json.dumps(r) + "\n" for r in [*rows, summary]))


if __name__ == "__main__":
    main()
