"""Figures written to the workdir: target vs generated, the growth strip and animation, the
training curve, and a played phrase's piano roll. Each takes a path or a binary file object
(for pages that embed them)."""

from __future__ import annotations

import os
from typing import BinaryIO

import numpy as np

from tnca_jax import metrics
from tnca_jax.conditioning import midi_to_hz, row_frequencies_hz
from tnca_jax.contract import MelContract, SpectralContract
from tnca_jax.dsp import frame, log_mel, stft_magnitude


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _db(log_mel: np.ndarray, contract: SpectralContract) -> np.ndarray:
    return np.asarray(contract.to_db(np.asarray(log_mel)))


def comparison(path: str | os.PathLike | BinaryIO, target_audio: np.ndarray,
               generated_audio: np.ndarray, contract: MelContract, title: str = "") -> float:
    """Target and generated note side by side, and their difference.

    Top: both waveforms and their RMS envelopes (dB, one frame per hop). Bottom: the contract's
    log-mel in dB of both waveforms on one colour scale (80 dB below the target's peak, the
    floor that `metrics.mel_l1_db` applies) and generated minus target. Returns the mean
    |difference| drawn, which is the generated audio's `mel_l1_db`.
    """
    plt = _pyplot()
    target_db, generated_db = metrics.mel_db(target_audio, generated_audio, contract)
    difference = generated_db - target_db
    vmax = float(target_db.max())
    rate, hop = contract.sample_rate, contract.hop_length
    seconds = target_db.shape[1] * hop / rate
    fig, axes = plt.subplots(2, 3, figsize=(16, 6), constrained_layout=True)
    for column, (name, wave, spec) in enumerate(
            (("target", target_audio, target_db), ("generated", generated_audio, generated_db))):
        axes[0, column].plot(np.arange(len(wave)) / rate, wave, linewidth=0.4)
        axes[0, column].set(title=f"{name} waveform", xlabel="s", ylim=(-1, 1), xlim=(0, seconds))
        frames = np.asarray(frame(np.asarray(wave, np.float32), contract))
        envelope = 10 * np.log10(np.mean(frames**2, axis=-1) + 1e-12)
        axes[0, 2].plot((np.arange(len(envelope)) + 0.5) * hop / rate, envelope, label=name)
        image = axes[1, column].imshow(
            spec, origin="lower", aspect="auto", vmin=vmax - metrics.TOP_DB, vmax=vmax,
            cmap="magma", extent=(0, seconds, 0, spec.shape[0]))
        axes[1, column].set(title=f"{name} log-mel ({contract.name})", xlabel="s",
                            ylabel="mel band")
    axes[0, 2].set(title="RMS envelope", xlabel="s", ylabel="dBFS", xlim=(0, seconds))
    axes[0, 2].legend()
    fig.colorbar(image, ax=axes[1, :2], label="dB")
    mean_abs = float(np.mean(np.abs(difference)))
    limit = max(float(np.abs(difference).max()), 1e-6)
    image = axes[1, 2].imshow(difference, origin="lower", aspect="auto", cmap="RdBu_r",
                              vmin=-limit, vmax=limit, extent=(0, seconds, 0, spec.shape[0]))
    axes[1, 2].set(title=f"generated - target (mean |diff| {mean_abs:.2f} dB)", xlabel="s",
                   ylabel="mel band")
    fig.colorbar(image, ax=axes[1, 2], label="dB")
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)
    return mean_abs


