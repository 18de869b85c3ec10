"""The instruments model against real recordings, beside the real-instrument floor.

  python -m bench.playable --model runs/instruments_cpu
  python -m bench.playable --model runs/instruments_cpu_edges --out bench/results/x.jsonl

For every held-out note of the model's corpus (its notes loaded again from its settings), the
note is grown from its own labels (instrument, pitch, loudness, length), rendered with the
model's vocoder and measured against its recording after matching its RMS to the recording's
(loudness is an input, not timbre): mel L1, MR-STFT, spectral-centroid error (%), pYIN f0
error, the first 50 ms's level. Beside it, the floor: the same measures between two real
recordings of the pitch (the Iowa violin recorded on another string), or, where the corpus
has none, between the recording and its instrument's nearest real note of another pitch.
Notes held out by `data.held_out_edges` are marked `beyond_range`, soundfont renders
`rendered` (their floor, another render, is unrealistically close). One JSON line per note,
then the summary (`summarise`): means over groups of notes, and each side's ratio to its floor.

  python -m bench.playable --speed     # the shipped model: seconds to generate a 2 s note

`--speed` times `tnca_jax.generate()` of a 2 s note (the first call, which compiles, then the
median of five more), on whatever cores the process may use (`taskset -c 0` for one).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from tnca_jax import metrics
from tnca_jax.contract import measuring_contract
from tnca_jax.generation import grow_features, render_features
from tnca_jax.inverse import load_inverse
from tnca_jax.notes import Note
from tnca_jax.runs import load_run, notes_of

MEASURES = ("mel_l1_db", "mrstft")
RENDER_FOLDERS = {"musescore", "fluidr3_gm"}


def matched(reference: np.ndarray, audio: np.ndarray) -> np.ndarray:
    """`audio` scaled to the RMS of `reference` (over their common length)."""
    n = min(len(reference), len(audio))
    gain = np.sqrt(np.mean(reference[:n] ** 2) / max(np.mean(audio[:n] ** 2), 1e-20))
    return (audio * gain).astype(np.float32)


def distance(reference: np.ndarray, audio: np.ndarray, contract) -> dict:
    """mel L1 and MR-STFT of `audio` (RMS-matched) against `reference`, and the centroid
    error as a fraction of the reference's centroid."""
    audio = matched(reference, audio)
    scored = metrics.compare(reference, audio, contract, only=set(MEASURES))
    truth = metrics.spectral_centroid_hz(reference, contract)
    return {"mel_l1_db": scored.mel_l1_db, "mrstft": scored.mrstft,
            "centroid_error": abs(metrics.spectral_centroid_hz(audio, contract) - truth) / truth}


def floor_of(note: Note, corpus: list[Note], contract) -> tuple[str, dict]:
    """The real-instrument floor of `note`: its distance (both ways, averaged) to another
    recording of its pitch (another string), else to its instrument's nearest other note."""
    mine = [n for n in corpus if n.instrument == note.instrument and n.path != note.path]
    same = [n for n in mine if round(n.midi) == round(note.midi)]
    kind = "same pitch, another recording" if same else "nearest other pitch"
    other = (same or [min(mine, key=lambda n: abs(n.midi - note.midi))])[0]
    both = [distance(note.audio, other.audio, contract), distance(other.audio, note.audio,
                                                                  contract)]
    return kind, {key: float(np.mean([d[key] for d in both])) for key in both[0]}


def rendered(note: Note) -> bool:
    """Whether `note` is a soundfont render (data/musescore, data/fluidr3_gm): the same
    recorded sample resampled across pitches and velocities, so its floor (another render of
    the same pitch) is far closer than two real recordings can be."""
    return bool(RENDER_FOLDERS & set(Path(note.path).parts))


