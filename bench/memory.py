"""Memory of one train step per shipped config, from XLA's compiled memory analysis.

For each config (full and quick; mel, stft, mag_if) on a note at the duration cap (4 s: the
longest any run trains on), the train step is compiled as training compiles it
(`tnca_jax.tnca_training.plan_training`) and XLA's estimate read: arguments = train state and
sample pool, temporaries = what the backward pass keeps and its workspace, peak. Beside it, the
reference: the same step with the growth step differentiated by JAX's autodiff instead of its
written-out gradient (`tnca_jax.cells.growth_step`), which is what the project trained with
before. Nothing runs: only compiles, so a CPU answers for an accelerator (its buffer
assignment differs a little from a GPU's). Prints one JSON object.

  python -m bench.memory [--audio note.wav] [--configs quick,stft ...]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile as sf

from configs.violin import get_config
from tnca_jax import cells, model
from tnca_jax.modes import load_notes, new_inverse
from tnca_jax.settings import read_tnca
from tnca_jax.tnca_training import plan_training

CONFIGS = ["", "stft", "mag_if", "quick", "quick,stft", "quick,mag_if"]


def four_second_note(directory: Path, sample_rate: int = 22050) -> Path:
    """A 4 s harmonic tone with an attack and a decay: the memory depends on its length only."""
    t = np.arange(4 * sample_rate) / sample_rate
    tone = sum(0.2 / k * np.sin(2 * np.pi * 196.0 * k * t) for k in range(1, 12))
    envelope = np.minimum(1, t / 0.05) * np.exp(-0.3 * t)
    path = directory / "note_4s.wav"
    sf.write(path, (tone * envelope).astype(np.float32), sample_rate, subtype="FLOAT")
    return path


@contextlib.contextmanager
def autodiff_growth_step() -> Iterator[None]:
    """Within the block, `grow` differentiates the growth step by autodiff (the reference);
    `tnca_jax.model` looks `growth_step` up by name, so the name is swapped there."""
    written_out = model.growth_step
    model.growth_step = lambda *args: cells._step_forward(*args)[0]
    try:
        yield
    finally:
        model.growth_step = written_out


def measure(config_arg: str, audio: Path) -> dict:
    config = get_config(config_arg or None)
    config.data.audio_path = str(audio)
    budget = config.train.memory_budget_gb
    config.train.memory_budget_gb = None  # measure, whatever it needs
    settings = read_tnca(config)
    inverse = new_inverse(settings)
    notes = load_notes(settings, inverse)

    def plan():  # compiling writes nothing: no run.json to describe
        return plan_training(settings, notes, lambda workdir: None,
                             vocoder=inverse.differentiable_vocoder).memory

    project = plan()
    with autodiff_growth_step():
        reference = plan()
    note = notes.notes[0]
    return {"config": f"configs/violin.py{':' + config_arg if config_arg else ''}",
            "seconds": round(len(note.audio) / notes.representation.contract.sample_rate, 3),
            "grid": list(note.features.shape[1:]), "memory_budget_gb": budget,
            "project": project.to_dict(), "autodiff_reference": reference.to_dict(),
            "fits_budget": project.peak <= budget * 1e9}


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
