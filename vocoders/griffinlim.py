"""Weight-free inversion of a log-mel in JAX: mel to linear magnitude, then a fast Griffin-Lim
whose magnitude stays consistent with the mel it was given."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from tnca_jax.contract import SpectralContract, istft, stft


def mel_to_magnitude(mel: jax.Array, contract: SpectralContract, iterations: int = 50
                     ) -> jax.Array:
    """Linear mel [..., n_mels, frames] (contract's power) -> STFT magnitude [..., bins, frames].

    Non-negative least squares min_{S>=0} ||basis @ S - mel||^2 by multiplicative updates
    (Lee & Seung) from the clipped pseudo-inverse; S is a magnitude or power spectrogram as
    the contract's mel is, and the result is returned as magnitude. Gradients (for audio
    losses) flow through the last update only, taken at the converged S: exact for the linear
    dependence of that update on `mel`, and free of the 1/x^2 blow-ups of unrolling them all.
    """
    basis = jnp.asarray(contract.mel_basis, mel.dtype)
    gram = basis.T @ basis
    rhs = jnp.einsum("mf,...mt->...ft", basis, mel)
    inverse = jnp.asarray(np.linalg.pinv(contract.mel_basis), mel.dtype)
    start = jnp.einsum("fm,...mt->...ft", inverse, mel)
    start = jnp.maximum(start, contract.log_floor)

    def body(_, spec):
        return spec * rhs / (jnp.einsum("fg,...gt->...ft", gram, spec) + 1e-20)

    spec = jax.lax.stop_gradient(jax.lax.fori_loop(0, iterations - 1, body, start))
    spec = jnp.maximum(body(iterations - 1, spec), contract.log_floor)
    return spec ** (1.0 / contract.magnitude_power)


def fast_griffin_lim(mag: jax.Array, contract: SpectralContract, key: jax.Array, *,
                     iterations: int = 64, momentum: float = 0.99,
                     mel: jax.Array | None = None) -> jax.Array:
    """Fast Griffin-Lim (Perraudin et al. 2013): magnitude [..., bins, frames] -> audio.

    Returns [..., frames * hop] samples; the starting phase is random (from `key`). With
    `mel` (linear, the contract's power), the magnitude is re-estimated at every iteration
    too: the consistent STFT's magnitude, rescaled per bin so that its mel equals `mel`.
    Harmonic peaks that the phase recovery sharpens are then kept instead of being smeared
    back over their mel band.
    """
    num_samples = contract.num_samples(mag.shape[-1])
    phase = jax.random.uniform(key, mag.shape, minval=0.0, maxval=2 * jnp.pi)
    alpha = momentum / (1 + momentum)
    if mel is not None:
        power = contract.magnitude_power
        basis = jnp.asarray(contract.mel_basis, mel.dtype)
        # Each bin's share of each band, so a band's correction is spread over its bins.
        share = (basis / (basis.sum(axis=0, keepdims=True) + 1e-12)).T

    def body(_, carry):
        mag, angles, previous = carry
        rebuilt = stft(istft(mag * angles, contract, num_samples), contract)
        if mel is not None:
            current = jnp.abs(rebuilt)
            ratio = mel / (jnp.einsum("mf,...ft->...mt", basis, current**power) + 1e-20)
            mag = current * jnp.einsum("fm,...mt->...ft", share, ratio) ** (1.0 / power)
        angles = rebuilt - alpha * previous
        return mag, angles / (jnp.abs(angles) + 1e-16), rebuilt

    start = (mag, jnp.exp(1j * phase), jnp.zeros(mag.shape, jnp.complex64))
    mag, angles, _ = jax.lax.fori_loop(0, iterations, body, start)
    return istft(mag * angles, contract, num_samples)


def griffin_lim(mel: jax.Array, contract: SpectralContract, key: jax.Array, *,
                iterations: int = 64, momentum: float = 0.99) -> jax.Array:
    """Mel-consistent fast Griffin-Lim: linear mel [..., n_mels, frames] -> audio."""
    return fast_griffin_lim(mel_to_magnitude(mel, contract), contract, key,
                            iterations=iterations, momentum=momentum, mel=mel)


class GriffinLim:
    """Log-mel to waveform with no learned weights: [batch, n_mels, frames] -> [batch, samples]."""

    name = "griffinlim"

    def __init__(self, contract: SpectralContract, *, iterations: int = 64,
                 momentum: float = 0.99, seed: int = 0):
        self.contract = contract
        self.iterations = iterations
        self.momentum = momentum
        self.seed = seed

    @functools.partial(jax.jit, static_argnums=0)
    def _invert(self, log_mel: jax.Array, key: jax.Array) -> jax.Array:
        return griffin_lim(self.contract.from_log(log_mel), self.contract, key,
                           iterations=self.iterations, momentum=self.momentum)

    def __call__(self, log_mel: jax.Array, *, contract: SpectralContract | None = None,
                 seed: int | None = None) -> jax.Array:
        from vocoders.base import check_input

        log_mel = check_input(log_mel, self.contract, contract)
        key = jax.random.key(self.seed if seed is None else seed)
        return self._invert(log_mel, key)
