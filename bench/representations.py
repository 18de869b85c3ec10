"""Which representation sounds closest to the recording at the same training budget.

  python -m bench.representations                      # quick size (CPU, ~1 h on 2 cores)
  python -m bench.representations --size full          # configs/violin.py's full size (GPU)
  python -m bench.representations --rows mel,mag_if+audio --iterations 100

Trains one TNCA per row on the shipped violin with the same model, batch, growth steps and
iterations (the `--size` config), runs the whole job (train, grow, render, measure) in
`<workdir>/<row>`, then measures every generated note and every representation's ceiling (its
inverse on the recording's own features) against the same recording under one measuring
contract (`griffinlim_22khz_128band`, so that mel L1 is comparable across rows). Prints one
JSON object per row and a last one with the table and the MR-STFT ratio mel / mag_if+audio.

Rows: `mel` (log-mel + Griffin-Lim, spectral loss only: the default), `mel+audio`, `stft+audio`
(log magnitude + Griffin-Lim), `mag_if` and `mag_if+audio` (log magnitude and instantaneous
frequency, exact inverse; `+audio` adds the multi-resolution STFT loss on the rendered audio).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import ml_collections

ROWS = ("mel", "mel+audio", "stft+audio", "mag_if", "mag_if+audio")
MEASURED = ("mel_l1_db", "spectral_convergence", "mrstft", "rms_ratio", "centroid_error_hz")
MEASURING_CONTRACT = "griffinlim_22khz_128band"


def row_config(row: str, size: str, iterations: int | None) -> ml_collections.ConfigDict:
    """The `size` config with the row's representation and losses (same budget for all)."""
    from configs.violin import AUDIO_WEIGHT, get_config

    kind, _, extra = row.partition("+")
    config = get_config(",".join(v for v in ("quick" if size == "quick" else "", kind) if v))
    config.train.audio_weight = AUDIO_WEIGHT if extra == "audio" else 0.0
    if iterations is not None:
        config.train.iterations = iterations
    return config


def measure(workdir: Path, reference, contract) -> dict:
    """A finished row's generated and ceiling audio against `reference` under `contract`."""
    from tnca_jax import metrics
    from tnca_jax.audio import load_audio

    scores = {}
    for name in ("generated", "ceiling"):
        audio = load_audio(workdir / f"{name}.wav", contract.sample_rate, trim_db=None)
        scores[name] = metrics.compare(reference, audio, contract, only=MEASURED).to_dict()
        scores[name].pop("notes", None)
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=("quick", "full"), default="quick")
    parser.add_argument("--iterations", type=int, default=None,
                        help="override the size's train.iterations (same for every row)")
    parser.add_argument("--rows", default=",".join(ROWS))
    parser.add_argument("--workdir", default="runs/representations")
    args = parser.parse_args()
    rows = args.rows.split(",")
    unknown = [row for row in rows if row not in ROWS]
    if unknown:
        parser.error(f"unknown row {unknown[0]!r}; choose from {', '.join(ROWS)}")

    from tnca_jax.contract import get_contract
    from tnca_jax.run import train_and_evaluate
    from tnca_jax.train import load_target

    contract = get_contract(MEASURING_CONTRACT)
    reference = load_target(row_config("mel", args.size, args.iterations), contract).audio
    table = {}
    for row in rows:
        config = row_config(row, args.size, args.iterations)
        workdir = Path(args.workdir) / row
        start = time.perf_counter()
        train_and_evaluate(config, workdir, progress=False)
        seconds = time.perf_counter() - start
        table[row] = {"row": row, "representation": config.representation,
                      "contract": config.contract, "audio_weight": config.train.audio_weight,
                      "iterations": config.train.iterations, "seconds": round(seconds, 1),
                      "measuring_contract": MEASURING_CONTRACT,
                      **measure(workdir, reference, contract)}
        print(json.dumps(table[row]), flush=True)
    summary = {"table": {row: {f"{key}": entry["generated"][key] for key in MEASURED}
                         | {"ceiling_mrstft": entry["ceiling"]["mrstft"]}
                         for row, entry in table.items()}}
    if {"mel", "mag_if+audio"} <= table.keys():
        summary["mrstft_ratio_mel_over_mag_if_audio"] = (
            table["mel"]["generated"]["mrstft"] / table["mag_if+audio"]["generated"]["mrstft"])
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
