"""Growth you can hear and see: the note re-synthesised at successive growth steps.

`--mode=growth` (`tnca_jax.modes.growth`) writes into the workdir:
- growth.wav: every kept stage vocoded as a whole note, joined with short equal-power
  crossfades, so the timbre is heard appearing from the seed columns;
- growth.gif: the grown log-mel at the same stages, one GIF frame per stage, timed to the audio.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from tnca_jax import plots
from tnca_jax.generation import GenerationResult
from tnca_jax.workdir import GROWTH_GIF, GROWTH_WAV, Workdir

CROSSFADE_SECONDS = 0.05


def crossfade_join(clips: np.ndarray, overlap: int) -> np.ndarray:
    """Clips [n, samples] -> one signal [n * samples - (n - 1) * overlap], each join an
    equal-power (sine/cosine) crossfade over `overlap` samples."""
    n, length = clips.shape
    overlap = min(overlap, length)
    fade_in = np.sin(0.5 * np.pi * (np.arange(overlap) + 0.5) / overlap).astype(np.float32)
    fade_out = fade_in[::-1]
    out = np.zeros(n * length - (n - 1) * overlap, np.float32)
    for i, clip in enumerate(np.asarray(clips, np.float32)):
        clip = clip.copy()
        if i > 0:
            clip[:overlap] *= fade_in
        if i < n - 1:
            clip[length - overlap:] *= fade_out
        start = i * (length - overlap)
        out[start:start + length] += clip
    return out


def write_growth(workdir: Workdir, result: GenerationResult) -> tuple[Path, Path]:
    """growth.wav and growth.gif of a result rendered with `return_stages=True`."""
    if result.stage_audio is None:
        raise ValueError("the result holds no stage audio: render it with return_stages=True")
    rate = result.sample_rate
    overlap = round(CROSSFADE_SECONDS * rate)
    wav = workdir.write_wav(GROWTH_WAV, crossfade_join(result.stage_audio, overlap), rate)
    contract = result.contract
    vmax = float(np.max(contract.to_db(result.stages[-1])))
    frame_seconds = (result.stage_audio.shape[1] - overlap) / rate
    gif = io.BytesIO()
    plots.growth_animation(gif, result.stages, result.stage_steps, contract, vmax,
                           frame_seconds, result.representation.bin_label)
    return wav, workdir.write_bytes(GROWTH_GIF, gif.getvalue())
