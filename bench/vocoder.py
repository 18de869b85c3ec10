"""The music vocoder against Griffin-Lim on the held-out notes, and both vocoders' speed.

  python -m bench.vocoder [--weights=vocoders/music_vocoder.safetensors] \\
      [--compare=NAME=PATH ...] [--out=bench/results/vocoder_cpu.jsonl] [--f0] \\
      [--perceptual] [--max-notes=N] [--only=TEXT] [--figure=PATH] [--refine-iterations=N ...] \\
      [--griffinlim-iterations=N]

For every held-out recording of `configs/vocoder.py` (notes the shipped weights never saw:
pitch classes A, C#/Db, F and the legato phrase; trimmed 60 dB below the peak and capped at 4 s
as a TNCA target is), each vocoder's ceiling: the recording's own log-mel through the vocoder,
scored against the recording with `tnca_jax.metrics` (`vocoders.music_train.evaluate`:
`music_train.SCORED`, f0_error_cents with `--f0` only). Then the summary per vocoder (mean, median,
worst over notes), and the speed: the real-time factor (audio seconds per wall second, median
of repeats after a warm-up call) to vocode a 4 s note on the present device. Prints JSON lines,
also written to `--out`; the last line ("kind": "comparison") puts both vocoders' mean ceiling
and speed side by side, and on how many notes the music vocoder beats Griffin-Lim on the
auraloss MR-STFT, spectral convergence and mel-cepstral distortion all at once.
`--max-notes` measures the first N held-out notes only (sorted by path; the line says so),
`--only=TEXT` those whose path contains TEXT.
`--compare=NAME=PATH` adds another music vocoder's weights (e.g. an earlier version) under
NAME, measured the same way in the same run; `--refine-iterations=N` adds the `--weights`
rendered with N refinement iterations instead of the count stored with them (`music_rN`);
`--griffinlim-iterations=N` adds Griffin-Lim with N iterations (`griffinlim_N`) beside the
default 64 (which the "beats" count is against).
`--perceptual` adds PESQ and CDPAM (the `perceptual` extra; CDPAM takes about 10 s per note on
a CPU). `--figure=PATH` draws the
linear-frequency spectrogram of the highest held-out violin note under 1 kHz (of the notes
measured; of any instrument when none is a violin's, any note when none is under 1 kHz)
through every vocoder
(`tnca_jax.plots.stft_panels`).

`--oracles` adds renderers told more than a log-mel holds, from the recording's own STFT under
the contract: one "oracle" line per case, the mean over the notes of the project's mrstft and of
the anchors' formula (`mrstft_auraloss`, the one the vocoder issue's bar is in). The third is
what a vocoder that cannot know the recording's noise sample is not expected to beat; the
second, given the true phase, bounds nothing:
- `true_magnitude_griffinlim`: the exact STFT magnitude, phase by 64 Griffin-Lim iterations
  (the magnitude a mel does not hold);
- `mel_magnitude_true_phase`: the mel's least-squares magnitude with the recording's own phase;
- `true_partials_random_noise_phase`: every partial exact (magnitude and phase of the bins
  within 2 of a spectral peak 6 dB above its 15-bin neighbourhood), the other bins with their
  exact magnitude but a random phase: a vocoder that renders every partial perfectly but
  cannot know the recording's own noise (bow, breath, room) sample for sample.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from scipy.ndimage import maximum_filter1d, uniform_filter1d

from configs.vocoder import get_config
from tnca_jax import dsp, metrics, plots
from tnca_jax.dsp import log_mel
from tnca_jax.inverse import GriffinLim
from vocoders import music_data, music_train
from vocoders.music import WEIGHTS_PATH, load

SPEED_SECONDS = 4.0
SCORED = music_train.SCORED  # f0 (the last) with --f0 only
PERCEPTUAL = ("pesq_mos", "cdpam_distance")
# Better than Griffin-Lim on a note means better on all three, no trade of one for another.
BEATS_ON = ("mrstft_auraloss", "spectral_convergence", "mcd_db")
PEAK_DB, PEAK_NEIGHBOURHOOD, PEAK_HALF_WIDTH = 6.0, 15, 2
FIGURE_MAX_MIDI = 83  # B5, 988 Hz
ORACLE_METRICS = ("mrstft", "mrstft_auraloss")


def partial_bins(magnitude: np.ndarray) -> np.ndarray:
    """[bins, frames] True within PEAK_HALF_WIDTH bins of a local spectral peak that stands
    PEAK_DB above the mean magnitude of its PEAK_NEIGHBOURHOOD bins (the note's partials)."""
    level = 20 * np.log10(magnitude + 1e-9)
    around = 20 * np.log10(uniform_filter1d(magnitude, PEAK_NEIGHBOURHOOD, axis=0) + 1e-9)
    peaks = (level == maximum_filter1d(level, 5, axis=0)) & (level > around + PEAK_DB)
    return maximum_filter1d(peaks.astype(np.uint8), 2 * PEAK_HALF_WIDTH + 1, axis=0) > 0


def ceiling(vocoder, notes: list[tuple[dict, np.ndarray]], names: tuple[str, ...]
            ) -> tuple[list, dict]:
    """Per note {"note", "seconds", *names}, and per metric the mean, median, count and worst
    (rms_ratio: min and max) over the notes."""
    rate = vocoder.contract.sample_rate
    per_note = [{"note": labels["name"], "seconds": len(audio) / rate,
                 **{name: getattr(measured.generated, name) for name in names}}
                for (labels, audio), measured in zip(
                    notes, music_train.evaluate(vocoder, notes, names=names), strict=True)]
    summary = {}
    for name in names:
        values = np.array([n[name] for n in per_note if n[name] is not None], np.float64)
        if values.size:
            higher = metrics.METRICS[name].higher_is_better
            summary[name] = {"mean": float(values.mean()), "median": float(np.median(values)),
                             "count": int(values.size),
                             **({"min": float(values.min()), "max": float(values.max())}
                                if name == "rms_ratio" else
                                {"worst": float(values.min() if higher else values.max())})}
    return per_note, summary


def oracles(notes: list[tuple[dict, np.ndarray]], contract) -> dict[str, dict[str, float]]:
    """Per oracle in the module docstring, the mean of each metric in ORACLE_METRICS over
    `notes`."""
    key = jax.random.key(0)
    scores: dict[str, dict[str, list[float]]] = {}
    for _, audio in notes:
        spec = np.asarray(dsp.stft(jnp.asarray(audio), contract))
        magnitude = np.abs(spec)
        phasor = spec / np.maximum(magnitude, 1e-12)
        mel = contract.from_log(dsp.mel_from_magnitude(dsp.magnitude(jnp.asarray(spec)),
                                                       contract))
        noise_phase = np.exp(2j * np.pi * np.random.default_rng(0).random(magnitude.shape))
        rendered = {
            "true_magnitude_griffinlim": dsp.fast_griffin_lim(jnp.asarray(magnitude), contract,
                                                              key),
            "mel_magnitude_true_phase": dsp.istft(
                dsp.mel_to_magnitude(mel, contract) * jnp.asarray(phasor), contract,
                len(audio)),
            "true_partials_random_noise_phase": dsp.istft(
                jnp.asarray(np.where(partial_bins(magnitude), spec, magnitude * noise_phase)),
                contract, len(audio)),
        }
        for name, signal in rendered.items():
            for metric in ORACLE_METRICS:
                scores.setdefault(name, {}).setdefault(metric, []).append(getattr(
                    metrics, metric)(audio, np.asarray(signal), contract.sample_rate))
    return {name: {metric: float(np.mean(values)) for metric, values in by_metric.items()}
            for name, by_metric in scores.items()}


def real_time_factor(vocoder, log_mel_in: jax.Array, repeats: int) -> float:
    """Audio seconds rendered per wall-clock second (median over `repeats`)."""
    contract = vocoder.contract
    jax.block_until_ready(vocoder(log_mel_in, contract=contract))  # compile
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(vocoder(log_mel_in, contract=contract))
        times.append(time.perf_counter() - start)
    seconds = log_mel_in.shape[-1] * contract.hop_length / contract.sample_rate
    return seconds / float(np.median(times))


def _shown(path: Path) -> str:
    """`path` relative to the working directory when it lies under it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", type=Path, default=WEIGHTS_PATH)
    parser.add_argument("--compare", action="append", default=[], metavar="NAME=PATH",
                        help="another music vocoder's weights, measured under NAME")
    parser.add_argument("--perceptual", action="store_true",
                        help="add PESQ and CDPAM (slow on CPU)")
    parser.add_argument("--figure", type=Path, default=None,
                        help="write the spectrogram figure of the highest violin note here")
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).resolve().parent / "results" / "vocoder_cpu.jsonl")
    parser.add_argument("--f0", action="store_true",
                        help="add the pYIN f0 error per note (slow on CPU)")
    parser.add_argument("--max-notes", type=int, default=None,
                        help="measure only the first N held-out notes")
    parser.add_argument("--only", default=None, metavar="TEXT",
                        help="measure only the held-out notes whose path contains TEXT")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--refine-iterations", type=int, action="append", default=[],
                        metavar="N", help="also measure the weights with N refinement iterations")
    parser.add_argument("--griffinlim-iterations", type=int, default=None, metavar="N",
                        help="also measure Griffin-Lim with N iterations")
    parser.add_argument("--oracles", action="store_true",
                        help="add the oracle lines (renderers told more than a log-mel holds)")
    args = parser.parse_args()

    data = music_train.read_vocoder(get_config()).data
    music = load(args.weights)
    contract = music.contract
    vocoders = {"music": music, "griffinlim": GriffinLim(contract)}
    if args.griffinlim_iterations is not None:
        if args.griffinlim_iterations < 1:
            parser.error("--griffinlim-iterations: give at least 1")
        vocoders[f"griffinlim_{args.griffinlim_iterations}"] = GriffinLim(
            contract, iterations=args.griffinlim_iterations)
    if (min(args.refine_iterations, default=0) < 0
            or len(set(args.refine_iterations)) < len(args.refine_iterations)):
        parser.error("--refine-iterations: give distinct counts of at least 0")
    for iterations in args.refine_iterations:
        vocoders[f"music_r{iterations}"] = load(args.weights, refine_iterations=iterations)
    compared: dict[str, Path] = {}  # --compare NAME -> its weights
    for entry in args.compare:
        name, _, path = entry.partition("=")
        if not path or name in vocoders:
            parser.error(f"--compare={entry}: give NAME=PATH with a new NAME")
        compared[name] = Path(path)
        vocoders[name] = load(compared[name])
        if vocoders[name].contract != contract:
            parser.error(f"--compare={entry}: another contract than {contract.name}")
    names = (*(SCORED if args.f0 else SCORED[:-1]), *(PERCEPTUAL if args.perceptual else ()))
    _, held_out = music_data.split_files(data.paths, data.held_out)
    total_notes = len(held_out)
    held_out = sorted((f for f in held_out if args.only is None or args.only in str(f.path)),
                      key=lambda f: str(f.path))[:args.max_notes]
    if not held_out:
        parser.error(f"--only={args.only}: no held-out note's path contains it")
    notes = music_data.held_out_notes(held_out, contract, trim_db=data.trim_db,
                                      max_seconds=data.eval_max_seconds)
    device = str(jax.devices()[0].device_kind)
    lines = []
    for name, vocoder in vocoders.items():
        per_note, summary = ceiling(vocoder, notes, names)
        lines += [{"kind": "note", "vocoder": name, **row} for row in per_note]
        lines.append({"kind": "summary", "vocoder": name, "notes": len(notes),
                      "held_out_notes": total_notes, **summary})
    if args.oracles:
        lines += [{"kind": "oracle", "oracle": name, "notes": len(notes), **means}
                  for name, means in oracles(notes, contract).items()]
    # A 4 s note: the longest held-out recording's log-mel, cut or repeated to 4 s.
    longest = max((audio for _, audio in notes), key=len)
    frames = contract.num_frames(round(SPEED_SECONDS * contract.sample_rate))
    features = np.asarray(log_mel(longest, contract))
    features = np.tile(features, (1, -(-frames // features.shape[-1])))[None, :, :frames]
    for name, vocoder in vocoders.items():
        lines.append({"kind": "speed", "vocoder": name, "seconds": SPEED_SECONDS,
                      "real_time_factor": real_time_factor(vocoder, features, args.repeats),
                      "device": device, "backend": jax.default_backend()})
    summaries = {line["vocoder"]: line for line in lines if line["kind"] == "summary"}
    speeds = {line["vocoder"]: line["real_time_factor"] for line in lines
              if line["kind"] == "speed"}
    rows = {name: {line["note"]: line for line in lines
                   if line["kind"] == "note" and line["vocoder"] == name} for name in vocoders}
    learned = ["music", *(f"music_r{iterations}" for iterations in args.refine_iterations),
               *compared]
    beats = {name: sum(all(row[key] < rows["griffinlim"][note][key] for key in BEATS_ON)
                       for note, row in rows[name].items()) for name in learned}
    lines.append({"kind": "comparison", "notes": len(notes), "held_out_notes": total_notes,
                  "device": device, "weights": _shown(args.weights),
                  "compared": {name: _shown(path) for name, path in compared.items()},
                  "beats_griffinlim_on": list(BEATS_ON),
                  "beats_griffinlim_notes": beats, **{
                      name: {**{key: summaries[name][key]["mean"] for key in names
                                if key in summaries[name]},
                             "x_real_time_4s": speeds[name]} for name in vocoders}})
    if args.figure:
        # Partials above 2 kHz to look at: at least four below 6 kHz (f0 under 1 kHz).
        pitched = [note for note in notes if note[0]["midi"] is not None
                   and note[0]["midi"] <= FIGURE_MAX_MIDI] or notes
        violin = [note for note in pitched if note[0]["instrument"] == "violin"]
        labels, audio = max(violin or pitched, key=lambda note: note[0]["midi"] or 0)
        features = log_mel(audio, contract)[None]
        plots.stft_panels(args.figure, audio, {
            name: np.asarray(vocoder(features, contract=contract))[0]
            for name, vocoder in vocoders.items()}, contract)
        lines.append({"kind": "figure", "path": _shown(args.figure), "note": labels["name"]})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w") as out:
        for line in lines:
            print(json.dumps(line))
            out.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
