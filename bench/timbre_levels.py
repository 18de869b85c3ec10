"""How well can anything know a held-out note's spectrum from the training notes? No training.

  python -m bench.timbre_levels                 # configs/instruments.py:quick's note set
  python -m bench.timbre_levels --size full --out bench/results/timbre_levels_full.jsonl
  python -m bench.timbre_levels --size full --edges 5   # each instrument's lowest and
                                                        # highest 5 semitones held out too

For every held-out note of the instruments job's note set, the mel L1 (dB, floored 80 dB below
the note's peak, as the instruments job's training loss: `tnca_jax.tnca_training.Targets`) of
these still levels against the note's log-mel, and the error of their spectral centroid (%):
  static         the note's own time-average (the static baseline: it knows the note),
  nearest        the nearest training note of the instrument (by pitch), its time-average at
                 the held-out note's loudness, held still,
  neighbours     the prior drawn from the training notes nearest below and above, moved along
                 log-frequency to the pitch (`tnca_jax.priors`),
  source_filter  the neighbours' harmonics under the instrument's envelope kept in place,
  level_<prior>  the resting level a grown note starts from: that prior plus the instrument's
                 envelope over the note (`tnca_jax.tnca_training.fit_envelopes`).
`--edges N` also holds out each instrument's N lowest and highest semitones (beyond the range
of what is left: how each prior extrapolates). One JSON line per note, then a summary of the
means (all held-out notes, and the edge notes alone).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from configs.instruments import get_config
from tnca_jax.conditioning import row_frequencies_hz
from tnca_jax.losses import TOP_DB
from tnca_jax.notes import NoteSet, load_note_set
from tnca_jax.priors import PRIOR_KINDS
from tnca_jax.representations import get_representation
from tnca_jax.settings import read_tnca
from tnca_jax.tnca_training import fit_envelopes

ROWS = ("static", "nearest", *PRIOR_KINDS, *(f"level_{kind}" for kind in PRIOR_KINDS))


def floored_l1_db(unit: np.ndarray, level: np.ndarray, span_db: float) -> float:
    """Mean |level - unit| over [F, T] in dB, both floored TOP_DB below the note's peak."""
    floor = unit.max() - TOP_DB / span_db
    return float(np.mean(np.abs(np.maximum(level, floor) - np.maximum(unit, floor))) * span_db)


def centroid_hz(unit: np.ndarray, centres: np.ndarray, span_db: float) -> float:
    """The power-weighted mean row frequency of a time-averaged unit spectrum [F]."""
    power = 10 ** (unit * span_db / 10)
    return float(np.sum(centres * power) / np.sum(power))


def with_edges_held_out(notes: NoteSet, semitones: int) -> tuple[NoteSet, set[int]]:
    """The note set with each instrument's lowest and highest `semitones` semitones (of its
    training notes) held out too; and the ids of the notes so held out."""
    edges = set()
    for instrument in notes.instruments:
        pitches = [n.midi for n in notes.training if n.instrument == instrument]
        low, high = min(pitches), max(pitches)
        edges |= {id(n) for n in notes.notes if n.instrument == instrument
                  and (n.midi < low + semitones or n.midi > high - semitones)}
    moved = tuple(dataclasses.replace(n, held_out=True) if id(n) in edges else n
                  for n in notes.notes)
    ids = {id(m) for n, m in zip(notes.notes, moved, strict=True) if id(n) in edges}
    return dataclasses.replace(notes, notes=moved), ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=("quick", "full"), default="quick")
    parser.add_argument("--edges", type=int, default=0, help="semitones held out at each end")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    settings = read_tnca(get_config("quick" if args.size == "quick" else None))
    representation = get_representation(settings.representation, settings.spectral_contract)
    notes = load_note_set(settings.data, representation)
    edges: set[int] = set()
    if args.edges:
        notes, edges = with_edges_held_out(notes, args.edges)
    span = representation.unit_span_db
    centres = row_frequencies_hz(representation.contract)
    envelope = fit_envelopes(notes)
    sets = {kind: dataclasses.replace(notes, prior_kind=kind) for kind in PRIOR_KINDS}
    lines = []
    for note in notes.held_out:
        i = notes.instruments.index(note.instrument)
        unit = np.asarray(representation.to_unit(jnp.asarray(note.features)))[0]
        mine = [n for n in notes.training if n.instrument == note.instrument]
        nearest = min(mine, key=lambda n: abs(n.midi - note.midi))
        near_unit = np.asarray(representation.to_unit(jnp.asarray(nearest.features)))[0]
        levels = {"static": unit.mean(axis=-1)[:, None],
                  "nearest": (near_unit.mean(axis=-1)
                              + (note.loudness_db - nearest.loudness_db) / span)[:, None]}
        for kind, kind_set in sets.items():
            condition = kind_set.condition([note])
            prior = np.asarray(condition.prior)[0, i, 0]  # [F]
            time = np.asarray(condition.time)[0, :unit.shape[-1]]  # [T, K]
            levels[kind] = prior[:, None]
            levels[f"level_{kind}"] = prior[:, None] + envelope[i, 0] @ time.T
        truth = centroid_hz(unit.mean(axis=-1), centres, span)
        line = {"note": note.name, "instrument": note.instrument, "midi": round(note.midi, 2),
                "edge": id(note) in edges, "nearest_midi": round(nearest.midi, 2)}
        for row in ROWS:
            line[f"{row}_mel_l1_db"] = round(floored_l1_db(unit, levels[row], span), 3)
            guess = centroid_hz(np.clip(levels[row], 0, 1).mean(axis=-1), centres, span)
            line[f"{row}_centroid_error"] = round(abs(guess - truth) / truth, 3)
        lines.append(line)
        print(json.dumps(line), flush=True)
    summary = {"summary": True, "size": args.size, "edges": args.edges}
    for part, chosen in (("held_out", lines), ("edge", [x for x in lines if x["edge"]])):
        if not chosen:
            continue
        summary[f"{part}_notes"] = len(chosen)
        for row in ROWS:
            for measure in ("mel_l1_db", "centroid_error"):
                summary[f"{part}_{row}_{measure}"] = round(float(np.mean(
                    [x[f"{row}_{measure}"] for x in chosen])), 3)
    print(json.dumps(summary), flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("".join(json.dumps(x) + "\n" for x in [*lines, summary]))


if __name__ == "__main__":
    main()
