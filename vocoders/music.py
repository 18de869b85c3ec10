"""The music vocoder: a contract's log-mel -> audio, in pure JAX/Flax NNX, with shipped weights
(music_vocoder.safetensors beside this file; trained by `vocoders.music_train`).

Architecture (Vocos-style, Siuzdak 2023; losses after APNet, Ai & Ling 2023): the log-mel
[batch, n_mels, frames] goes through a Conv1d embedding and a stack of ConvNeXt blocks over
frames (no upsampling), then a linear head predicts, per
STFT bin of the contract's own framing (n_fft, hop), a log-magnitude and a phase; one inverse
STFT (windowed overlap-add) renders frames * hop samples. Everything runs at the frame rate, so
it is fast on CPU, GPU and TPU, and it is differentiable end to end (audio-domain losses of the
TNCA can run through it).

Phase ("recurrent", the default): a network that sees the same input frames gives the same
output frames, so a per-frame phase (Vocos's "direct" head, also available) cannot follow a
sustained partial whose phase advances by 2 pi f hop / sr from frame to frame: it renders every
steady tone on the grid of multiples of sr / hop (43 Hz at 22.05 kHz, hop 512). Here the head
predicts per bin a frequency offset (bins), a keep gate and a fresh phase, and the phase of each
bin is carried from frame to frame by a complex linear recurrence, computed with a parallel
scan:
    z[t] = keep[t] * exp(i * 2 pi * hop / n_fft * (bin + offset[t])) * z[t - 1]
           + (1 - keep[t]) * exp(i * fresh[t]),                 phase[t] = angle(z[t]).
keep -> 1 continues an oscillator at the predicted frequency (a phase vocoder); keep -> 0 takes
the fresh, frame-local phase (onsets, noise; what Vocos does everywhere).

Harmonic ("harmonic", the default of the configs since v2): the network is told each frame's
f0 (the caller's, or `vocoders.harmonic.estimate_f0` of the log-mel itself) as two input
channels, and gets the STFT of a harmonic source at that f0 (`vocoders.harmonic`): per bin it
predicts how deep the source's comb cuts into the log-mel's envelope (the comb's energy per
mel band normalised away, so the envelope keeps the level) and how much of the source's phase
to take, which is consistent across the bins of a partial and across frames. Unvoiced frames
have neither.

Weights are one safetensors file carrying the contract and architecture as metadata
(`save_weights`, `load_weights`: a file with a non-finite value is refused). `MusicVocoder` is
the network and the vocoder the app uses (`tnca_jax.inverse.Vocoder`: its `__call__` checks
the log-mel against its contract and runs jitted).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
from pathlib import Path
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tnca_jax import dsp, weights
from tnca_jax.contract import MelContract, SpectralContract
from tnca_jax.errors import VocoderError
from tnca_jax.inverse import check_input
from vocoders.harmonic import estimate_f0, harmonic_source, sample_bins

WEIGHTS_PATH = Path(__file__).resolve().parent / "music_vocoder.safetensors"
WEIGHTS_FORMAT = "tnca_jax.music_vocoder"
WEIGHTS_VERSION = "1"
PHASOR_EPS = 1e-12  # Under |z|^2 when the recurrent phase is normalised to a unit phasor.
COMB_FLOOR = -60.0 * math.log(10) / 20  # the harmonic comb's valleys, 60 dB below its peak


# A weights file that is unreadable, corrupt or not a music vocoder's (a missing one raises
# MissingFileError): one `error:` line on the command line.
VocoderWeightsError = VocoderError


@dataclasses.dataclass(frozen=True)
class Architecture:
    """Sizes of the network (stored in the weights file).

    Attributes:
      dim: channels of the ConvNeXt stack.
      intermediate: hidden width of each block's pointwise MLP.
      layers: number of ConvNeXt blocks.
      kernel_size: depthwise convolution size over frames (odd).
      phase: "recurrent" (phase carried across frames, see the module docstring) or "direct"
        (one free phase per bin and frame, as Vocos).
      envelope_skip: the head predicts the log-magnitude as a correction to the log-mel's own
        envelope spread over the STFT bins (`mel_envelope`), so level and spectral envelope
        follow the input by construction and the network learns the fine structure.
      harmonic: the network is told f0 and shapes a harmonic source (module docstring).
      refine_iterations: after the network, this many iterations of mel-consistent fast
        Griffin-Lim started from its STFT (`tnca_jax.dsp.fast_griffin_lim` with the network's
        phase): the phase is made consistent across overlapping frames and the magnitude
        rescaled so that the audio's log-mel is the input's (0: the network's output as it
        is; training always takes it as it is).
    """

    dim: int = 256
    intermediate: int = 768
    layers: int = 8
    kernel_size: int = 7
    phase: Literal["recurrent", "direct"] = "recurrent"
    envelope_skip: bool = True
    harmonic: bool = False
    refine_iterations: int = 0

    def __post_init__(self) -> None:
        if self.phase not in ("recurrent", "direct"):
            raise ValueError(f"phase must be 'recurrent' or 'direct', got {self.phase!r}")
        if (min(self.dim, self.intermediate, self.layers) <= 0 or self.kernel_size % 2 == 0
                or self.refine_iterations < 0):
            raise ValueError(f"invalid architecture {self}: sizes must be positive, "
                             "kernel_size odd and refine_iterations at least 0")

    @property
    def head_outputs(self) -> int:
        """Values predicted per STFT bin and frame."""
        return (4 if self.phase == "recurrent" else 2) + (2 if self.harmonic else 0)

    @property
    def input_channels(self) -> int:
        """Channels per frame beside the log-mel's bands: log2(f0 / 440) and voicing."""
        return 2 if self.harmonic else 0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Architecture:
        return cls(**data)