def growth(path: str | os.PathLike | BinaryIO, stages: np.ndarray, stage_steps: list[int],
           contract: SpectralContract, vmax_db: float, bin_label: str = "mel band") -> None:
    """The grown spectrogram [stages, bins, frames] at each growth step, on one dB scale (80 dB
    down from `vmax_db`), with time in seconds, the rows labelled `bin_label`, and a colour bar."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(stages), figsize=(2.2 * len(stages) + 1.2, 3.0),
                             constrained_layout=True, squeeze=False, sharey=True)
    seconds = stages.shape[-1] * contract.hop_length / contract.sample_rate
    for axis, stage, step in zip(axes[0], stages, stage_steps, strict=True):
        image = axis.imshow(_db(stage, contract), origin="lower", aspect="auto", cmap="magma",
                            vmin=vmax_db - metrics.TOP_DB, vmax=vmax_db,
                            extent=(0, seconds, 0, stage.shape[0]))
        axis.set(title=f"step {step}", xlabel="s")
    axes[0, 0].set(ylabel=bin_label)
    fig.colorbar(image, ax=axes[0, -1], label="dB")
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)


def growth_animation(path: str | os.PathLike | BinaryIO, stages: np.ndarray,
                     stage_steps: list[int], contract: SpectralContract, vmax_db: float,
                     frame_seconds: float, bin_label: str = "mel band") -> None:
    """An animated GIF of the grown log-mel [stages, n_mels, frames], one frame per stage shown
    for `frame_seconds` (the last held twice as long), on one dB scale."""
    from PIL import Image

    plt = _pyplot()
    images = []
    for stage, step in zip(stages, stage_steps, strict=True):
        fig, axis = plt.subplots(figsize=(6, 3.2), constrained_layout=True)
        axis.imshow(_db(stage, contract), origin="lower", aspect="auto", cmap="magma",
                    vmin=vmax_db - metrics.TOP_DB, vmax=vmax_db,
                    extent=(0, stage.shape[1] * contract.hop_length / contract.sample_rate, 0,
                            stage.shape[0]))
        axis.set(title=f"growth step {step} of {stage_steps[-1]}", xlabel="s",
                 ylabel=bin_label)
        fig.canvas.draw()
        images.append(Image.fromarray(np.asarray(fig.canvas.buffer_rgba())[..., :3]))
        plt.close(fig)
    durations = [round(frame_seconds * 1000)] * len(images)
    durations[-1] *= 2
    images[0].save(path, format="GIF", save_all=True, append_images=images[1:],
                   duration=durations, loop=0)


def training_curve(path: str | os.PathLike | BinaryIO, records: list[dict]) -> None:
    """Loss, grid mel L1 (dB) and living fraction against the iteration, from the records of
    train_metrics.jsonl."""
    plt = _pyplot()
    steps = [record["iteration"] for record in records]
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.2), constrained_layout=True)
    for axis, key, label, log in ((axes[0], "loss", "training loss", True),
                                  (axes[1], "grid_l1_db", "grid L1 (dB)", False),
                                  (axes[2], "living_fraction", "living fraction", False)):
        axis.plot(steps, [record[key] for record in records], marker=".")
        axis.set(title=label, xlabel="iteration", yscale="log" if log else "linear")
        axis.grid(alpha=0.3)
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)


def log_mel_panels(path: str | os.PathLike, target_audio: np.ndarray,
                   rows: dict[str, np.ndarray], contract: MelContract) -> None:
    """The recording's log-mel and that of each named audio in `rows`, side by side on one
    dB scale (80 dB below the recording's peak), each titled with its mel L1 and MR-STFT."""
    plt = _pyplot()
    panels = {"recording": target_audio, **rows}
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.4),
                             constrained_layout=True, squeeze=False)
    vmax = None
    for axis, (name, audio) in zip(axes[0], panels.items(), strict=True):
        target_db, spec = metrics.mel_db(target_audio, audio, contract)
        vmax = float(target_db.max()) if vmax is None else vmax
        seconds = spec.shape[1] * contract.hop_length / contract.sample_rate
        image = axis.imshow(spec, origin="lower", aspect="auto", vmin=vmax - metrics.TOP_DB,
                            vmax=vmax, cmap="magma", extent=(0, seconds, 0, spec.shape[0]))
        subtitle = ("" if audio is target_audio else
                    f"\nmel L1 {np.mean(np.abs(spec - target_db)):.2f} dB, MR-STFT "
                    f"{metrics.mrstft(target_audio, audio, contract.sample_rate):.2f}")
        axis.set(title=name + subtitle, xlabel="s")
    axes[0, 0].set(ylabel=f"mel band ({contract.name})")
    fig.colorbar(image, ax=axes[0, -1], label="dB")
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)


