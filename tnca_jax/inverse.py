"""From grown features to audio: the `Vocoder` protocol, the checks that bind a log-mel to a
vocoder's contract, the weight-free Griffin-Lim vocoder, and the one factory (`load_inverse`)
that every mode and `generate()` use.

Vocoders by name (`VOCODER_NAMES`): `griffinlim` (JAX, no weights) lives here; the learned
JAX vocoder `music` (`vocoders.music`, shipped weights) and the learned torch vocoders
`bigvgan` and `hifigan` (in the `vocoders` package, the `vocoders` extra) depend on this module
and are imported by module path on first use.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
from collections.abc import Callable
from typing import ClassVar, Protocol

import jax
import jax.numpy as jnp

from tnca_jax import dsp
from tnca_jax.contract import (
    DEFAULT_CONTRACT,
    ContractMismatchError,
    MelContract,
    SpectralContract,
    get_contract,
)
from tnca_jax.errors import ConfigError, UserError
from tnca_jax.representations import Representation, get_representation


class Vocoder(Protocol):
    """Log-mel [batch, n_mels, frames] under `contract` -> audio [batch, frames * hop].
    `contract=` declares the input's contract (checked)."""

    name: str
    contract: MelContract

    def __call__(self, log_mel: jax.Array, *, contract: SpectralContract | None = None
                 ) -> jax.Array: ...


# How far above the contract's full-scale level a log-mel may reach (several partials can
# share a band) before it is taken for another convention.
HEADROOM = 4.0