class ConvNeXtBlock(nnx.Module):
    """Depthwise conv over frames, LayerNorm, pointwise MLP (GELU), layer scale, residual.
    [batch, frames, dim] -> same."""

    def __init__(self, dim: int, intermediate: int, kernel_size: int, layer_scale: float, *,
                 rngs: nnx.Rngs):
        self.depthwise = nnx.Conv(dim, dim, (kernel_size,), feature_group_count=dim,
                                  padding="SAME", rngs=rngs)
        self.norm = nnx.LayerNorm(dim, epsilon=1e-6, rngs=rngs)
        self.expand = nnx.Linear(dim, intermediate, rngs=rngs)
        self.project = nnx.Linear(intermediate, dim, rngs=rngs)
        self.scale = nnx.Param(jnp.full((dim,), layer_scale, jnp.float32))

    def __call__(self, x: jax.Array) -> jax.Array:
        y = self.project(jax.nn.gelu(self.expand(self.norm(self.depthwise(x)))))
        return x + self.scale[...] * y


class MusicVocoder(nnx.Module):
    """log-mel [batch, n_mels, frames] under `contract` -> audio [batch, frames * hop].

    The contract fixes the input (its log-mel) and the output framing (its n_fft, hop and
    window: one predicted STFT frame per mel frame). Calling it checks the input
    (`tnca_jax.inverse.check_input`) and renders jitted (`render`, one compile per shape);
    `differentiable` is the traceable network output for the TNCA's audio loss.
    """

    name = "music"

    def __init__(self, contract: MelContract, architecture: Architecture = Architecture(),
                 *, rngs: nnx.Rngs):
        if not isinstance(contract, MelContract):
            raise VocoderError(f"contract {contract.name!r}: the music vocoder inverts a log-mel "
                               "(a mel contract)")
        if contract.n_fft % contract.hop_length or contract.win_length != contract.n_fft:
            raise VocoderError(f"contract {contract.name!r}: the music vocoder needs win_length "
                               "== n_fft and n_fft a multiple of hop_length")
        if contract.log != "ln":
            raise VocoderError(f"contract {contract.name!r}: the music vocoder needs a natural-log "
                               "mel (log='ln')")
        if contract.padding != "reflect_center_false":
            raise VocoderError(f"contract {contract.name!r}: the music vocoder needs "
                               "reflect_center_false padding (frames * hop samples)")
        self.contract = contract
        self.architecture = architecture
        arch = architecture
        self.embed = nnx.Conv(contract.n_mels + arch.input_channels, arch.dim,
                              (arch.kernel_size,), padding="SAME", rngs=rngs)
        self.embed_norm = nnx.LayerNorm(arch.dim, epsilon=1e-6, rngs=rngs)
        self.blocks = nnx.List([
            ConvNeXtBlock(arch.dim, arch.intermediate, arch.kernel_size, 1.0 / arch.layers,
                          rngs=rngs) for _ in range(arch.layers)])
        self.final_norm = nnx.LayerNorm(arch.dim, epsilon=1e-6, rngs=rngs)
        self.head = nnx.Linear(arch.dim, arch.head_outputs * self.bins, rngs=rngs)

    @property
    def bins(self) -> int:
        return self.contract.n_fft // 2 + 1

    def pitch(self, log_mel: jax.Array, f0: jax.Array | None = None, *,
              envelope: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        """(f0 [batch, frames] in Hz, voiced [batch, frames]): `f0` as given (0 or less:
        unvoiced), else estimated from the log-mel's `envelope` (`mel_envelope(log_mel)`,
        computed here when not given; `vocoders.harmonic.estimate_f0`)."""
        if f0 is not None:
            f0 = jnp.broadcast_to(jnp.asarray(f0, jnp.float32), log_mel.shape[:-2]
                                  + log_mel.shape[-1:])
            return jnp.maximum(f0, 0.0), f0 > 0
        if envelope is None:
            envelope = mel_envelope(log_mel, self.contract)
        return estimate_f0(jax.lax.stop_gradient(envelope), self.contract)

    def features(self, log_mel: jax.Array, pitch: tuple[jax.Array, jax.Array] | None = None
                 ) -> jax.Array:
        """[batch, n_mels, frames] (and, for a harmonic network, `pitch`) ->
        [batch, frames, dim]; silence (the log floor) maps to 0, as the convolutions' zero
        padding beyond the ends does."""
        x = (jnp.swapaxes(log_mel, -1, -2) - self.contract.log_min) * 0.1
        if self.architecture.harmonic:
            f0, voiced = pitch
            voicing = voiced.astype(x.dtype)
            octave = voicing * jnp.log2(jnp.maximum(f0, 1.0) / 440.0)
            x = jnp.concatenate([x, octave[..., None], voicing[..., None]], axis=-1)
        x = self.embed_norm(self.embed(x))
        for block in self.blocks:
            x = block(x)
        return self.final_norm(x)

    def components(self, log_mel: jax.Array, f0: jax.Array | None = None
                   ) -> tuple[jax.Array, jax.Array]:
        """The predicted STFT as (log-magnitude, unit phasor), each [batch, bins, frames];
        `f0` [batch, frames] (Hz; 0: unvoiced) for a harmonic network, else estimated."""
        arch = self.architecture
        envelope = mel_envelope(log_mel, self.contract)  # (XLA drops it when unused)
        pitch = self.pitch(log_mel, f0, envelope=envelope) if arch.harmonic else None
        out = self.head(self.features(log_mel, pitch))  # [B, T, P * bins]
        out = out.reshape((*out.shape[:-1], arch.head_outputs, self.bins))
        out = jnp.moveaxis(out, -3, -1)  # [B, P, bins, T]
        log_magnitude = out[:, 0]
        if arch.envelope_skip:
            log_magnitude = log_magnitude + envelope
        if arch.harmonic:
            comb, source_phasor = harmonic_comb(*pitch, self.contract)
            depth = jax.nn.softplus(out[:, -2] - 1.0)  # 0.31 at the start
            log_magnitude = log_magnitude + shaped_comb(depth * comb, pitch[0], self.contract)
        log_magnitude = jnp.minimum(log_magnitude, math.log(self.contract.window.sum()))
        if arch.phase == "direct":
            phasor = jnp.exp(1j * out[:, 1])
        else:
            phasor = recurrent_phasor(out[:, 1], out[:, 2], out[:, 3], self.contract)
        if arch.harmonic:
            take = jax.nn.sigmoid(out[:, -1]) * pitch[1][:, None, :]
            phasor = unit_phasor((1.0 - take) * phasor + take * source_phasor)
        return log_magnitude, phasor

    def spectrum(self, log_mel: jax.Array, f0: jax.Array | None = None) -> jax.Array:
        """Complex STFT [batch, bins, frames] under the contract's framing."""
        log_magnitude, phasor = self.components(log_mel, f0)
        return jnp.exp(log_magnitude) * phasor

    def __call__(self, log_mel: jax.Array, *, contract: SpectralContract | None = None,
                 f0: jax.Array | None = None) -> jax.Array:
        """Checked log-mels [batch, n_mels, frames] (under `contract`, if declared) ->
        audio [batch, frames * hop], refined (see `Architecture`), jitted. `f0` [batch,
        frames] in Hz (0: unvoiced; a harmonic network only): the note's pitch where the
        caller knows it; None estimates it from the log-mel."""
        if f0 is not None and not self.architecture.harmonic:
            raise VocoderError("this music vocoder is not harmonic: it takes no f0")
        return _render(self, check_input(log_mel, self.contract, contract), f0)

    def differentiable(self, log_mel: jax.Array, f0: jax.Array | None = None) -> jax.Array:
        """The network's audio of [batch, n_mels, frames] log-mels under this contract,
        traceable and differentiable, without the refinement (for the TNCA's audio loss,
        `tnca_jax.losses.audio_loss`; the weights are constants there, not trained)."""
        spectrum = self.spectrum(log_mel, f0)
        return dsp.istft(spectrum, self.contract, self.contract.num_samples(spectrum.shape[-1]))

    def render(self, log_mel: jax.Array, f0: jax.Array | None = None) -> jax.Array:
        """[batch, n_mels, frames] -> [batch, frames * hop] (refined, see `Architecture`),
        traceable."""
        if not self.architecture.refine_iterations:
            return self.differentiable(log_mel, f0)
        log_magnitude, phasor = self.components(log_mel, f0)
        return dsp.fast_griffin_lim(jnp.exp(log_magnitude), self.contract, None,
                                    iterations=self.architecture.refine_iterations,
                                    mel=self.contract.from_log(log_mel), phasor=phasor)


@functools.lru_cache(maxsize=16)
def _envelope_weights(contract: MelContract) -> tuple[np.ndarray, np.ndarray]:
    """([bins, n_mels] each bin's share of each band, [n_mels] ln of each filter's sum)."""
    basis = contract.mel_basis
    share = basis.T / np.maximum(basis.T.sum(axis=1, keepdims=True), 1e-30)
    for uncovered in np.flatnonzero(basis.sum(axis=0) <= 0):  # DC, Nyquist: nearest band's
        share[uncovered, 0 if uncovered < basis.shape[1] // 2 else basis.shape[0] - 1] = 1.0
    return share.astype(np.float32), np.log(basis.sum(axis=1)).astype(np.float32)


def mel_envelope(log_mel: jax.Array, contract: MelContract) -> jax.Array:
    """The log-mel spread over STFT bins as a log-magnitude: [..., n_mels, frames] ->
    [..., bins, frames]. A band of mel value m whose filter sums to s holds bins of magnitude
    (m / s) ** (1 / power); each bin takes the mean of its bands' values, weighted by its
    filter weights."""
    share, log_filter_sum = _envelope_weights(contract)
    per_band = (log_mel - jnp.asarray(log_filter_sum)[:, None]) / contract.magnitude_power
    return jnp.einsum("km,...mt->...kt", jnp.asarray(share), per_band)


def harmonic_comb(f0: jax.Array, voiced: jax.Array, contract: MelContract
                  ) -> tuple[jax.Array, jax.Array]:
    """The STFT of the harmonic source at `f0` [..., frames] (`vocoders.harmonic`) as
    (log-magnitude relative to each frame's peak, floored at COMB_FLOOR and 0 in unvoiced
    frames; unit phasor), each [..., bins, frames]. No gradient flows into f0."""
    source = dsp.stft(harmonic_source(jax.lax.stop_gradient(f0), voiced, contract), contract)
    magnitude = jnp.abs(source)
    level = jnp.log(jnp.max(magnitude, axis=-2, keepdims=True) + 1e-12)
    comb = jnp.maximum(jnp.log(magnitude + 1e-12) - level, COMB_FLOOR)
    comb = jnp.where(voiced[..., None, :], comb, 0.0)
    return comb, unit_phasor(source)


def shaped_comb(depth_comb: jax.Array, f0: jax.Array, contract: MelContract) -> jax.Array:
    """A log-magnitude comb [..., bins, frames] (already scaled by its depth) less its mean
    energy over one harmonic spacing around each bin (`f0` [..., frames]): adding it to a
    log-magnitude moves each stretch's energy onto its partial and keeps the total, so the
    log-mel's envelope stays the level wherever a mel band spans a harmonic or more."""
    power = jnp.exp(2.0 * depth_comb)
    bins = power.shape[-2]
    total = jnp.concatenate([jnp.zeros_like(power[..., :1, :]), jnp.cumsum(power, axis=-2)],
                            axis=-2)  # [..., bins + 1, frames]: total[k] = sum of bins < k
    half = 0.5 * f0 / (contract.sample_rate / contract.n_fft)
    half = jnp.maximum(half, 0.5)[..., None, :]
    centre = jnp.arange(bins, dtype=jnp.float32)[:, None] + 0.5
    lower = jnp.clip(centre - half, 0.0, float(bins))
    upper = jnp.clip(centre + half, 0.0, float(bins))
    mean = (sample_bins(total, upper) - sample_bins(total, lower)) / (upper - lower)
    return depth_comb - 0.5 * jnp.log(jnp.maximum(mean, 1e-12))


def recurrent_phasor(keep_logit: jax.Array, offset: jax.Array, fresh: jax.Array,
                     contract: SpectralContract) -> jax.Array:
    """Unit phasors [..., bins, frames] of the phase recurrence in the module docstring.

    keep_logit, offset (in bins), fresh (radians): [..., bins, frames]. Frame 0 takes its
    fresh phase (there is nothing to carry).
    """
    ratio = contract.n_fft // contract.hop_length
    bins = np.arange(contract.n_fft // 2 + 1)[:, None]
    # 2 pi hop / n_fft * bin, reduced mod 2 pi exactly before it meets float32.
    nominal = jnp.asarray(2 * np.pi * (bins % ratio) / ratio, jnp.float32)
    keep = jax.nn.sigmoid(keep_logit).at[..., 0].set(0.0)
    carry = keep * jnp.exp(1j * (nominal + 2 * np.pi / ratio * offset))
    fresh_part = (1.0 - keep) * jnp.exp(1j * fresh)

    def combine(left, right):
        (a_left, b_left), (a_right, b_right) = left, right
        return a_left * a_right, a_right * b_left + b_right

    _, z = jax.lax.associative_scan(combine, (carry, fresh_part), axis=-1)
    return unit_phasor(z)


def unit_phasor(z: jax.Array) -> jax.Array:
    """z / |z|, smoothly 0 where |z| is 0 (PHASOR_EPS), differentiable everywhere."""
    return z * jax.lax.rsqrt(jnp.abs(z) ** 2 + PHASOR_EPS)


# ------------------------------------------------------------------------ weights file
def save_weights(model: MusicVocoder, path: str | os.PathLike) -> None:
    """Write the model's parameters (float32) with its contract and architecture as metadata,
    as one safetensors file (`tnca_jax.weights`; refused if any is not finite)."""
    weights.save(nnx.state(model, nnx.Param), path, {
        "format": WEIGHTS_FORMAT, "version": WEIGHTS_VERSION,
        "contract": json.dumps(model.contract.to_dict()),
        "architecture": json.dumps(model.architecture.to_dict())}, what="the music vocoder")


def load_weights(path: str | os.PathLike = WEIGHTS_PATH) -> MusicVocoder:
    """A MusicVocoder from a weights file written by `save_weights`.

    Raises MissingFileError when it is not there, VocoderError (one line, naming the file) when
    it is unreadable, not a music vocoder's, holds other parameters than its architecture
    needs, or a value that is not finite.
    """
    tensors, metadata = weights.read(
        path, WEIGHTS_FORMAT, what="music vocoder", missing_hint="set --config.vocoder_path to a "
        "music_vocoder.safetensors, or train one: python main.py --config=configs/vocoder.py "
        "--workdir=runs/vocoder")
    try:
        contract = SpectralContract.from_dict(json.loads(metadata["contract"]))
        architecture = Architecture.from_dict(json.loads(metadata["architecture"]))
        model = MusicVocoder(contract, architecture, rngs=nnx.Rngs(0))
    except (KeyError, TypeError, ValueError) as err:
        raise VocoderWeightsError(f"{path}: unreadable contract or architecture metadata "
                                  f"({' '.join(str(err).split())})") from None
    state = nnx.state(model, nnx.Param)
    weights.fill(state, tensors, path, "architecture")
    nnx.update(model, state)
    return model


# ------------------------------------------------------------------------ inference
@nnx.jit
def _render(model: MusicVocoder, log_mel: jax.Array, f0: jax.Array | None) -> jax.Array:
    return model.render(log_mel, f0)


def load(path: str | os.PathLike | None = None, *, refine_iterations: int | None = None
         ) -> MusicVocoder:
    """The music vocoder for `tnca_jax.inverse.load_vocoder("music", path)`: the weights at
    `path` (default: the shipped file), which bring their own contract.

    `refine_iterations` replaces the rendering's refinement count stored with the weights
    (`Architecture.refine_iterations`; shipped: 64): more trades speed for quality (256 beat
    Griffin-Lim on more held-out notes and render about 3 times slower; docs/results.md), 0
    renders the network's output as it is. VocoderError if it is not a whole number >= 0."""
    if refine_iterations is not None and (isinstance(refine_iterations, bool)
                                          or not isinstance(refine_iterations, int)
                                          or refine_iterations < 0):
        raise VocoderError(f"refine_iterations={refine_iterations!r}: give a whole number of "
                           "at least 0 (the shipped weights use 64)")
    model = load_weights(WEIGHTS_PATH if path is None else path)
    if refine_iterations is not None:
        model.architecture = dataclasses.replace(model.architecture,
                                                 refine_iterations=refine_iterations)
    return model
