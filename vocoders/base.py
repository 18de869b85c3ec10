"""What every vocoder shares: the input checks that bind a spectrogram to a contract, and the
contract of a HiFi-GAN-family config."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

import jax
import jax.numpy as jnp

from tnca_jax.contract import ContractMismatchError, SpectralContract

# config.json key (HiFi-GAN / BigVGAN) -> SpectralContract field.
CONFIG_FIELDS = {"sampling_rate": "sample_rate", "n_fft": "n_fft", "hop_size": "hop_length",
                 "win_size": "win_length", "num_mels": "n_mels", "fmin": "fmin", "fmax": "fmax"}



class Vocoder(Protocol):
    """What `vocoders.load` returns: log-mel [batch, n_mels, frames] under `contract` ->
    audio [batch, frames * hop]. `contract=` declares the input's contract (checked)."""

    name: str
    contract: SpectralContract

    def __call__(self, log_mel: jax.Array, *, contract: SpectralContract | None = None
                 ) -> jax.Array: ...


# How far above the contract's full-scale level a log-mel may reach (several partials can
# share a band) before it is taken for another convention.
HEADROOM = 4.0


def check_input(log_mel: jax.Array, required: SpectralContract,
                declared: SpectralContract | None = None) -> jax.Array:
    """Validate a log-mel for a vocoder under `required`: returns it as float32 [B, M, T].

    Raises ContractMismatchError when `declared` (the contract the spectrogram was computed
    under) differs from `required`, when the band count differs, or when the values lie outside
    the contract's log range (a power-dB mel in [-80, 0] given where the natural log of a
    magnitude mel, floored at ln(1e-5) = -11.5, is expected).
    """
    if declared is not None:
        required.require_same(declared, what="the log-mel given to the vocoder")
    log_mel = jnp.asarray(log_mel, jnp.float32)
    if log_mel.ndim == 2:
        log_mel = log_mel[None]
    if log_mel.ndim != 3 or log_mel.shape[1] != required.n_mels:
        raise ContractMismatchError(
            f"vocoder under contract {required.name!r} expects [batch, {required.n_mels}, frames]"
            f", got shape {tuple(log_mel.shape)}")
    low, high = float(jnp.min(log_mel)), float(jnp.max(log_mel))
    if not (jnp.isfinite(low) and jnp.isfinite(high)):
        raise ValueError("the log-mel given to the vocoder contains NaN or Inf")
    floor, top = required.log_min, required.log_max + HEADROOM
    if low < floor - 1e-3 or high > top:
        raise ContractMismatchError(
            f"log-mel values span [{low:.2f}, {high:.2f}] but contract {required.name!r} "
            f"({required.log} of {'power' if required.magnitude_power == 2 else 'magnitude'} "
            f"mel, floor {floor:.2f}) allows [{floor:.2f}, {top:.2f}]: the spectrogram follows "
            "another convention (a power-dB mel?); compute it with tnca_jax.contract.log_mel")
    return log_mel


def contract_from_config(config: Mapping, name: str, source: str) -> SpectralContract:
    """The contract of a HiFi-GAN (jik876) or BigVGAN config.json (`source` names it).

    Both compute their log-mel with the recipe of `tnca_jax.contract` (reflect padding,
    center=False, Slaney magnitude mel, natural log floored at 1e-5); the config gives the
    sizes. The generator's upsampling must render `hop_size` samples per frame.
    """
    missing = [key for key in (*CONFIG_FIELDS, "upsample_rates") if key not in config]
    if missing:
        raise ValueError(f"{source} lacks {', '.join(missing)}: not a HiFi-GAN/BigVGAN config")
    fields = {field: config[key] for key, field in CONFIG_FIELDS.items()}
    fields["fmin"] = float(fields["fmin"])
    fields["fmax"] = None if fields["fmax"] is None else float(fields["fmax"])
    upsampling = math.prod(config["upsample_rates"])
    if upsampling != fields["hop_length"]:
        raise ValueError(f"{source}: upsample_rates {config['upsample_rates']} render "
                         f"{upsampling} samples per frame but hop_size is "
                         f"{fields['hop_length']}")
    return SpectralContract(name=name, **fields)


def read_config(path: str | os.PathLike) -> dict:
    """A vocoder's config.json as a dict."""
    try:
        config = json.loads(Path(path).read_text())
    except ValueError as err:
        raise ValueError(f"{path} is not valid JSON ({err})") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path} holds no JSON object: not a vocoder config")
    return config
