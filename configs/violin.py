"""TNCA on a violin note (University of Iowa MIS, A5 on the E string, fortissimo).

Full run (sized for a GPU/TPU: 4000 iterations of the log-mel config, ~80 s of training on an
H100; on a CPU add --config.train.iterations=1000, 43 minutes on 2 cores, or use :quick):
  python main.py --config=configs/violin.py --workdir=runs/violin_full
CPU smoke run (2 cores, under 5 minutes):
  python main.py --config=configs/violin.py:quick --workdir=runs/violin
Another recording:
  python main.py --config=configs/violin.py:quick --workdir=runs/mine \\
      --config.data.audio_path=/path/to/note.wav
Another representation (`mel` is the default; see tnca_jax.representations), e.g. magnitude
and instantaneous frequency with the audio-domain loss, at full size or quick:
  python main.py --config=configs/violin.py:mag_if --workdir=runs/violin_mag_if
  python main.py --config=configs/violin.py:quick,mag_if --workdir=runs/violin_mag_if_quick
The shipped music vocoder, trained through (the audio loss on its differentiable audio):
  python main.py --config=configs/violin.py:quick,music --workdir=runs/violin_music

Several devices (TPU cores, GPUs): training splits each batch and the sample pool over all of
`jax.devices()` and replicates the model, so batch_size and pool_size must be multiples of the
device count (the run stops before writing anything otherwise, naming the value to change).
A Colab TPU v2-8 has 8 cores; pool_size 256 splits already, batch_size 4 does not:
  python main.py --config=configs/violin.py --workdir=runs/violin_tpu \\
      --config.train.batch_size=8
notebooks/colab_tpu.ipynb installs the package and runs this on a Colab TPU. The same config
on 1 and on 8 devices gives the same loss curve up to float rounding (tests/test_sharding.py),
and a checkpoint written on one device count resumes on another.
"""

from pathlib import Path

import ml_collections

from configs.common import tnca_config

DATA = Path(__file__).resolve().parent.parent / "data"


VARIANTS = ("quick", "mel", "stft", "mag_if", "music")
# Audio loss weight of the stft and mag_if variants: the multi-resolution STFT distance (about
# 1 to 4) against the weighted L1 to the target (about 0.02 to 0.1). The best measured at the
# quick budget (README, bench/representations.py): mag_if at 0.05 inflates its magnitude to
# make up for the energy its grown phase cancels (RMS 1.40x); at 0.01 it does not (0.76x).
# mel's is for the bench's mel+audio row: the default mel configs leave the audio loss off.
AUDIO_WEIGHTS = {"mel": 0.05, "stft": 0.05, "mag_if": 0.01}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """`arg`: comma-separated variants: "quick" for the CPU smoke size, a representation
    ("mel", "stft" or "mag_if"; the latter two with the audio-domain loss), and "music": the
    log-mel rendered by the shipped music vocoder, trained through it (the audio-domain loss on
    the network's differentiable audio). None: full, mel, Griffin-Lim."""
    variants = [v for v in (arg or "").split(",") if v]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown config variant {unknown[0]!r}; combine {', '.join(VARIANTS)}"
                         " with commas, e.g. configs/violin.py:quick,mag_if")
    config = tnca_config("note")
    config.data = ml_collections.ConfigDict()
    # The recording: trimmed of leading/trailing audio 60 dB below its peak, capped.
    config.data.audio_path = str(DATA / "violin" / "Violin.arco.ff.sulE.A5.stereo.wav")
    config.data.trim_db = 60.0
    config.data.max_seconds = 4.0
    config.data.min_seconds = 0.5
    # Full size trains for an accelerator (docs/results.md, "Training budgets"): on an H100
    # the log-mel config at 4000 iterations instead of 1000 lifted temporal_gain on four
    # held-out violin notes from 4.3-7.0 to 6.4-10.4, at ~20 s per 1000 iterations. The linear
    # grids (stft, mag_if) plateaued in grid L1 by 1000 iterations and keep 1000.

    if "quick" in variants:
        config.model.hidden = 64
        config.train.iterations = 300
        config.train.batch_size = 2
        config.train.pool_size = 64
        config.train.min_growth_steps = 16
        config.train.max_growth_steps = 24
        config.train.log_every = 10
        config.train.checkpoint_every = 100
    if "stft" in variants or "mag_if" in variants:
        config.representation = "mag_if" if "mag_if" in variants else "stft"
        config.contract = "stft_22khz_1024"  # ln STFT magnitude, 513 bins, hop 256
        config.train.audio_weight = AUDIO_WEIGHTS[config.representation]
        if "quick" not in variants:
            config.train.iterations = 1000
    if "music" in variants:
        if config.representation != "mel":
            raise ValueError("config variant 'music' renders a log-mel: combine it with mel "
                             "or quick, not stft or mag_if")
        config.vocoder = "music"
        config.train.audio_weight = AUDIO_WEIGHTS["mel"]
    return config
