"""One TNCA for many notes of many instruments (the instruments job, tnca_jax.tnca_training).

The whole corpus, one source per instrument (data/: Iowa violin, VSCO-2 flute and trumpet,
tonejs-instruments cello, contrabass and saxophone, MuseScore General clarinet renders), pitch
classes A, C#/Db and F held out. At the CPU size (2000 iterations: 29 minutes of training, 37
in all, on the 2-core CPU; this trained the shipped model, tnca_jax/instruments.safetensors,
exported with --mode=export):
  python main.py --config=configs/instruments.py:cpu --workdir=runs/instruments_cpu
  python main.py --config=configs/instruments.py:cpu --workdir=runs/instruments_cpu --mode=export
The same with each instrument's 5 lowest and highest semitones held out too (beyond the range):
  python main.py --config=configs/instruments.py:cpu,edges --workdir=runs/instruments_edges
At full size (sized for a GPU/TPU):
  python main.py --config=configs/instruments.py --workdir=runs/instruments
A smoke-size run (Iowa violin and VSCO-2 flute notes of one octave; 800 iterations, 10 minutes
of training, 12 in all, on the 2-core CPU):
  python main.py --config=configs/instruments.py:quick --workdir=runs/instruments_quick
Then any note, also at pitches and lengths it never heard, morphs, glides and phrases (without
a workdir of your own these use the shipped model):
  python main.py --config=configs/instruments.py --workdir=runs/mine --mode=generate \\
      --config.generate.instrument=violin --config.generate.pitch=Bb4 \\
      --config.generate.seconds=2.5
  python main.py --config=configs/instruments.py --workdir=runs/mine --mode=play \\
      --config.generate.midi=song.mid --config.generate.instrument=cello
  tnca_jax.generate(instrument={"violin": 0.7, "flute": 0.3}, pitch="G4", seconds=2.0)
Your own notes: folders or globs, named by pitch (cello_Bb3.wav; else pYIN labels them):
  --config.data.paths='("/path/to/notes",)'
"""

from pathlib import Path

import ml_collections

from configs.common import tnca_config

DATA = Path(__file__).resolve().parent.parent / "data"
VARIANTS = ("quick", "cpu", "edges")
# One source per instrument, so that each label is one recorded instrument (the clarinet has no
# recording here: soundfont renders, every semitone at two velocities).
FULL_SOURCES = ("iowa_mis/violin", "vsco2/flute", "vsco2/trumpet", "tonejs/cello",
                "tonejs/contrabass", "tonejs/saxophone", "musescore/clarinet")
# The quick run: the Iowa violin's A-string notes and VSCO-2's flute notes of octave 5
# (10 training notes, 4 held out: A5, C#5 and F5 on the violin, A5 on the flute).
QUICK_SOURCES = ("iowa_mis/violin/*sulA.*5.stereo.flac", "vsco2/flute/*5.flac")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """`arg`: comma-separated variants: "quick" (two instruments of one octave, CPU size),
    "cpu" (the whole corpus at the CPU size: how the shipped model is trained), "edges" (each
    instrument's 5 lowest and highest semitones held out too: notes beyond the range); None:
    the whole corpus at full size (GPU/TPU)."""
    variants = [v for v in (arg or "").split(",") if v]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown config variant {unknown[0]!r}; choose from "
                         f"{', '.join(VARIANTS)}")
    quick = "quick" in variants
    small = quick or "cpu" in variants  # the size a 2-core CPU trains in minutes
    config = tnca_config("instruments")
    config.data = ml_collections.ConfigDict()
    config.data.paths = tuple(str(DATA / s) for s in (QUICK_SOURCES if quick else FULL_SOURCES))
    config.data.exclude = ("*phrase*",)  # no single pitch
    config.data.held_out = "pitch"  # the project-wide rule, or a tuple of globs
    # Also hold out each instrument's lowest and highest this many semitones (0: none).
    config.data.held_out_edges = 5 if "edges" in variants else 0
    # A named note's pitch tuned to pYIN's median f0 within half a semitone (as played).
    config.data.tune = True
    config.data.trim_db = 60.0
    config.data.max_seconds = 2.5 if small else 4.0

    config.model.hidden = 64 if small else 128
    config.model.time_frequencies = 0  # the conditioner's note-time features take its place

    config.train.iterations = 800 if quick else 2000 if small else 8000
    config.train.batch_size = 4 if small else 8
    # At least every training note twice (its own and its left-out prior).
    config.train.pool_size = 256 if quick else 1024
    config.train.min_growth_steps = 16 if small else 24
    config.train.max_growth_steps = 24 if small else 40
    config.train.damage = 1
    config.train.log_every = 50
    config.train.checkpoint_every = 500
    config.train.keep_checkpoints = 2

    # --mode=generate and --mode=growth: the note to grow (instrument: a name, or
    # "violin:0.7,flute:0.3"), optionally gliding to another.
    config.generate.instrument = "violin"
    config.generate.glide_to = ml_collections.config_dict.placeholder(str)
    config.generate.pitch = "A4"
    config.generate.seconds = 2.0
    # Regrowth demo: erase this fraction of the frames after `erase_at` growth steps.
    config.generate.erase_fraction = 0.25
    config.generate.erase_at = 32
    # --mode=play: a MIDI file played with generate.instrument (None: a short demo phrase).
    config.generate.midi = ml_collections.config_dict.placeholder(str)

    config.eval = ml_collections.ConfigDict()
    config.eval.f0 = True  # pYIN f0 error of every measured note
    config.eval.max_notes = 24 if quick else 64  # notes measured (0: all), held-out first
    return config
