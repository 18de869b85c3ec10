"""How well can anything know a held-out note's spectrum from the training notes? No training.

  python -m bench.timbre_levels                 # configs/instruments.py:quick's note set
  python -m bench.timbre_levels --size full --out bench/results/timbre_levels_full.jsonl

For every held-out note of the instruments job's note set, the mel L1 (dB, floored 80 dB below
the note's peak, as the instruments job's training loss: `tnca_jax.tnca_training.Targets`) of
four levels against the note's log-mel:
  static     the note's own time-average (the static baseline: it knows the note),
  nearest    the nearest training note of the instrument (by pitch), its time-average at the
             held-out note's loudness, held still,
  prior      the note's prior (`conditioning.SpectrumPrior`: the training notes nearest below
             and above, moved along log-frequency to its pitch), held still,
  level      the resting level a grown note starts from: the prior plus the instrument's
             envelope over the note (`tnca_jax.tnca_training.fit_envelopes`).
These bound what the level alone gives. One JSON line per note, then a summary of the means.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from configs.instruments import get_config
from tnca_jax.losses import TOP_DB
from tnca_jax.notes import load_note_set
from tnca_jax.representations import get_representation
from tnca_jax.settings import read_tnca
from tnca_jax.tnca_training import fit_envelopes

ROWS = ("static", "nearest", "prior", "level")


def floored_l1_db(unit: np.ndarray, level: np.ndarray, span_db: float) -> float:
    """Mean |level - unit| over [F, T] in dB, both floored TOP_DB below the note's peak."""
    floor = unit.max() - TOP_DB / span_db
    return float(np.mean(np.abs(np.maximum(level, floor) - np.maximum(unit, floor))) * span_db)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=("quick", "full"), default="quick")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    settings = read_tnca(get_config("quick" if args.size == "quick" else None))
    representation = get_representation(settings.representation, settings.spectral_contract)
    notes = load_note_set(settings.data, representation)
    span = representation.unit_span_db
    envelope = fit_envelopes(notes)
    units = {id(n): np.asarray(representation.to_unit(jnp.asarray(n.features)))[0]
             for n in notes.notes}
    lines = []
    for note in notes.held_out:
        i = notes.instruments.index(note.instrument)
        unit = units[id(note)]
        condition = notes.condition([note])
        prior = np.asarray(condition.prior)[0, i, 0]  # [F]
        time = np.asarray(condition.time)[0, :unit.shape[-1]]  # [T, K]
        mine = [n for n in notes.training if n.instrument == note.instrument]
        nearest = min(mine, key=lambda n: abs(n.midi - note.midi))
        still = units[id(nearest)].mean(axis=-1) + (note.loudness_db - nearest.loudness_db) / span
        levels = {"static": unit.mean(axis=-1)[:, None], "nearest": still[:, None],
                  "prior": prior[:, None], "level": prior[:, None] + envelope[i, 0] @ time.T}
        line = {"note": Path(note.path).name, "instrument": note.instrument,
                "midi": round(note.midi, 2), "nearest_midi": round(nearest.midi, 2),
                **{f"{row}_mel_l1_db": round(floored_l1_db(unit, levels[row], span), 3)
                   for row in ROWS}}
        lines.append(line)
        print(json.dumps(line), flush=True)
    summary = {"summary": True, "size": args.size, "held_out_notes": len(lines),
               **{f"mean_{row}_mel_l1_db": round(float(np.mean(
                   [line[f"{row}_mel_l1_db"] for line in lines])), 3) for row in ROWS}}
    print(json.dumps(summary), flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("".join(json.dumps(x) + "\n" for x in [*lines, summary]))


if __name__ == "__main__":
    main()