def check_input(log_mel: jax.Array, required: MelContract,
                declared: SpectralContract | None = None) -> jax.Array:
    """Validate a log-mel for a vocoder under `required`: returns it as float32 [B, M, T].

    Raises ContractMismatchError when `declared` (the contract the spectrogram was computed
    under) differs from `required`, when the band count differs, or when the values lie outside
    the contract's log range (a power-dB mel in [-80, 0] given where the natural log of a
    magnitude mel, floored at ln(1e-5) = -11.5, is expected); ValueError on NaN or Inf.
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
            "another convention (a power-dB mel?); compute it with tnca_jax.dsp.log_mel")
    return log_mel


@dataclasses.dataclass(frozen=True)
class GriffinLim:
    """Log-mel to waveform with no learned weights: [batch, n_mels, frames] -> [batch, samples].

    Mel-consistent fast Griffin-Lim (`tnca_jax.dsp.griffin_lim`), jitted once per setting (two
    instances with equal fields share the compiled function). The starting phase comes from
    `seed`.
    """

    contract: MelContract
    iterations: int = 64
    momentum: float = 0.99
    seed: int = 0
    name: ClassVar[str] = "griffinlim"

    def __call__(self, log_mel: jax.Array, *, contract: SpectralContract | None = None,
                 seed: int | None = None) -> jax.Array:
        log_mel = check_input(log_mel, self.contract, contract)
        return _griffin_lim(self, log_mel, jax.random.key(self.seed if seed is None else seed))


@functools.partial(jax.jit, static_argnums=0)
def _griffin_lim(vocoder: GriffinLim, log_mel: jax.Array, key: jax.Array) -> jax.Array:
    return dsp.griffin_lim(vocoder.contract.from_log(log_mel), vocoder.contract, key,
                           iterations=vocoder.iterations, momentum=vocoder.momentum)


# Learned vocoders in torch: name -> module of the `vocoders` package with `load(path, ...)`.
TORCH_VOCODERS = {"bigvgan": "vocoders.bigvgan", "hifigan": "vocoders.hifigan"}
# Learned vocoders in JAX: name -> module with `load(path)` (path None: its shipped weights).
JAX_VOCODERS = {"music": "vocoders.music"}
VOCODER_NAMES = ("griffinlim", *JAX_VOCODERS, *TORCH_VOCODERS)


def load_vocoder(name: str, path: str | None = None, *,
                 contract: SpectralContract | str | None = None,
                 use_cuda_kernel: bool = False) -> Vocoder:
    """Build the vocoder `name` (one of VOCODER_NAMES).

    Args:
      name: griffinlim, music, bigvgan or hifigan.
      path: weights of a learned vocoder: for music a music_vocoder.safetensors (default: the
        shipped one, trained on the instrument corpus in data/); for bigvgan a Hugging Face id
        or a local directory (config.json + bigvgan_generator.pt); for hifigan a jik876
        checkpoint or its directory (with config.json). Must be None for griffinlim.
      contract: for weight-free vocoders, the mel contract to invert (default: the default
        contract). Learned vocoders read theirs from their config and ignore this.
      use_cuda_kernel: bigvgan only: its fused CUDA activation, if it builds (else a warning).

    Raises ConfigError for a name or path that cannot work, MissingExtraError when the
    `vocoders` extra is needed and missing.
    """
    if name not in VOCODER_NAMES:
        raise ConfigError(f"unknown vocoder {name!r}; choose one of {', '.join(VOCODER_NAMES)}")
    if use_cuda_kernel and name != "bigvgan":
        raise ConfigError(f"use_cuda_kernel is a bigvgan option, not one of {name!r}")
    if name == "griffinlim":
        if path is not None:
            raise ConfigError("griffinlim has no weights: drop vocoder_path")
        contract = get_contract(contract or DEFAULT_CONTRACT)
        if not isinstance(contract, MelContract):
            raise ConfigError(f"griffinlim inverts a log-mel: {contract.name!r} is not a mel "
                              "contract")
        return GriffinLim(contract)
    if name in JAX_VOCODERS:  # Weights and contract in one file; no torch.
        return importlib.import_module(JAX_VOCODERS[name]).load(path)
    if not path:
        raise ConfigError(f"{name} needs its weights: set vocoder_path (--config.vocoder_path) "
                          "to a checkpoint directory" + (" or a Hugging Face id"
                                                         if name == "bigvgan" else ""))
    module = importlib.import_module(TORCH_VOCODERS[name])
    options = {"use_cuda_kernel": True} if use_cuda_kernel else {}
    return module.load(path, **options)


@dataclasses.dataclass(frozen=True, eq=False)
class Inverse:
    """How grown features become sound: [batch, n_values, bins, frames] (native units) ->
    audio [batch, frames * hop].

    A mel representation goes through `vocoder` (under the representation's contract); the
    others render themselves (`Representation.render`) and take no vocoder. Build it with
    `load_inverse`.
    """

    representation: Representation
    vocoder: Vocoder | None = None

    def __post_init__(self) -> None:
        if self.representation.renders_itself != (self.vocoder is None):
            raise ConfigError(_renders_itself(self.representation.name, self.vocoder.name)
                              if self.vocoder is not None
                              else "a mel representation is rendered by a vocoder")
        if self.vocoder is not None:
            self.vocoder.contract.require_same(self.contract,
                                               what="the trained TNCA's spectrogram")

    @property
    def name(self) -> str:
        """The vocoder's name, or how the representation renders itself."""
        if self.vocoder is not None:
            return self.vocoder.name
        return "istft" if self.representation.grows_phase else "griffinlim"

    @property
    def contract(self) -> SpectralContract:
        return self.representation.contract

    def __call__(self, features: jax.Array) -> jax.Array:
        features = jnp.asarray(features, jnp.float32)
        if self.vocoder is not None:
            return self.vocoder(features[:, 0], contract=self.contract)
        return self.representation.render(features)

    @property
    def differentiable_vocoder(self) -> Callable[[jax.Array], jax.Array] | None:
        """The vocoder as a traceable, differentiable function of log-mels [batch, n_mels,
        frames] (a JAX vocoder's `differentiable`), for the TNCA's audio loss; None for
        Griffin-Lim (the loss unrolls its own), the torch vocoders and the representations
        that render themselves."""
        return getattr(self.vocoder, "differentiable", None)


def load_inverse(representation: Representation | str, vocoder: str = "griffinlim",
                 vocoder_path: str | None = None, *,
                 contract: SpectralContract | str | None = None) -> Inverse:
    """The way back to audio, for a trained run or a new one.

    `representation` as a `Representation` (a trained run) pins the contract: a mel vocoder
    must be under it (else ContractMismatchError naming the field). As a name (a new run), the
    vocoder chooses: a learned vocoder brings its own contract, the weight-free one inverts
    `contract` (default: the default contract), which the other representations use as is.
    Representations other than mel render themselves: `vocoder` must then be griffinlim (the
    default) with no path.
    """
    name = representation if isinstance(representation, str) else representation.name
    pinned = None if isinstance(representation, str) else representation
    if name != "mel":
        if vocoder != "griffinlim" or vocoder_path:
            raise ConfigError(_renders_itself(name, vocoder))
        return Inverse(pinned or get_representation(name, contract or DEFAULT_CONTRACT))
    loaded = load_vocoder(vocoder, vocoder_path,
                          contract=pinned.contract if pinned else contract)
    return Inverse(pinned or get_representation("mel", loaded.contract), loaded)


def companion(inverse: Inverse) -> Inverse | None:
    """The other weight-shipping JAX vocoder under the same contract, for listening side by
    side: the shipped music vocoder beside Griffin-Lim, Griffin-Lim beside it; None for the
    others (torch vocoders, representations that render themselves, another contract, or a
    shipped file that cannot be read)."""
    if inverse.vocoder is None or inverse.name not in ("griffinlim", "music"):
        return None
    if inverse.name == "music":
        return Inverse(inverse.representation, GriffinLim(inverse.contract))
    try:
        music = load_vocoder("music")
    except UserError:
        return None
    if music.contract.first_difference(inverse.contract) is not None:
        return None
    return Inverse(inverse.representation, music)


def _renders_itself(representation: str, vocoder: str) -> str:
    return (f"representation {representation!r} renders itself: vocoder {vocoder!r} applies "
            "to mel only (set --config.vocoder=griffinlim, the default, and no vocoder_path)")
