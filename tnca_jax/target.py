"""The recording as training data: loaded, trimmed, cut to whole frames, and turned into the
representation a TNCA learns to grow."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from tnca_jax import audio as audio_lib
from tnca_jax.contract import SpectralContract, get_contract
from tnca_jax.representations import (
    Representation,
    config_representation_name,
    get_representation,
)


@dataclasses.dataclass(frozen=True)
class Target:
    """The recording a TNCA learns to grow.

    Attributes:
      audio: mono float32 waveform at the contract's rate, cut to a whole number of frames.
      representation: what the TNCA grows, under its contract.
      features: [n_values, bins, frames] the representation of `audio`, native units.
      cut: how a recording longer than `max_seconds` was cut (None: used whole).
    """

    audio: np.ndarray
    representation: Representation
    features: np.ndarray
    cut: str | None = None

    @property
    def contract(self) -> SpectralContract:
        return self.representation.contract

    @property
    def n_frames(self) -> int:
        return self.features.shape[-1]

    @property
    def normalized(self) -> jax.Array:
        """The features mapped to [0, 1] per value (0 = silence): [n_values, bins, frames]."""
        return self.representation.to_unit(jnp.asarray(self.features))


def load_target(config: ml_collections.ConfigDict,
                representation: Representation | None = None) -> Target:
    """The config's recording as `representation` (default: the config's representation under
    the config's contract)."""
    if representation is None:
        representation = get_representation(config_representation_name(config),
                                            get_contract(config.contract))
    contract = representation.contract
    recording = audio_lib.load_recording(config.audio_path, contract.sample_rate,
                                         trim_db=config.trim_db, max_seconds=config.max_seconds)
    audio = recording.audio
    rate, min_seconds = contract.sample_rate, config.min_seconds
    # Two analysis frames, and more samples than the reflect padding, at the very least.
    frames_needed = max(2 * contract.hop_length, contract.pad + 1) / rate
    # min_seconds judges the recording's sound, not what max_seconds kept of it.
    if recording.source_seconds < min_seconds:
        raise audio_lib.AudioError(
            f"{config.audio_path} has {recording.source_seconds:.3f} s of sound after "
            f"trimming, but --config.min_seconds={min_seconds} asks for {min_seconds:.3f} s; "
            "give a longer note or lower min_seconds")
    if len(audio) < frames_needed * rate:
        kept = "" if recording.cut is None else " (--config.max_seconds kept that much)"
        raise audio_lib.AudioError(
            f"{config.audio_path} gives {len(audio) / rate:.3f} s of sound{kept}, but two "
            f"analysis frames of contract {contract.name!r} need {frames_needed:.3f} s; give "
            "a longer note" + (" or raise max_seconds" if kept else ""))
    audio = audio[: contract.num_samples(contract.num_frames(len(audio)))]
    return Target(audio=audio, representation=representation,
                  features=np.asarray(representation.features(audio)), cut=recording.cut)
