"""Vocoders: log-mel under a spectral contract -> waveform.

`load(name, path=None)` returns a `Vocoder`: `.contract` and
`__call__(log_mel [batch, n_mels, frames]) -> jax.Array [batch, samples]`. The learned ones
(bigvgan, hifigan) run in torch behind `vocoders.torch_bridge`, imported only when loaded.
"""

from __future__ import annotations

from tnca_jax.contract import DEFAULT_CONTRACT, SpectralContract, get_contract
from vocoders.base import Vocoder
from vocoders.griffinlim import GriffinLim

NAMES = ("griffinlim", "bigvgan", "hifigan")


def load(name: str, path: str | None = None, *,
         contract: SpectralContract | str | None = None,
         use_cuda_kernel: bool = False) -> Vocoder:
    """Build the vocoder `name`.

    Args:
      name: one of NAMES.
      path: weights of a learned vocoder: for bigvgan a Hugging Face id or a local directory
        (config.json + bigvgan_generator.pt); for hifigan a jik876 checkpoint or its directory
        (with config.json). Unused by griffinlim.
      contract: for weight-free vocoders, the contract to invert (default: the weight-free
        preset). Learned vocoders read theirs from their config and ignore this.
      use_cuda_kernel: bigvgan only: its fused CUDA activation, if it builds (else a warning).
    """
    if use_cuda_kernel and name != "bigvgan":
        raise ValueError(f"use_cuda_kernel is a bigvgan option, not one of {name!r}")
    if name == "griffinlim":
        if path is not None:
            raise ValueError("griffinlim has no weights: drop vocoder_path")
        return GriffinLim(get_contract(contract or DEFAULT_CONTRACT))
    if name in ("bigvgan", "hifigan") and not path:
        raise ValueError(f"{name} needs its weights: set vocoder_path (--config.vocoder_path) "
                         "to a checkpoint directory" + (" or a Hugging Face id"
                                                        if name == "bigvgan" else ""))
    if name == "bigvgan":
        from vocoders import bigvgan

        return bigvgan.load(path, use_cuda_kernel=use_cuda_kernel)
    if name == "hifigan":
        from vocoders import hifigan

        return hifigan.load(path)
    raise ValueError(f"unknown vocoder {name!r}; choose one of {', '.join(NAMES)}")
