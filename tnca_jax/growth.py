"""Growth you can hear and see: the note re-synthesised at successive growth steps.

`--mode=growth` (`run.growth_workdir`) writes into the workdir:
- growth.wav: every kept stage vocoded as a whole note, joined with short equal-power
  crossfades, so the timbre is heard appearing from the seed columns;
- growth.gif: the grown log-mel at the same stages, one GIF frame per stage, timed to the audio.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tnca_jax import audio as audio_lib
from tnca_jax import plots
from tnca_jax.generate import GenerationResult

CROSSFADE_SECONDS = 0.05
GROWTH_WAV, GROWTH_GIF = "growth.wav", "growth.gif"


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


def write_growth(workdir: Path, result: GenerationResult) -> tuple[Path, Path]:
    """growth.wav and growth.gif of a result rendered with `return_stages=True`."""
    if result.stage_audio is None:
        raise ValueError("the result holds no stage audio: render it with return_stages=True")
    rate = result.sample_rate
    overlap = round(CROSSFADE_SECONDS * rate)
    audio_lib.write_wav(workdir / GROWTH_WAV, crossfade_join(result.stage_audio, overlap), rate)
    contract = result.contract
    vmax = float(np.max(contract.to_db(result.stages[-1])))
    frame_seconds = (result.stage_audio.shape[1] - overlap) / rate
    plots.growth_animation(workdir / GROWTH_GIF, result.stages, result.stage_steps, contract,
                           vmax, frame_seconds)
    return workdir / GROWTH_WAV, workdir / GROWTH_GIF
