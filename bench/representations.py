"""Which representation sounds closest to the recording at the same training budget.

  python -m bench.representations                      # quick size (CPU, ~1 h on 2 cores)
  python -m bench.representations --size full          # configs/violin.py's full size (GPU)
  python -m bench.representations --rows mel,mag_if+audio --iterations 100
  python -m bench.representations --audio-weight 0.05    # the README's table

Trains one TNCA per row on the shipped violin with the same model, batch, growth steps and
iterations (the `--size` config), runs the whole job (train, grow, render, measure) in
`<workdir>/<row>` (a row already trained there is only measured again), then measures every
generated note and every representation's ceiling (its inverse on the recording's own
features) against the same recording under one measuring contract
(`griffinlim_22khz_128band`, so that mel L1 is comparable across rows). Prints one
JSON object per row and a last one with the table and the MR-STFT ratio mel / mag_if+audio,
and draws every row's log-mel beside the recording's in `<workdir>/representations.png`.

Rows: `mel` (log-mel + Griffin-Lim, spectral loss only: the default), `mel+audio`, `stft+audio`
(log magnitude + Griffin-Lim), `mag_if` and `mag_if+audio` (log magnitude and instantaneous
frequency, exact inverse; `+audio` adds the multi-resolution STFT loss on the rendered audio).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import ml_collections
import numpy as np

from tnca_jax.settings import TncaSettings
from tnca_jax.workdir import Workdir

ROWS = ("mel", "mel+audio", "stft+audio", "mag_if", "mag_if+audio")
MEASURED = ("mel_l1_db", "spectral_convergence", "mrstft", "rms_ratio", "centroid_error_hz")
MEASURING_CONTRACT = "griffinlim_22khz_128band"


def row_config(row: str, size: str, iterations: int | None, audio_weight: float | None = None,
               max_seconds: float | None = None) -> ml_collections.ConfigDict:
    """The `size` config with the row's representation and losses (same budget for all);
    `+audio` rows weigh the audio loss by `audio_weight` (default: the representation's in
    `configs.violin.AUDIO_WEIGHTS`); `max_seconds` cuts the recording shorter."""
    from configs.violin import AUDIO_WEIGHTS, get_config

    kind, _, extra = row.partition("+")
    config = get_config(",".join(v for v in ("quick" if size == "quick" else "", kind) if v))
    weight = AUDIO_WEIGHTS[kind] if audio_weight is None else audio_weight
    config.train.audio_weight = weight if extra == "audio" else 0.0
    if iterations is not None:
        config.train.iterations = iterations
    if max_seconds is not None:
        config.data.max_seconds = max_seconds
        config.data.min_seconds = min(config.data.min_seconds, max_seconds)
    return config


def measure(settings: TncaSettings, workdir: Path, reference: np.ndarray,
            contract) -> tuple[dict, np.ndarray]:
    """A trained row's generated note (as the note job renders it) and its representation's
    ceiling, against `reference` under `contract`, from the arrays (a 16-bit WAV's
    quantisation noise alone would move MR-STFT's log-magnitude term by about 0.1); returns
    the scores and the generated audio.

    For a row that grows the phase, also where its error comes from: the recording's own
    magnitude with the grown phase (instantaneous frequency), and the grown magnitude with
    the recording's phase.
    """
    from tnca_jax import generate, metrics
    from tnca_jax.generation import render_features
    from tnca_jax.modes import load_notes, new_inverse

    inverse = new_inverse(settings)
    recording = load_notes(settings, inverse).notes[0]
    note = generate(workdir, seed=settings.seed)
    rendered = {"generated": note.audio,
                "ceiling": render_features(inverse, [recording.features])[0]}
    if inverse.representation.grows_phase:
        true, grown = recording.features, note.features
        mixed = np.stack([np.stack([true[0], grown[1]]), np.stack([grown[0], true[1]])])
        rendered["true_magnitude_grown_phase"], rendered["grown_magnitude_true_phase"] = (
            np.asarray(inverse(mixed)))
    scores = {name: metrics.compare(reference, audio, contract, only=MEASURED).to_dict()
              for name, audio in rendered.items()}
    return scores, note.audio


def train_seconds(workdir: Path) -> float:
    """Training time from the training log (iterations between log lines /
    iterations_per_s)."""
    records = Workdir(workdir).read_log()
    steps = [record["iteration"] for record in records]
    return sum((step - previous) / record["iterations_per_s"]
               for previous, step, record in zip([0, *steps], steps, records, strict=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=("quick", "full"), default="quick")
    parser.add_argument("--iterations", type=int, default=None,
                        help="override the size's train.iterations (same for every row)")
    parser.add_argument("--audio-weight", type=float, default=None,
                        help="the +audio rows' train.audio_weight (default: the config's)")
    parser.add_argument("--max-seconds", type=float, default=None,
                        help="cut the recording shorter (smoke tests)")
    parser.add_argument("--rows", default=",".join(ROWS))
    parser.add_argument("--workdir", default="runs/representations")
    args = parser.parse_args()
    rows = args.rows.split(",")
    unknown = [row for row in rows if row not in ROWS]
    if unknown:
        parser.error(f"unknown row {unknown[0]!r}; choose from {', '.join(ROWS)}")

    from tnca_jax import plots
    from tnca_jax.modes import train_and_evaluate
    from tnca_jax.notes import load_note
    from tnca_jax.representations import get_representation
    from tnca_jax.settings import read_tnca

    measuring = get_representation("mel", MEASURING_CONTRACT)
    contract = measuring.contract
    reference = load_note(read_tnca(row_config("mel", args.size, args.iterations,
                                               max_seconds=args.max_seconds)).data,
                          measuring).notes[0].audio
    table, generated = {}, {}
    for row in rows:
        settings = read_tnca(row_config(row, args.size, args.iterations, args.audio_weight,
                                        args.max_seconds))
        workdir = Path(args.workdir) / row
        train_and_evaluate(settings, workdir, progress=False)  # a finished row: 0 iterations
        scores, generated[row] = measure(settings, workdir, reference, contract)
        table[row] = {"row": row, "representation": settings.representation,
                      "contract": settings.contract, "audio_weight": settings.train.audio_weight,
                      "iterations": settings.train.iterations,
                      "train_seconds": round(train_seconds(workdir), 1),
                      "measuring_contract": MEASURING_CONTRACT,
                      **scores}
        print(json.dumps(table[row]), flush=True)
    summary = {"table": {row: {key: entry["generated"][key] for key in MEASURED}
                         | {"ceiling_mrstft": entry["ceiling"]["mrstft"]}
                         for row, entry in table.items()}}
    if {"mel", "mag_if+audio"} <= table.keys():
        summary["mrstft_ratio_mel_over_mag_if_audio"] = (
            table["mel"]["generated"]["mrstft"] / table["mag_if+audio"]["generated"]["mrstft"])
    plots.log_mel_panels(Path(args.workdir) / "representations.png", reference, generated,
                         contract)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