def stft_panels(path: str | os.PathLike, target_audio: np.ndarray, rows: dict[str, np.ndarray],
                contract: SpectralContract, *, max_hz: float = 6000.0,
                split_hz: float = 2000.0) -> None:
    """Linear-frequency STFT magnitudes (dB, 0 to `max_hz`) of the recording and each named
    audio in `rows`, side by side, with below each the spectrum of one frame against
    the recording's at its loudest frame: whether the partials above `split_hz` come out as
    lines or as blobs."""
    plt = _pyplot()
    panels = {"recording": target_audio, **rows}
    fig, axes = plt.subplots(2, len(panels), figsize=(3.2 * len(panels), 6.0),
                             constrained_layout=True, squeeze=False,
                             gridspec_kw={"height_ratios": [3, 2]})
    bins_hz = np.fft.rfftfreq(contract.n_fft, 1 / contract.sample_rate)
    shown = bins_hz <= max_hz

    def db(audio: np.ndarray) -> np.ndarray:
        return 20 * np.log10(np.asarray(stft_magnitude(audio, contract))[shown] + 1e-9)

    target_db = db(target_audio)
    vmax = float(target_db.max())
    loudest = int(np.argmax(target_db.max(axis=0)))
    for column, (name, audio) in enumerate(panels.items()):
        spec = db(audio)
        seconds = spec.shape[1] * contract.hop_length / contract.sample_rate
        axis = axes[0, column]
        image = axis.imshow(spec, origin="lower", aspect="auto", vmin=vmax - metrics.TOP_DB,
                            vmax=vmax, cmap="magma", extent=(0, seconds, 0, max_hz))
        axis.axhline(split_hz, color="white", lw=0.6, ls="--")
        axis.set(title=name, xlabel="s")
        slice_axis = axes[1, column]
        high = bins_hz[shown] >= split_hz
        slice_axis.plot(bins_hz[shown][high], target_db[high, loudest], color="0.6", lw=0.8,
                        label="recording")
        if audio is not target_audio:
            slice_axis.plot(bins_hz[shown][high], spec[high, loudest], color="C3", lw=0.8,
                            label=name)
        slice_axis.set(xlabel="Hz (loudest frame)", ylim=(vmax - metrics.TOP_DB, vmax + 3))
        slice_axis.legend(fontsize=7, loc="upper right")
    axes[0, 0].set(ylabel="Hz")
    axes[1, 0].set(ylabel="dB")
    fig.colorbar(image, ax=axes[0, -1], label="dB")
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)


def morph_curve(path: str | os.PathLike | BinaryIO, curve: dict) -> None:
    """A blend's spectral centroid (Hz) and harmonic-to-noise ratio (dB) against the weight of
    its second instrument (`tnca_jax.timbre.morph_curve`)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.0), constrained_layout=True)
    for axis, key, label in ((axes[0], "centroid_hz", "spectral centroid (Hz)"),
                             (axes[1], "hnr_db", "harmonic-to-noise ratio (dB)")):
        axis.plot(curve["weights"], curve[key], marker="o")
        axis.set(title=label, xlabel=f"weight of {curve['end']} (0 = {curve['start']})")
        axis.grid(alpha=0.3)
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)


def piano_roll(path: str | os.PathLike | BinaryIO, audio: np.ndarray, contract: MelContract,
               notes: list[tuple[float, float, float]], title: str = "") -> None:
    """A phrase's log-mel (dB, 80 dB below its peak) with its notes drawn over it: one box per
    (MIDI pitch, start s, duration s), at the mel band of the note's fundamental."""
    plt = _pyplot()
    spec = _db(np.asarray(log_mel(np.asarray(audio, np.float32), contract)), contract)
    vmax = float(spec.max())
    seconds = spec.shape[1] * contract.hop_length / contract.sample_rate
    centres = row_frequencies_hz(contract)
    fig, axis = plt.subplots(figsize=(max(8.0, min(24.0, 2 + 1.5 * seconds)), 4.5),
                             constrained_layout=True)
    image = axis.imshow(spec, origin="lower", aspect="auto", vmin=vmax - metrics.TOP_DB,
                        vmax=vmax, cmap="magma", extent=(0, seconds, 0, spec.shape[0]))
    for midi, start, duration in notes:
        band = float(np.interp(midi_to_hz(midi), centres, np.arange(len(centres)))) + 0.5
        axis.add_patch(plt.Rectangle((start, band - 1.0), duration, 2.0, fill=False,
                                     edgecolor="cyan", linewidth=1.2))
    axis.set(title=title or "played phrase: log-mel, notes in cyan", xlabel="s",
             ylabel="mel band")
    fig.colorbar(image, ax=axis, label="dB")
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)
