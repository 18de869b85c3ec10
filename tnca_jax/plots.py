"""Figures written to the workdir: target vs generated, and the growth strip."""

from __future__ import annotations

import os

import numpy as np

from tnca_jax.contract import SpectralContract


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _db(log_mel: np.ndarray, contract: SpectralContract) -> np.ndarray:
    return np.asarray(contract.to_db(np.asarray(log_mel)))


def comparison(path: str | os.PathLike, target_audio: np.ndarray, generated_audio: np.ndarray,
               target_log_mel: np.ndarray, generated_log_mel: np.ndarray,
               contract: SpectralContract, title: str = "") -> None:
    """Waveforms (top) and log-mel spectrograms (bottom, one dB colour scale) side by side."""
    plt = _pyplot()
    target_db, generated_db = _db(target_log_mel, contract), _db(generated_log_mel, contract)
    vmax = float(target_db.max())
    vmin = vmax - 80.0
    fig, axes = plt.subplots(2, 2, figsize=(12, 6), constrained_layout=True)
    rate = contract.sample_rate
    for column, (name, wave, spec) in enumerate(
            (("target", target_audio, target_db), ("generated", generated_audio, generated_db))):
        t = np.arange(len(wave)) / rate
        axes[0, column].plot(t, wave, linewidth=0.4)
        axes[0, column].set(title=f"{name} waveform", xlabel="s", ylim=(-1, 1),
                            xlim=(0, max(len(target_audio), len(generated_audio)) / rate))
        image = axes[1, column].imshow(
            spec, origin="lower", aspect="auto", vmin=vmin, vmax=vmax, cmap="magma",
            extent=(0, spec.shape[1] * contract.hop_length / rate, 0, spec.shape[0]))
        axes[1, column].set(title=f"{name} log-mel ({contract.name})", xlabel="s",
                            ylabel="mel band")
    fig.colorbar(image, ax=axes[1, :], label="dB")
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def growth(path: str | os.PathLike, stages: np.ndarray, stage_steps: list[int],
           contract: SpectralContract, vmax_db: float) -> None:
    """The grown log-mel [stages, n_mels, frames] at each growth step, on one dB scale."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(stages), figsize=(2.2 * len(stages), 2.8),
                             constrained_layout=True, squeeze=False)
    for axis, stage, step in zip(axes[0], stages, stage_steps, strict=True):
        axis.imshow(_db(stage, contract), origin="lower", aspect="auto", cmap="magma",
                    vmin=vmax_db - 80.0, vmax=vmax_db)
        axis.set(title=f"step {step}", xticks=[], yticks=[])
    fig.savefig(path, dpi=100)
    plt.close(fig)
