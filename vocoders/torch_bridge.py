"""The one module that imports torch: JAX <-> torch arrays, and torch generators as vocoders.

Arrays cross by DLPack without a copy when they live on one CPU or CUDA device that both
frameworks see (the protocol synchronises the CUDA streams); a TPU array, an array sharded over
several devices, or a CUDA array with a CPU-only torch goes through a host copy instead. The
buffers alias: torch must not write into a tensor made from a JAX array.

Nothing in `tnca_jax`, nor `vocoders` itself, imports this module: it is loaded with the first
torch vocoder, so the core package works without torch installed.
"""

from __future__ import annotations

import os
import pickle
from types import ModuleType
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np

from tnca_jax.contract import MelContract, SpectralContract
from tnca_jax.errors import MissingExtraError, VocoderError
from tnca_jax.inverse import check_input

if TYPE_CHECKING:
    import torch

INSTALL_HINT = ('pip install torch==2.13.0 -e ".[vocoders]" (pin torch to the build you have: '
                "an unpinned torch may pull a multi-GB CUDA build; on Colab: pip install bigvgan)")


def import_torch() -> ModuleType:
    """The torch module, or a MissingExtraError that says how to install it."""
    try:
        import torch
    except ImportError as err:
        raise MissingExtraError(f"this vocoder needs PyTorch: {INSTALL_HINT}") from err
    return torch


def shares_memory(array: jax.Array) -> bool:
    """Whether `to_torch` hands `array` over without a copy: one CPU or CUDA device."""
    devices = array.devices()
    if len(devices) != 1:
        return False
    platform = next(iter(devices)).platform
    return platform == "cpu" or (platform == "gpu" and import_torch().cuda.is_available())


def torch_device(array: jax.Array) -> torch.device:
    """Where torch should compute on `array`: its CUDA device if shared, else the CPU."""
    torch = import_torch()
    device = next(iter(array.devices()))
    if shares_memory(array) and device.platform == "gpu":
        return torch.device("cuda", device.local_hardware_id)
    return torch.device("cpu")


def to_torch(array: jax.Array) -> torch.Tensor:
    """A JAX array as a torch tensor on `torch_device(array)`: zero-copy where shared."""
    torch = import_torch()
    if shares_memory(array):
        return torch.from_dlpack(array)
    return torch.from_numpy(np.array(array))  # Host copy: TPU, sharded, or no CUDA torch.


def to_jax(tensor: torch.Tensor, like: jax.Array) -> jax.Array:
    """A torch result back in JAX, where `like` (the input it came from) lives; zero-copy when
    `like` crossed zero-copy, else a host copy onto JAX's default device."""
    tensor = tensor.detach()
    if shares_memory(like):
        return jax.dlpack.from_dlpack(tensor)
    return jnp.asarray(tensor.cpu().numpy())


class TorchVocoder:
    """A torch generator (log-mel [B, n_mels, T] -> audio [B, 1, T * hop]) as a vocoder:
    `__call__(log_mel [batch, n_mels, frames]) -> jax.Array [batch, frames * hop]`.

    The input is checked against `contract` (`vocoders.base.check_input`); the generator runs
    under `torch.inference_mode()` on the input's device (moved there on first use).
    """

    def __init__(self, name: str, generator: torch.nn.Module, contract: MelContract):
        self.name = name
        self.contract = contract
        self.generator = generator.eval().requires_grad_(False)

    def __call__(self, log_mel: jax.Array, *, contract: SpectralContract | None = None
                 ) -> jax.Array:
        torch = import_torch()
        log_mel = check_input(log_mel, self.contract, contract)
        self.generator.to(torch_device(log_mel))
        with torch.inference_mode():
            audio = self.generator(to_torch(log_mel))[:, 0]
        return to_jax(audio, log_mel)


def load_generator_state(path: str | os.PathLike) -> dict:
    """The generator's state dict from a checkpoint holding {"generator": state_dict} (the
    format of HiFi-GAN and BigVGAN), loaded on the CPU without unpickling code.

    Raises VocoderError naming the file for an empty, truncated or corrupt checkpoint, or one
    that holds no generator.
    """
    torch = import_torch()
    if os.path.getsize(path) == 0:
        raise VocoderError(f"{path} is empty (0 bytes): copy or download the checkpoint again")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError, ValueError) as err:
        # torch's own text suggests weights_only=False (unpickling arbitrary code): not ours.
        raise VocoderError(f"{path} is not a readable torch checkpoint (truncated, corrupt or "
                           f"another format: {type(err).__name__}); copy or download it again"
                           ) from None
    if not (isinstance(checkpoint, dict) and isinstance(checkpoint.get("generator"), dict)):
        raise VocoderError(f"{path} holds no 'generator' state dict: not a HiFi-GAN/BigVGAN "
                           "generator checkpoint")
    return checkpoint["generator"]
