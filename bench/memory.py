"""Memory of one train step per shipped config, from XLA's compiled memory analysis.

For each config (full and quick; mel, stft, mag_if) on a note at the duration cap (4 s: the
longest any run trains on), the train step is compiled without and with remat and XLA's
estimate read (`tnca_jax.train.plan_training`: arguments = train state and sample pool,
temporaries = what the backward pass keeps, peak). Also what `remat=None` (auto) picks under
the default `memory_budget_gb`. Nothing runs: only compiles, so a CPU answers for an
accelerator (its buffer assignment differs a little from a GPU's). Prints one JSON object.

  python -m bench.memory [--audio note.wav] [--configs quick,stft ...]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from configs.violin import get_config
from tnca_jax.target import load_target
from tnca_jax.train import plan_training

CONFIGS = ["", "stft", "mag_if", "quick", "quick,stft", "quick,mag_if"]


def four_second_note(directory: Path, sample_rate: int = 22050) -> Path:
    """A 4 s harmonic tone with an attack and a decay: the memory depends on its length only."""
    t = np.arange(4 * sample_rate) / sample_rate
    tone = sum(0.2 / k * np.sin(2 * np.pi * 196.0 * k * t) for k in range(1, 12))
    envelope = np.minimum(1, t / 0.05) * np.exp(-0.3 * t)
    path = directory / "note_4s.wav"
    sf.write(path, (tone * envelope).astype(np.float32), sample_rate, subtype="FLOAT")
    return path


def measure(config_arg: str, audio: Path) -> dict:
    config = get_config(config_arg or None)
    config.audio_path = str(audio)
    target = load_target(config)
    row = {"config": f"configs/violin.py{':' + config_arg if config_arg else ''}",
           "seconds": round(len(target.audio) / target.contract.sample_rate, 3),
           "grid": list(target.features.shape[1:]),
           "memory_budget_gb": config.train.memory_budget_gb}
    budget = config.train.memory_budget_gb
    config.train.memory_budget_gb = None  # measure both, whatever they need
    for remat in (False, True):
        config.train.remat = remat
        row["remat" if remat else "plain"] = plan_training(config, target).memory.to_dict()
    fits = {remat: row["remat" if remat else "plain"]["peak"] <= budget for remat in (0, 1)}
    row["auto"] = "plain" if fits[0] else "remat" if fits[1] else "does not fit"
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--audio", type=Path, default=None, help="default: a 4 s tone")
    parser.add_argument("--configs", nargs="+", default=CONFIGS,
                        help="configs/violin.py variants ('' = full mel)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        audio = args.audio or four_second_note(Path(directory))
        rows = [measure(config_arg, audio) for config_arg in args.configs]
    print(json.dumps({"unit": "GB (1e9 bytes) per device", "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
