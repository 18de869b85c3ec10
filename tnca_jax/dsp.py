"""Spectral DSP in JAX under a contract: framing, STFT and its inverse, mel, and the weight-free
way back from a mel to audio (non-negative least squares, then fast Griffin-Lim).

Everything here is pure, jit- and grad-safe on any backend, and batched over leading axes.
Shapes: audio `[..., samples]`; spectrograms `[..., bins, frames]`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from tnca_jax.contract import MelContract, SpectralContract

MAGNITUDE_EPS = 1e-9  # Inside the square root of re^2 + im^2, as BigVGAN does.


def _blocks_per_frame(contract: SpectralContract) -> int | None:
    """n_fft / hop when it is whole: a frame is then that many consecutive hop-long blocks,
    and framing and overlap-add are slices and shifted sums instead of a gather and a
    scatter-add (faster on CPU, deterministic on every backend)."""
    return contract.n_fft // contract.hop_length if contract.n_fft % contract.hop_length == 0 \
        else None


def _frame_index(contract: SpectralContract, n_frames: int) -> np.ndarray:
    """[n_frames, n_fft]: the padded signal's sample index of each frame's each sample."""
    return (np.arange(n_frames)[:, None] * contract.hop_length
            + np.arange(contract.n_fft)[None, :])


def frame(audio: jax.Array, contract: SpectralContract) -> jax.Array:
    """Padded, overlapping frames of a waveform: [..., samples] -> [..., frames, n_fft]."""
    pad = contract.pad
    if audio.shape[-1] <= pad:
        raise ValueError(f"audio of {audio.shape[-1]} samples is shorter than one analysis "
                         f"frame of contract {contract.name!r} (needs > {pad})")
    widths = [(0, 0)] * (audio.ndim - 1) + [(pad, pad)]
    padded = jnp.pad(audio, widths, mode="reflect")
    n_frames = contract.num_frames(audio.shape[-1])
    hop, blocks_per_frame = contract.hop_length, _blocks_per_frame(contract)
    if blocks_per_frame:
        count = n_frames + blocks_per_frame - 1
        blocks = padded[..., :count * hop].reshape((*padded.shape[:-1], count, hop))
        return jnp.concatenate([blocks[..., k:k + n_frames, :] for k in range(blocks_per_frame)],
                               axis=-1)
    return padded[..., _frame_index(contract, n_frames)]


def frame_spectra(audio: jax.Array, contract: SpectralContract) -> jax.Array:
    """The STFT frame by frame: [..., samples] -> [..., frames, n_fft//2+1] (`stft`'s
    transpose, the layout the FFT works in)."""
    frames = frame(audio, contract)
    return jnp.fft.rfft(frames * jnp.asarray(contract.window, frames.dtype), axis=-1)


def stft(audio: jax.Array, contract: SpectralContract) -> jax.Array:
    """Complex STFT under the contract's framing: [..., samples] -> [..., n_fft//2+1, frames]."""
    return jnp.swapaxes(frame_spectra(audio, contract), -1, -2)


@functools.lru_cache(maxsize=64)
def _overlap_norm(contract: SpectralContract, n_frames: int) -> np.ndarray:
    """1 / (the squared windows overlap-added), clipped at 1e8: [(n_frames - 1) * hop + n_fft]."""
    index = _frame_index(contract, n_frames).reshape(-1)
    norm = np.zeros((n_frames - 1) * contract.hop_length + contract.n_fft)
    np.add.at(norm, index, np.tile(contract.window**2, n_frames))
    return 1.0 / np.maximum(norm, 1e-8)