def summarise(lines: list[dict], model: str) -> dict:
    """Means over each group of notes (all held out; real recordings only; beyond the range;
    real notes of a pitch recorded twice, e.g. on two strings; each instrument), and each
    mean's ratio to the same notes' floor."""
    real = [x for x in lines if not x["rendered"]]
    groups = {"held_out": lines, "real": real,
              "beyond_range": [x for x in lines if x["beyond_range"]],
              "beyond_range_real": [x for x in real if x["beyond_range"]],
              "two_strings": [x for x in real if x["floor_kind"].startswith("same pitch")],
              **{f"instrument_{name}": [x for x in lines if x["instrument"] == name]
                 for name in sorted({x["instrument"] for x in lines})}}
    summary = {"summary": True, "model": model, "notes": len(lines)}
    for part, chosen in groups.items():
        if not chosen:
            continue
        summary[f"{part}_notes"] = len(chosen)
        for key in (*MEASURES, "centroid_error"):
            ours = float(np.mean([x[f"generated_{key}"] for x in chosen]))
            floor = float(np.mean([x[f"floor_{key}"] for x in chosen]))
            summary[f"{part}_{key}"] = {"generated": ours, "floor": floor,
                                        "ratio": ours / max(floor, 1e-9)}
        f0 = [x["f0_error_cents"] for x in chosen if x["f0_error_cents"] is not None]
        summary[f"{part}_f0_error_cents"] = {
            "mean": float(np.mean(f0)) if f0 else None,
            "median": float(np.median(f0)) if f0 else None,
            "worst": float(np.max(f0)) if f0 else None,
            "under_20": sum(c < 20 for c in f0)}
        onsets = [abs(x["onset_level_db"]) for x in chosen]
        summary[f"{part}_onset_level_db"] = {"worst": float(np.max(onsets)),
                                             "within_6": sum(o <= 6 for o in onsets)}
    return summary


def speed(model: str | None) -> dict:
    """Seconds to generate a 2 s violin C4 (growth and Griffin-Lim), first call and after."""
    import os
    import statistics
    import time

    import tnca_jax
    from bench.throughput import cpu_model

    times = []
    for _ in range(6):
        start = time.perf_counter()
        tnca_jax.generate(model, instrument="violin", pitch="C4", seconds=2.0)
        times.append(time.perf_counter() - start)
    return {"generate_2s_first_call_s": times[0], "generate_2s_s": statistics.median(times[1:]),
            "cpu": cpu_model(), "cores": len(os.sched_getaffinity(0)),
            "model": str(model or "shipped")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="an instruments workdir (default: the "
                        "shipped model, for --speed)")
    parser.add_argument("--speed", action="store_true", help="time generate() instead")
    parser.add_argument("--max-notes", type=int, default=0, help="0: every held-out note")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.speed:
        print(json.dumps(speed(args.model)), flush=True)
        return
    if args.model is None:
        parser.error("--model: an instruments workdir (its notes are loaded again)")
    run = load_run(args.model)
    notes = notes_of(run)
    edges = run.settings.data.held_out_edges
    inverse = load_inverse(run.representation, run.settings.vocoder, run.settings.vocoder_path)
    contract = measuring_contract(run.contract)
    held = list(notes.held_out)[: args.max_notes or None]
    grown = grow_features(run, [n.spec for n in held], seeds=[run.settings.seed],
                          growth_steps=run.settings.generate.growth_steps, num_stages=1)
    audio = render_features(inverse, [g[-1] for g in grown])
    ranges = run.pitch_ranges()
    lines = []
    for note, generated in zip(held, audio, strict=True):
        low, high = ranges[note.instrument]
        kind, floor = floor_of(note, list(notes.notes), contract)
        ours = distance(note.audio, generated, contract)
        extra = metrics.compare(note.audio, generated, contract,
                                only={"f0_error_cents", "onset_level_db"})
        line = {"note": note.name, "instrument": note.instrument, "midi": round(note.midi, 2),
                "rendered": rendered(note),
                "beyond_range": bool(edges) and not low <= note.midi <= high,
                "floor_kind": kind, **{f"generated_{k}": v for k, v in ours.items()},
                **{f"floor_{k}": v for k, v in floor.items()},
                "f0_error_cents": extra.f0_error_cents,
                "onset_level_db": extra.onset_level_db}
        lines.append(line)
        print(json.dumps(line), flush=True)
    summary = summarise(lines, str(args.model))
    print(json.dumps(summary), flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("".join(json.dumps(x) + "\n" for x in [*lines, summary]))


if __name__ == "__main__":
    main()
