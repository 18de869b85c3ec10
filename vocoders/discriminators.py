"""Discriminators for the music vocoder's adversarial training, and their losses.

As HiFi-GAN (Kong et al. 2020) and Vocos (Siuzdak 2023) train: a multi-period discriminator
(the waveform folded into [samples / p, p] for periods 2, 3, 5, 7, 11, 2-D convolutions
striding along time only, so each sees one phase of a period) and a multi-resolution one (2-D
convolutions over log-magnitude spectrograms at three STFT sizes), least-squares GAN losses
and feature matching (L1 between the discriminators' hidden activations on the recording and
on the vocoder's audio, which is what makes their gradient informative early on).

Sizes are a fraction of HiFi-GAN's and Vocos's (period channels 16..128 instead of 32..1024,
resolution channels 16 instead of 32, the first resolution layer already strided) and they see
`CRITIC_SAMPLES` of each segment (HiFi-GAN's 8192), so that a step runs on a CPU.
Shapes: audio `[batch, samples]`; each discriminator returns (scores, features): scores
`[batch, ...]`, features a list of activations.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from tnca_jax.dsp import stft
from tnca_jax.losses import analysis_contract

PERIODS = (2, 3, 5, 7, 11)
RESOLUTIONS = ((512, 128), (1024, 256), (2048, 512))  # (n_fft, hop)
SLOPE = 0.1  # leaky ReLU
CRITIC_SAMPLES = 8192  # the stretch of each segment the discriminators judge

Outputs = list[tuple[jax.Array, list[jax.Array]]]


class PeriodDiscriminator(nnx.Module):
    """[batch, samples] -> scores [batch, frames, period] and features, over the waveform
    folded by `period` (HiFi-GAN's MPD, narrower)."""

    def __init__(self, period: int, channels: tuple[int, ...] = (16, 32, 64, 128), *,
                 rngs: nnx.Rngs):
        self.period = period
        widths = (1, *channels)
        self.convs = nnx.List([
            nnx.Conv(widths[i], widths[i + 1], (5, 1), strides=(3, 1), padding=((2, 2), (0, 0)),
                     rngs=rngs) for i in range(len(channels))])
        self.last = nnx.Conv(channels[-1], channels[-1], (5, 1), padding=((2, 2), (0, 0)),
                             rngs=rngs)
        self.score = nnx.Conv(channels[-1], 1, (3, 1), padding=((1, 1), (0, 0)), rngs=rngs)

    def __call__(self, audio: jax.Array) -> tuple[jax.Array, list[jax.Array]]:
        pad = -audio.shape[-1] % self.period
        x = jnp.pad(audio, ((0, 0), (0, pad)), mode="reflect")
        x = x.reshape((x.shape[0], -1, self.period, 1))  # NHWC: [B, T / p, p, 1]
        features = []
        for conv in (*self.convs, self.last):
            x = jax.nn.leaky_relu(conv(x), SLOPE)
            features.append(x)
        return self.score(x)[..., 0], features


class ResolutionDiscriminator(nnx.Module):
    """[batch, samples] -> scores [batch, frames, bins'] and features, over the log-magnitude
    STFT at (n_fft, hop) (`tnca_jax.losses.analysis_contract`'s framing; Vocos's / UnivNet's
    MRD, narrower)."""

    def __init__(self, n_fft: int, hop: int, sample_rate: int, channels: int = 16, *,
                 rngs: nnx.Rngs):
        self.analysis = analysis_contract(n_fft, hop, n_fft, sample_rate)
        self.convs = nnx.List([
            nnx.Conv(1, channels, (3, 9), strides=(1, 2), padding="SAME", rngs=rngs),
            nnx.Conv(channels, channels, (3, 9), strides=(1, 2), padding="SAME", rngs=rngs),
            nnx.Conv(channels, channels, (3, 9), strides=(1, 2), padding="SAME", rngs=rngs),
            nnx.Conv(channels, channels, (3, 9), strides=(1, 2), padding="SAME", rngs=rngs),
            nnx.Conv(channels, channels, (3, 3), padding="SAME", rngs=rngs)])
        self.score = nnx.Conv(channels, 1, (3, 3), padding="SAME", rngs=rngs)

    def __call__(self, audio: jax.Array) -> tuple[jax.Array, list[jax.Array]]:
        spectrum = jnp.swapaxes(stft(audio, self.analysis), -1, -2)  # [B, frames, bins]
        x = jnp.log(jnp.abs(spectrum) + 1e-5)[..., None]
        features = []
        for conv in self.convs:
            x = jax.nn.leaky_relu(conv(x), SLOPE)
            features.append(x)
        return self.score(x)[..., 0], features


class Discriminators(nnx.Module):
    """Every period and resolution discriminator: audio [batch, samples] at `sample_rate` ->
    one (scores, features) per discriminator."""

    def __init__(self, sample_rate: int, *, rngs: nnx.Rngs):
        self.periods = nnx.List([PeriodDiscriminator(p, rngs=rngs) for p in PERIODS])
        self.resolutions = nnx.List([ResolutionDiscriminator(n, h, sample_rate, rngs=rngs)
                                     for n, h in RESOLUTIONS])

    def __call__(self, audio: jax.Array) -> Outputs:
        return [d(audio) for d in (*self.periods, *self.resolutions)]


def discriminator_loss(real: Outputs, fake: Outputs) -> jax.Array:
    """Least-squares GAN: mean over discriminators of E[(1 - D(real))^2] + E[D(fake)^2]."""
    return sum(jnp.mean((1.0 - r) ** 2) + jnp.mean(f**2)
               for (r, _), (f, _) in zip(real, fake, strict=True)) / len(real)


def generator_loss(fake: Outputs) -> jax.Array:
    """Least-squares GAN for the vocoder: mean over discriminators of E[(1 - D(fake))^2]."""
    return sum(jnp.mean((1.0 - f) ** 2) for f, _ in fake) / len(fake)


def feature_matching_loss(real: Outputs, fake: Outputs) -> jax.Array:
    """Mean over discriminators and layers of L1 between activations on the recording (held
    constant) and on the vocoder's audio."""
    distances = [jnp.mean(jnp.abs(jax.lax.stop_gradient(r) - f))
                 for (_, real_features), (_, fake_features) in zip(real, fake, strict=True)
                 for r, f in zip(real_features, fake_features, strict=True)]
    return sum(distances) / len(distances)
