"""Measuring grown notes against their recordings, for both TNCA jobs (`tnca_jax.records`):
each note's generated audio beside the static baseline and the vocoder's ceiling; and what a
listener hears of an `instruments` run (`demos`: unseen pitches, a morph, a glide, regrowth).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import jax.numpy as jnp
import numpy as np

from tnca_jax import dsp, metrics
from tnca_jax.conditioning import midi_to_hz, pitch_to_midi
from tnca_jax.contract import SpectralContract, measuring_contract
from tnca_jax.corpus import midi_to_name
from tnca_jax.generation import (
    Erase,
    GenerationResult,
    grow_features,
    note_spec,
    render_features,
)
from tnca_jax.inverse import Inverse, companion
from tnca_jax.notes import Note, NoteSet
from tnca_jax.records import NoteMetrics
from tnca_jax.runs import Run
from tnca_jax.workdir import NOTES_DIR, Workdir

# What an instruments run measures on each note (pYIN's f0 error where asked: slow on CPU).
NOTE_METRICS = ("mel_l1_db", "mrstft", "mrstft_auraloss", "spectral_convergence", "rms_ratio",
                "onset_level_db", "centroid_error_hz", "f0_error_cents")
MORPH_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)
COMPANION_METRICS = ("mel_l1_db", "mrstft", "mrstft_auraloss", "rms_ratio")


def _scores(reference: np.ndarray, audios: Sequence[np.ndarray], inverse: Inverse,
            only: Collection[str] | None) -> list[metrics.AudioMetrics]:
    """The metrics of each of `audios` against `reference` (one batch for the optional
    metrics' worker); SNR is flagged where the phase was invented by the vocoder."""
    results = metrics.compare_many(reference, list(audios), measuring_contract(inverse.contract),
                                   only=only)
    if not inverse.representation.grows_phase:
        for result in results:
            if result.snr_db is not None:
                result.notes["snr_db"] = metrics.SNR_VOCODER_PHASE
    return results


def measure(note: Note, generated: np.ndarray, inverse: Inverse, *,
            only: Collection[str] | None = None, ceiling: bool | np.ndarray = True,
            grown: np.ndarray | None = None) -> NoteMetrics:
    """One note's generated audio against its recording, beside the static baseline and the
    vocoder's ceiling (`ceiling`: True renders it, an array is it, False leaves it out), all
    with the metrics `only` names (None: all); `grown` [bins, frames]: the grown level, for
    grid_l1_db."""
    renders = render_features(inverse, [note.static_features]
                              + ([note.features] if ceiling is True else []))
    if not isinstance(ceiling, bool):
        renders.append(ceiling)
    scored = _scores(note.audio, [generated, *renders], inverse, only)
    generated_scores, static = scored[0], scored[1]
    gain = (None if generated_scores.mel_l1_db is None
            else static.mel_l1_db / max(generated_scores.mel_l1_db, 1e-9))
    grid = (None if grown is None else metrics.mel_l1_db_from_log_mel(
        note.features[0], grown, inverse.contract))
    return NoteMetrics(note=note.to_dict(), generated=generated_scores, static_baseline=static,
                       ceiling=scored[2] if len(scored) > 2 else None, temporal_gain=gain,
                       grid_l1_db=grid)


def measure_notes(run: Run, inverse: Inverse, notes: Sequence[Note], *, growth_steps: int,
                  seed: int, only: Collection[str] | None = NOTE_METRICS,
                  ceiling: bool = False) -> list[NoteMetrics]:
    """Every note of a conditioned run grown from its own labels and length (one batch),
    rendered and measured (`measure`)."""
    grown = grow_features(run, [n.spec for n in notes], seeds=[seed],
                          growth_steps=growth_steps, num_stages=1)
    audio = render_features(inverse, [g[-1] for g in grown])
    return [measure(note, generated, inverse, only=only, ceiling=ceiling, grown=g[-1, 0])
            for note, generated, g in zip(notes, audio, grown, strict=True)]


def evaluation_notes(notes: NoteSet, max_notes: int) -> list[Note]:
    """The notes measured: every held-out note, then seen ones, at most `max_notes` (0: all),
    seen notes spread evenly over the corpus."""
    held, seen = list(notes.held_out), list(notes.training)
    if not max_notes or len(held) + len(seen) <= max_notes:
        return held + seen
    held = held[: max(1, max_notes // 2)] if len(held) > max_notes // 2 else held
    room = max_notes - len(held)
    picks = np.linspace(0, len(seen) - 1, room).round().astype(int) if room else []
    return held + [seen[i] for i in sorted(set(picks))]


def other_vocoders(workdir: Workdir, note: Note, result: GenerationResult,
                   inverse: Inverse) -> dict:
    """The grown note and the recording's own features through the companion vocoder
    (`tnca_jax.inverse.companion`: Griffin-Lim beside the music vocoder and the reverse),
    written as generated_<vocoder>.wav and ceiling_<vocoder>.wav, with their main metrics:
    {vocoder: {"generated": ..., "ceiling": ..., "files": [...]}} (empty without one)."""
    other = companion(inverse)
    if other is None:
        return {}
    generated, best = render_features(other, [result.features, note.features])
    files = [f"generated_{other.name}.wav", f"ceiling_{other.name}.wav"]
    for name, audio in zip(files, (generated, best), strict=True):
        workdir.write_wav(name, audio, inverse.contract.sample_rate)
    ours, ceiling = (scored.to_dict() for scored in _scores(
        note.audio, [generated, best], other, COMPANION_METRICS))
    return {other.name: {"generated": {k: ours[k] for k in COMPANION_METRICS}, "files": files,
                         "ceiling": {k: ceiling[k] for k in COMPANION_METRICS}}}


# ------------------------------------------------------------------------ instruments demos
def harmonic_to_noise_db(audio: np.ndarray, contract: SpectralContract, f0_hz: float) -> float:
    """Energy within a quarter of f0 of the harmonics k f0 over the energy elsewhere, in dB
    (STFT power of the measuring contract, summed over the whole note)."""
    measuring = measuring_contract(contract)
    power = np.sum(np.asarray(dsp.stft_magnitude(jnp.asarray(audio), measuring)) ** 2, axis=1)
    hz = np.linspace(0.0, measuring.sample_rate / 2, len(power))
    distance = np.abs(hz / f0_hz - np.round(hz / f0_hz)) * f0_hz
    harmonic = (distance <= f0_hz / 4) & (hz >= f0_hz * 0.75)
    return float(10 * np.log10(power[harmonic].sum() / max(power[~harmonic].sum(), 1e-30)))


def morph_curve(run: Run, inverse: Inverse, start: str, end: str, pitch: float, frames: int,
                *, growth_steps: int, seed: int) -> dict:
    """Blends start -> end at `MORPH_WEIGHTS` (weight of `end`): per weight the spectral
    centroid (Hz) and harmonic-to-noise ratio (dB) of the rendered note, and the audio."""
    requests = [note_spec(run, {start: 1 - w, end: w} if 0 < w < 1 else (end if w else start),
                          pitch, frames) for w in MORPH_WEIGHTS]
    grown = grow_features(run, requests, seeds=[seed], growth_steps=growth_steps, num_stages=1)
    audio = render_features(inverse, [g[-1] for g in grown])
    contract = measuring_contract(run.contract)
    return {"start": start, "end": end, "midi": pitch, "weights": list(MORPH_WEIGHTS),
            "centroid_hz": [metrics.spectral_centroid_hz(a, contract) for a in audio],
            "hnr_db": [harmonic_to_noise_db(a, run.contract, midi_to_hz(pitch))
                       for a in audio],
            "audio": audio}


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "#-" else "_" for c in text).strip("_")


def demos(run: Run, inverse: Inverse, measured: Sequence[Note]) -> dict:
    """What a listener hears of an instruments run, written under notes/: one note of every
    instrument at a pitch it was not trained on, a morph between the two instruments with the
    most notes (and its centroid and harmonic-to-noise curve), a glide between them, and
    regrowth of up to three measured notes after erasing the middle of their frames. Returns
    metrics.json's "demos", "morph" and "regrowth" sections."""
    generate, seed = run.settings.generate, run.settings.seed
    steps, frames, rate = generate.growth_steps, run.frames(generate.seconds), \
        run.contract.sample_rate
    default_midi = pitch_to_midi(generate.pitch)
    found, requests = [], []
    for instrument in run.instruments:
        unseen = [n["midi"] for n in run.notes if n["instrument"] == instrument and n["held_out"]]
        midi = unseen[0] if unseen else default_midi
        found.append((instrument, midi, bool(unseen)))
        requests.append(note_spec(run, instrument, midi, frames))
    counts = {i: sum(n["instrument"] == i and not n["held_out"] for n in run.notes)
              for i in run.instruments}
    pair = sorted(run.instruments, key=lambda i: -counts[i])[:2]
    if len(pair) == 2:
        requests.append(note_spec(run, pair[0], default_midi, frames, pair[1]))
    grown = grow_features(run, requests, seeds=[seed], growth_steps=steps, num_stages=1)
    audio = render_features(inverse, [g[-1] for g in grown])
    listed = []
    for (instrument, midi, unheard), sound in zip(found, audio, strict=False):
        name = f"{NOTES_DIR}/{instrument}_{midi_to_name(midi)}.wav"
        run.workdir.write_wav(name, sound, rate)
        label = " (a pitch it never trained on)" if unheard else ""
        listed.append({"file": name, "kind": "note", "label": f"{instrument} "
                       f"{midi_to_name(midi)}, {generate.seconds:g} s{label}"})
    morph = None
    if len(pair) == 2:
        start, end = pair
        morph = morph_curve(run, inverse, start, end, default_midi, frames, growth_steps=steps,
                            seed=seed)
        for weight, sound in zip(morph["weights"], morph.pop("audio"), strict=True):
            name = f"{NOTES_DIR}/morph_{start}_{end}_{weight:.2f}.wav"
            run.workdir.write_wav(name, sound, rate)
            listed.append({"file": name, "kind": "morph", "label": f"{1 - weight:.2f} {start} "
                           f"+ {weight:.2f} {end}, {midi_to_name(default_midi)}"})
        name = f"{NOTES_DIR}/glide_{start}_{end}.wav"
        run.workdir.write_wav(name, audio[-1], rate)
        listed.append({"file": name, "kind": "glide",
                       "label": f"{start} gliding to {end}, {midi_to_name(default_midi)}"})
    erase = Erase(generate.erase_fraction, generate.erase_at)
    regrowth = []
    contract = measuring_contract(run.contract)
    for note in measured[:3]:
        [stages] = grow_features(run, [note.spec], seeds=[seed], growth_steps=steps,
                                 num_stages=1, erase=erase)
        kept, regrown = render_features(inverse, [stages[0], stages[2]])
        undamaged = metrics.mel_l1_db(note.audio, kept, contract)
        healed = metrics.mel_l1_db(note.audio, regrown, contract)
        name = f"{NOTES_DIR}/regrown_{_slug(note.name)}.wav"
        run.workdir.write_wav(name, regrown, rate)
        listed.append({"file": name, "kind": "regrown",
                       "label": f"{note.name}: the middle {erase.fraction:.0%} of its frames "
                                f"erased after {erase.at_step} steps, regrown for {steps}"})
        regrowth.append({"note": note.name, "held_out": note.held_out,
                         "erase_fraction": erase.fraction, "erase_at": erase.at_step,
                         "steps_after": steps, "undamaged_mel_l1_db": undamaged,
                         "regrown_mel_l1_db": healed, "ratio": healed / max(undamaged, 1e-9)})
    return {"demos": listed, "morph": morph, "regrowth": regrowth}
