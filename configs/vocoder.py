"""The music vocoder (vocoders.music) trained on the instrument corpus in data/.

Full run (the defaults are the first of the shipped weights' three stages,
vocoders/music_vocoder.safetensors: 3000 iterations with pitch-shift augmentation, about 30
minutes on 2 CPU cores; the two fine-tuning stages that follow are in docs/results.md):
  python main.py --config=configs/vocoder.py --workdir=runs/vocoder
Use them in a TNCA run with --config.vocoder=music (configs/violin.py).
CPU smoke run (a few minutes):
  python main.py --config=configs/vocoder.py:quick --workdir=runs/vocoder_quick
Your own instrument: folders or globs of recordings; notes named by pitch (e.g. cello_Bb3.wav,
As3.flac, Violin.arco.ff.sulA.Bb4.wav) are split by the project-wide rule (A, C#/Db and F held
out), or name the held-out files yourself:
  python main.py --config=configs/vocoder.py --workdir=runs/my_vocoder \\
      --config.data.paths='("/path/to/my/notes",)' \\
      --config.data.held_out='("/path/to/my/notes/*_test.wav",)'
The run writes workdir/music_vocoder.safetensors (the weights, with their contract) and
workdir/metrics.json (the vocoder's ceiling on every held-out note); rerunning the
same command resumes from the latest checkpoint.
"""

from pathlib import Path

import ml_collections

DATA = Path(__file__).resolve().parent.parent / "data"
VARIANTS = ("quick",)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """`arg`: "quick" for the CPU smoke size; None for the full run."""
    variants = [v for v in (arg or "").split(",") if v]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown config variant {unknown[0]!r}; choose from "
                         f"{', '.join(VARIANTS)}")
    config = ml_collections.ConfigDict()
    config.job = "vocoder"
    config.contract = "griffinlim_22khz_128band"  # the log-mel the vocoder inverts
    config.seed = 0

    config.data = ml_collections.ConfigDict()
    config.data.paths = tuple(str(DATA / source) for source in ("iowa_mis", "vsco2",
                                                                "fluidr3_gm"))
    config.data.held_out = "pitch"  # the project-wide rule, or a tuple of globs
    config.data.trim_db = 60.0  # cut leading/trailing audio this far below the peak
    config.data.eval_max_seconds = 4.0  # held-out notes are measured as TNCA targets are

    config.model = ml_collections.ConfigDict()
    config.model.dim = 256
    config.model.intermediate = 768
    config.model.layers = 8
    config.model.kernel_size = 7
    config.model.phase = "recurrent"
    config.model.envelope_skip = True  # log-magnitude = the log-mel's envelope + a correction
    # Told f0 (estimated from the log-mel unless the caller gives it), the network shapes a
    # harmonic source's comb and takes its phase (vocoders.music).
    config.model.harmonic = True
    # Mel-consistent Griffin-Lim iterations from the network's STFT when vocoding (not in
    # training): measured on the held-out notes (README), they lower mrstft and mel L1.
    config.model.refine_iterations = 64

    config.train = ml_collections.ConfigDict()
    config.train.iterations = 3000
    # Start from these weights (a music_vocoder.safetensors of the same architecture and
    # contract, e.g. the shipped one to fine-tune on your own instrument); None: from scratch.
    config.train.init_weights = ml_collections.config_dict.placeholder(str)
    config.train.batch_size = 8
    config.train.segment_frames = 48  # 1.1 s at hop 512
    config.train.learning_rate = 1e-3
    config.train.warmup_iterations = 500
    config.train.final_lr_fraction = 0.01
    config.train.weight_decay = 0.01
    config.train.clip_norm = 1.0
    # Loss weights (vocoders.music_train): mrstft is the metric itself; mel in dB.
    config.train.mrstft_weight = 1.0
    config.train.mel_weight = 0.1
    config.train.consistency_weight = 0.0  # predicted STFT vs the STFT of its audio (APNet)
    config.train.magnitude_weight = 0.0  # L1 of the predicted log-magnitude (APNet)
    config.train.phase_weight = 0.0  # group delay + instantaneous frequency (APNet)
    config.train.phase_ip_weight = 0.0  # instantaneous (absolute) phase (APNet)
    config.train.phase_weighting = "magnitude"  # or "uniform" (APNet's)
    # Adversarial training (vocoders.discriminators): the least-squares GAN loss and feature
    # matching of period and resolution discriminators; 0 trains on the regression losses only.
    config.train.adversarial_weight = 0.0
    config.train.feature_matching_weight = 0.0
    # Augmentation: a random pitch shift (resampling) and gain per segment, Gaussian noise
    # (natural log units) on the input log-mel.
    config.train.pitch_shift_semitones = 2.0
    config.train.gain_db_min = -12.0
    config.train.gain_db_max = 3.0
    config.train.input_noise = 0.0
    config.train.log_every = 50
    config.train.checkpoint_every = 500
    config.train.keep_checkpoints = 2
    config.train.memory_budget_gb = 8.0  # a step XLA estimates above this is refused up front

    config.eval = ml_collections.ConfigDict()
    config.eval.f0 = False  # pYIN f0 error per held-out note (slow on CPU)

    if "quick" in variants:
        config.model.dim = 64
        config.model.intermediate = 192
        config.model.layers = 3
        config.train.iterations = 1500
        config.train.batch_size = 4
        config.train.segment_frames = 24
        config.train.warmup_iterations = 100
        config.train.log_every = 50
        config.train.checkpoint_every = 500
        config.eval.f0 = False
    return config
