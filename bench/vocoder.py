"""The music vocoder against Griffin-Lim on the held-out notes, and both vocoders' speed.

  python -m bench.vocoder [--weights=vocoders/music_vocoder.safetensors] \\
      [--out=bench/results/vocoder_cpu.jsonl] [--f0] [--max-notes=N]

For every held-out recording of `configs/vocoder.py` (notes the shipped weights never saw:
pitch classes A, C#/Db, F and the legato phrase; trimmed 60 dB below the peak and capped at 4 s
as a TNCA target is), each vocoder's ceiling: the recording's own log-mel through the vocoder,
scored against the recording with `tnca_jax.metrics` (mrstft, mel_l1_db, rms_ratio,
f0_error_cents). Then the summary per vocoder (mean, median, worst over notes), and the speed:
the real-time factor (audio seconds per wall second, median of repeats after a warm-up call)
to vocode a 4 s note on the present device. Prints JSON lines, also written to `--out`; the
last line ("kind": "comparison") puts both vocoders' mean ceiling and speed side by side.
`--max-notes` measures the first N held-out notes only (sorted by path; the line says so).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import numpy as np

from configs.vocoder import get_config
from tnca_jax import vocoder_train
from tnca_jax.dsp import log_mel
from tnca_jax.inverse import GriffinLim
from tnca_jax.neural_vocoder import WEIGHTS_PATH, NeuralVocoder

SPEED_SECONDS = 4.0


def real_time_factor(vocoder, log_mel_in: jax.Array, repeats: int) -> float:
    """Audio seconds rendered per wall-clock second (median over `repeats`)."""
    contract = vocoder.contract
    jax.block_until_ready(vocoder(log_mel_in, contract=contract))  # compile
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(vocoder(log_mel_in, contract=contract))
        times.append(time.perf_counter() - start)
    seconds = log_mel_in.shape[-1] * contract.hop_length / contract.sample_rate
    return seconds / float(np.median(times))


def _shown(path: Path) -> str:
    """`path` relative to the working directory when it lies under it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", type=Path, default=WEIGHTS_PATH)
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).resolve().parent / "results" / "vocoder_cpu.jsonl")
    parser.add_argument("--f0", action="store_true",
                        help="add the pYIN f0 error per note (slow on CPU)")
    parser.add_argument("--max-notes", type=int, default=None,
                        help="measure only the first N held-out notes")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()

    config = get_config()
    music = NeuralVocoder.load(args.weights)
    contract = music.contract
    vocoders = {"music": music, "griffinlim": GriffinLim(contract)}
    _, held_out = vocoder_train.split_recordings(config.data)
    total_notes = len(held_out)
    held_out = sorted(held_out, key=lambda r: str(r.path))[:args.max_notes]
    notes = vocoder_train.held_out_notes(held_out, contract, config.data)
    device = str(jax.devices()[0].device_kind)
    lines = []
    for name, vocoder in vocoders.items():
        result = vocoder_train.evaluate(vocoder, notes, f0=args.f0)
        lines += [{"kind": "note", "vocoder": name, **row} for row in result["per_note"]]
        lines.append({"kind": "summary", "vocoder": name, "notes": len(notes),
                      "held_out_notes": total_notes, **result["summary"]})
    # A 4 s note: the longest held-out recording's log-mel, cut or repeated to 4 s.
    longest = max((audio for _, audio in notes), key=len)
    frames = contract.num_frames(round(SPEED_SECONDS * contract.sample_rate))
    features = np.asarray(log_mel(longest, contract))
    features = np.tile(features, (1, -(-frames // features.shape[-1])))[None, :, :frames]
    for name, vocoder in vocoders.items():
        lines.append({"kind": "speed", "vocoder": name, "seconds": SPEED_SECONDS,
                      "real_time_factor": real_time_factor(vocoder, features, args.repeats),
                      "device": device, "backend": jax.default_backend()})
    summaries = {line["vocoder"]: line for line in lines if line["kind"] == "summary"}
    speeds = {line["vocoder"]: line["real_time_factor"] for line in lines
              if line["kind"] == "speed"}
    lines.append({"kind": "comparison", "notes": len(notes), "held_out_notes": total_notes,
                  "device": device, "weights": _shown(args.weights), **{
                      name: {"mrstft": summaries[name]["mrstft"]["mean"],
                             "mel_l1_db": summaries[name]["mel_l1_db"]["mean"],
                             "rms_ratio": summaries[name]["rms_ratio"]["mean"],
                             "x_real_time_4s": speeds[name]} for name in vocoders}})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w") as out:
        for line in lines:
            print(json.dumps(line))
            out.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
