"""What the HiFi-GAN-family vocoders share: their config.json and the contract it declares."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path

from tnca_jax.contract import MelContract
from tnca_jax.errors import VocoderError

# config.json key (HiFi-GAN / BigVGAN) -> SpectralContract field.
CONFIG_FIELDS = {"sampling_rate": "sample_rate", "n_fft": "n_fft", "hop_size": "hop_length",
                 "win_size": "win_length", "num_mels": "n_mels", "fmin": "fmin", "fmax": "fmax"}



def contract_from_config(config: Mapping, name: str, source: str) -> MelContract:
    """The contract of a HiFi-GAN (jik876) or BigVGAN config.json (`source` names it).

    Both compute their log-mel with the recipe of `tnca_jax.contract` (reflect padding,
    center=False, Slaney magnitude mel, natural log floored at 1e-5); the config gives the
    sizes. The generator's upsampling must render `hop_size` samples per frame.
    """
    missing = [key for key in (*CONFIG_FIELDS, "upsample_rates") if key not in config]
    if missing:
        raise VocoderError(f"{source} lacks {', '.join(missing)}: not a HiFi-GAN/BigVGAN config")
    fields = {field: config[key] for key, field in CONFIG_FIELDS.items()}
    fields["fmin"] = float(fields["fmin"])
    fields["fmax"] = None if fields["fmax"] is None else float(fields["fmax"])
    upsampling = math.prod(config["upsample_rates"])
    if upsampling != fields["hop_length"]:
        raise VocoderError(f"{source}: upsample_rates {config['upsample_rates']} render "
                         f"{upsampling} samples per frame but hop_size is "
                         f"{fields['hop_length']}")
    return MelContract(name=name, **fields)


def read_config(path: str | os.PathLike) -> dict:
    """A vocoder's config.json as a dict."""
    try:
        config = json.loads(Path(path).read_text())
    except ValueError as err:
        raise VocoderError(f"{path} is not valid JSON ({err})") from None
    if not isinstance(config, dict):
        raise VocoderError(f"{path} holds no JSON object: not a vocoder config")
    return config