def frame_spectra_to_audio(spectra: jax.Array, contract: SpectralContract, num_samples: int
                           ) -> jax.Array:
    """`istft` of frame-by-frame spectra: [..., frames, n_fft//2+1] -> [..., num_samples]."""
    frames = jnp.fft.irfft(spectra, n=contract.n_fft, axis=-1)
    frames = frames * jnp.asarray(contract.window, frames.dtype)
    n_frames, lead = frames.shape[-2], frames.shape[:-2]
    hop, blocks_per_frame = contract.hop_length, _blocks_per_frame(contract)
    if blocks_per_frame:
        parts = frames.reshape((*lead, n_frames, blocks_per_frame, hop))
        signal = sum(jnp.pad(parts[..., k, :], [(0, 0)] * len(lead)
                             + [(k, blocks_per_frame - 1 - k), (0, 0)])
                     for k in range(blocks_per_frame)).reshape((*lead, -1))
    else:
        total = (n_frames - 1) * hop + contract.n_fft
        signal = jnp.zeros((*lead, total), frames.dtype).at[
            ..., _frame_index(contract, n_frames).reshape(-1)].add(
            frames.reshape((*lead, -1)))
    start = contract.pad
    norm = _overlap_norm(contract, n_frames)[start:start + num_samples]
    signal = signal[..., start:start + num_samples] * jnp.asarray(norm, frames.dtype)
    missing = num_samples - signal.shape[-1]
    if missing > 0:
        signal = jnp.pad(signal, [(0, 0)] * len(lead) + [(0, missing)])
    return signal


def istft(spec: jax.Array, contract: SpectralContract, num_samples: int) -> jax.Array:
    """Inverse of `stft` by windowed overlap-add: [..., bins, frames] -> [..., num_samples].

    Exact for an STFT of a signal (up to float error); for a modified spectrogram it returns
    the least-squares signal whose STFT is closest (Griffin & Lim 1984). Where n_fft is not a
    multiple of hop, the overlap-add is a scatter-add: on GPU its summation order, hence the
    last bits, vary from run to run unless XLA_FLAGS=--xla_gpu_deterministic_ops=true.
    """
    return frame_spectra_to_audio(jnp.swapaxes(spec, -1, -2), contract, num_samples)


def magnitude(spec: jax.Array) -> jax.Array:
    """|spec| as every feature here computes it: sqrt(re^2 + im^2 + 1e-9) (BigVGAN's recipe;
    the epsilon keeps the gradient finite at zero)."""
    return jnp.sqrt(spec.real**2 + spec.imag**2 + MAGNITUDE_EPS)


def stft_magnitude(audio: jax.Array, contract: SpectralContract) -> jax.Array:
    """[..., samples] -> [..., n_fft//2+1, frames] STFT magnitude under the contract."""
    return magnitude(stft(audio, contract))


def log_spectrogram(audio: jax.Array, contract: SpectralContract) -> jax.Array:
    """The contract's log STFT magnitude (or power): [..., samples] -> [..., bins, frames]."""
    audio = _float(audio)
    return contract.to_log(stft_magnitude(audio, contract) ** contract.magnitude_power)


def mel_from_magnitude(mag: jax.Array, contract: MelContract) -> jax.Array:
    """Linear STFT magnitude [..., bins, frames] -> log-mel [..., n_mels, frames]."""
    basis = jnp.asarray(contract.mel_basis, mag.dtype)
    mel = jnp.einsum("mf,...ft->...mt", basis, mag ** contract.magnitude_power)
    return contract.to_log(mel)


def log_mel(audio: jax.Array, contract: MelContract) -> jax.Array:
    """The contract's log-mel of a waveform: [..., samples] -> [..., n_mels, frames].

    Computed in float32, or in float64 for float64 input when jax_enable_x64 is on.
    """
    return mel_from_magnitude(stft_magnitude(_float(audio), contract), contract)


def _float(audio: jax.Array) -> jax.Array:
    audio = jnp.asarray(audio)
    return audio if jnp.issubdtype(audio.dtype, jnp.floating) else audio.astype(jnp.float32)


