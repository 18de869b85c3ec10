"""The settings the two TNCA jobs share (configs/violin.py: one note; configs/instruments.py:
many notes), each default in this one place; each job's config adds its data and overrides
what it needs. `tnca_jax.settings` says what every key means."""

import ml_collections


def tnca_config(job: str) -> ml_collections.ConfigDict:
    """The shared part of a TNCA job's config (full size, for an accelerator)."""
    config = ml_collections.ConfigDict()
    config.job = job  # "note" or "instruments"
    # Representation and inversion: the TNCA grows the log-mel of the vocoder's contract:
    # `contract` for griffinlim; music brings its own (the shipped weights: this default
    # contract); bigvgan and hifigan bring theirs from their config.json, e.g.
    # --config.vocoder=bigvgan --config.vocoder_path=nvidia/bigvgan_v2_22khz_80band_256x
    config.representation = "mel"  # what the TNCA grows: mel, stft or mag_if
    config.contract = "griffinlim_22khz_128band"
    config.vocoder = "griffinlim"
    config.vocoder_path = ml_collections.config_dict.placeholder(str)  # None, settable by flag
    config.seed = 0

    config.model = ml_collections.ConfigDict()
    config.model.channels = 16
    config.model.hidden = 96
    config.model.fire_rate = 0.5
    config.model.seed_spacing = 8  # frames between seed columns (onset first)
    # Cosines of each frame's place in the note, mapped into every cell's context (0: off).
    config.model.time_frequencies = 32
    # Many notes: how a note's expected spectrum is drawn from the training notes
    # (tnca_jax.priors): source_filter (closer beyond an instrument's range) or neighbours;
    # ignored for one note.
    config.model.prior = "source_filter"

    config.train = ml_collections.ConfigDict()
    # An iteration is one optimizer update; a growth step one update of the automaton.
    config.train.iterations = 4000
    config.train.learning_rate = 2e-3
    config.train.final_lr_fraction = 0.1
    config.train.warmup_iterations = 0  # linear warm-up of the learning rate from 0
    # A train step whose XLA memory estimate exceeds this (GB per device) is refused up front.
    config.train.memory_budget_gb = 8.0
    config.train.log_every = 20
    config.train.checkpoint_every = 200
    config.train.keep_checkpoints = 3
    config.train.batch_size = 4
    config.train.pool_size = 256
    config.train.min_growth_steps = 24
    config.train.max_growth_steps = 40
    # Loss weights (tnca_jax.losses.tnca_loss): the weighted L1 to the target has weight 1.
    config.train.growth_weight = 0.1  # alpha towards 1 everywhere
    config.train.overflow_weight = 1.0  # channels outside [-1, 1]
    config.train.multiscale_weight = 0.0  # L1 over a pyramid of pooled spectrograms
    config.train.temporal_weight = 0.0  # L1 of frame-to-frame changes
    config.train.audio_weight = 0.0  # multi-resolution STFT distance of the rendered audio
    config.train.waveform_weight = 0.0  # waveform L1 (mag_if only: it grows the phase)
    config.train.audio_griffinlim_iterations = 4  # unrolled in the audio loss (stft, mel)
    # Many notes: the share of the pool that grows each note from the prior drawn without it
    # (how the model learns to grow pitches it has no note of); ignored for one note.
    config.train.left_out_share = 0.25
    # Damage (Growing NCA): the best `damage` samples of each batch lose a block of
    # damage_frames (fraction of their note) before growing, so the model learns to regrow.
    config.train.damage = 0
    config.train.damage_frames = (0.1, 0.3)

    config.generate = ml_collections.ConfigDict()
    config.generate.growth_steps = 64
    config.generate.num_stages = 8
    # Refinement (tnca_jax.refine): grow best_of candidates in one batch and keep the one closest
    # to the recording by best_of_metric (one note only); post-processing of the grown log-mel,
    # 0 = off.
    config.generate.best_of = 1
    config.generate.best_of_metric = "mel_l1_db"
    config.generate.gaussian_sigma = 0.0  # bands and frames
    config.generate.temporal_median = 0  # frames
    config.generate.harmonic_gain = 0.0
    return config