# ------------------------------------------------------------------------ mel -> audio
def mel_to_magnitude(mel: jax.Array, contract: MelContract, iterations: int = 50
                     ) -> jax.Array:
    """Linear mel [..., n_mels, frames] (contract's power) -> STFT magnitude [..., bins, frames].

    Non-negative least squares min_{S>=0} ||basis @ S - mel||^2 by multiplicative updates
    (Lee & Seung) from the clipped pseudo-inverse; S is a magnitude or power spectrogram as
    the contract's mel is, and the result is returned as magnitude. Gradients (for audio
    losses) flow through the last update only, taken at the converged S: exact for the linear
    dependence of that update on `mel`, and free of the 1/x^2 blow-ups of unrolling them all.
    """
    basis = jnp.asarray(contract.mel_basis, mel.dtype)
    rhs = jnp.einsum("mf,...mt->...ft", basis, mel)
    inverse = jnp.asarray(np.linalg.pinv(contract.mel_basis), mel.dtype)
    start = jnp.einsum("fm,...mt->...ft", inverse, mel)
    start = jnp.maximum(start, contract.log_floor)

    def body(_, spec):
        # basis.T @ (basis @ spec): through the n_mels bands, n_fft/2/n_mels times fewer
        # operations than through the bins x bins Gram matrix.
        back = jnp.einsum("mf,...mt->...ft", basis, jnp.einsum("mf,...ft->...mt", basis, spec))
        return spec * rhs / (back + 1e-20)

    spec = jax.lax.stop_gradient(jax.lax.fori_loop(0, iterations - 1, body, start))
    spec = jnp.maximum(body(iterations - 1, spec), contract.log_floor)
    return spec ** (1.0 / contract.magnitude_power)


def fast_griffin_lim(mag: jax.Array, contract: SpectralContract, key: jax.Array | None, *,
                     iterations: int = 64, momentum: float = 0.99,
                     mel: jax.Array | None = None, phasor: jax.Array | None = None
                     ) -> jax.Array:
    """Fast Griffin-Lim (Perraudin et al. 2013): magnitude [..., bins, frames] -> audio.

    Returns [..., frames * hop] samples; the starting phase is random (from `key`), or the
    unit phasors `phasor` [..., bins, frames] (e.g. a neural vocoder's). With `mel` (linear,
    the contract's power; `contract` then a `MelContract`), the magnitude is re-estimated at
    every iteration too: the consistent STFT's magnitude, rescaled per bin so that its mel
    equals `mel`. Harmonic peaks that the phase recovery sharpens are then kept instead of
    being smeared back over their mel band.
    """
    num_samples = contract.num_samples(mag.shape[-1])
    if phasor is None:
        phasor = jnp.exp(1j * jax.random.uniform(key, mag.shape, minval=0.0,
                                                 maxval=2 * jnp.pi))
    alpha = momentum / (1 + momentum)
    # The loop runs frame by frame ([..., frames, bins], the FFT's layout), in real arithmetic.
    if mel is not None:
        basis = jnp.asarray(contract.mel_basis, mel.dtype)  # [n_mels, bins]
        # Each bin's share of each band, so a band's correction is spread over its bins.
        share = basis / (basis.sum(axis=0, keepdims=True) + 1e-12)
        frame_mel = jnp.swapaxes(mel, -1, -2)
        power = contract.magnitude_power

    def body(_, carry):
        mag, angles, previous = carry
        rebuilt = frame_spectra(frame_spectra_to_audio(mag * angles, contract, num_samples),
                                contract)
        if mel is not None:
            current = magnitude(rebuilt)
            ratio = frame_mel / (jnp.einsum("...tf,mf->...tm", current**power, basis) + 1e-20)
            mag = current * jnp.einsum("...tm,mf->...tf", ratio, share) ** (1.0 / power)
        angles = rebuilt - alpha * previous
        return mag, angles * jax.lax.rsqrt(angles.real**2 + angles.imag**2 + 1e-32), rebuilt

    mag = jnp.swapaxes(mag, -1, -2)
    start = (mag, jnp.swapaxes(phasor, -1, -2).astype(jnp.complex64),
             jnp.zeros(mag.shape, jnp.complex64))
    mag, angles, _ = jax.lax.fori_loop(0, iterations, body, start)
    return frame_spectra_to_audio(mag * angles, contract, num_samples)


def griffin_lim(mel: jax.Array, contract: MelContract, key: jax.Array, *,
                iterations: int = 64, momentum: float = 0.99) -> jax.Array:
    """Mel-consistent fast Griffin-Lim: linear mel [..., n_mels, frames] -> audio."""
    return fast_griffin_lim(mel_to_magnitude(mel, contract), contract, key,
                            iterations=iterations, momentum=momentum, mel=mel)
