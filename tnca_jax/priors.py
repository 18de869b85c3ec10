"""What a note of a conditioned TNCA is expected to sound like before it grows: its prior, a
time-averaged spectrum [n_values, rows] in the representation's [0, 1] units, drawn from the
training notes' own time-averaged spectra (`SpectrumPrior`). Three ways (`PRIOR_KINDS`):

- "neighbours": the instrument's training notes nearest below and above the pitch, each moved
  along log-frequency by the pitch difference (so that its harmonics land on the new note's)
  and shifted by the loudness difference, mixed linearly in pitch. Exact at a training note's
  own pitch; beyond the range, the nearest note moved whole, body resonances included, which
  a violin's body does not do (its resonances stay put while the harmonics move).
- "source_filter": the neighbours' harmonics (the source) under the instrument's envelope
  kept in place (the filter: body, bore, bell, which stay put in absolute frequency while the
  harmonics move). The envelope is the mean of all the instrument's notes' spectra, smoothed
  over a fundamental's width (what every pitch shares, its harmonics averaged out); each
  neighbour moved to the pitch has its own envelope's move taken back out.
Measured (`python -m bench.timbre_levels --size full --edges 5`, docs/results.md): equal inside
an instrument's range, closer beyond it (each instrument's 5 lowest and highest semitones held
out); a least-squares fit of an envelope times a harmonic comb through the mel filters was
tried first and was further from the held-out notes than either.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from tnca_jax.conditioning import midi_to_hz, row_frequencies_hz
from tnca_jax.contract import SpectralContract

PRIOR_KINDS = ("neighbours", "source_filter")


@dataclasses.dataclass(frozen=True, eq=False)
class SpectrumPrior:
    """The training notes' time-averaged spectra, from which the expected spectrum of any note
    is drawn (`spectrum`, as `kind` says: see the module docstring). Row k is training note k:
    its instrument, pitch (MIDI), loudness (dBFS) and mean over its frames, [n_values, rows]
    in the representation's [0, 1] units; value 0 is the log magnitude spanning `span_db`."""

    contract: SpectralContract
    span_db: float
    instrument: tuple[str, ...]
    midi: np.ndarray
    loudness_db: np.ndarray
    spectra: np.ndarray
    kind: str = "neighbours"

    def __post_init__(self) -> None:
        if self.kind not in PRIOR_KINDS:
            raise ValueError(f"prior kind {self.kind!r} is not one of {', '.join(PRIOR_KINDS)}")

    def to_dict(self) -> dict:
        """The table as run.json keeps it (the notes' labels are stored beside it)."""
        return {"span_db": self.span_db, "kind": self.kind,
                "spectra": np.round(self.spectra, 5).tolist()}

    @classmethod
    def from_dict(cls, contract: SpectralContract, notes: Sequence[Mapping], table: Mapping
                  ) -> SpectrumPrior:
        """From run.json: `notes` the training notes' labels (`Note.to_dict`), in order."""
        return cls(contract, float(table["span_db"]), tuple(n["instrument"] for n in notes),
                   np.array([n["midi"] for n in notes], np.float64),
                   np.array([n["loudness_db"] for n in notes], np.float64),
                   np.asarray(table["spectra"], np.float32), table.get("kind", "neighbours"))

    def spectrum(self, instrument: str, midi: float, loudness: float,
                 exclude: int | None = None) -> tuple[np.ndarray, float]:
        """The expected time-averaged spectrum [n_values, rows] of a note of `instrument` at
        `midi` and `loudness` (dBFS), and the distance in semitones to the nearest training
        note of the instrument. `exclude`: leave training note k out (how training sees a
        pitch it has no note of); an instrument with no other note keeps it."""
        others = self._notes_of(instrument, exclude)
        distance = float(min(abs(self.midi[k] - midi) for k in others))
        if self.kind == "neighbours":
            return self._neighbours(others, midi, loudness), distance
        return self._source_filter(others, midi, loudness), distance

    def _notes_of(self, instrument: str, exclude: int | None) -> list[int]:
        mine = [k for k, name in enumerate(self.instrument) if name == instrument]
        if not mine:
            raise ValueError(f"no training note of {instrument!r} in the prior")
        return [k for k in mine if k != exclude] or mine

    # ---------------------------------------------------------------- neighbours
    @functools.cached_property
    def _log_centres(self) -> np.ndarray:
        """[rows] log2 of each row's centre frequency (Hz)."""
        return np.log2(np.maximum(row_frequencies_hz(self.contract), 1.0))

    def _moved(self, k: int, midi: float, loudness: float) -> np.ndarray:
        """Training note k's spectrum moved to pitch `midi` (along log-frequency) and loudness
        `loudness` (value 0 only)."""
        log_centres = self._log_centres
        octaves = (midi - self.midi[k]) / 12.0
        moved = np.stack([np.interp(log_centres - octaves, log_centres, value)
                          for value in self.spectra[k]])
        moved[0] += (loudness - self.loudness_db[k]) / self.span_db
        return moved.astype(np.float32)

    def _mixed(self, others: list[int], midi: float,
               spectrum_of: Callable[[int], np.ndarray]) -> np.ndarray:
        """`spectrum_of(k)` of the notes nearest below and above `midi`, mixed linearly in
        pitch; beyond the lowest or highest, the nearest alone."""
        below = [k for k in others if self.midi[k] <= midi]
        above = [k for k in others if self.midi[k] > midi]
        if below and above:
            low = max(below, key=lambda k: self.midi[k])
            high = min(above, key=lambda k: self.midi[k])
            weight = (midi - self.midi[low]) / (self.midi[high] - self.midi[low])
            return (1 - weight) * spectrum_of(low) + weight * spectrum_of(high)
        return spectrum_of(min(others, key=lambda k: abs(self.midi[k] - midi)))

    def _neighbours(self, others: list[int], midi: float, loudness: float) -> np.ndarray:
        return self._mixed(others, midi, lambda k: self._moved(k, midi, loudness))

    # ---------------------------------------------------------------- source-filter
    @functools.lru_cache(maxsize=256)  # noqa: B019 (frozen, eq=False: one cache per prior)
    def _envelope(self, notes: tuple[int, ...]) -> np.ndarray:
        """[n_values, rows] the instrument's spectral envelope over absolute frequency: the
        mean of its notes' spectra (loudness taken out), smoothed along frequency over the
        notes' median fundamental (a Gaussian of that width in Hz), so that their harmonics
        average out and what remains is what every pitch shares (the filter)."""
        level = self.spectra[list(notes)].astype(np.float64)
        level[:, 0] -= (self.loudness_db[list(notes)] / self.span_db)[:, None]
        width = midi_to_hz(float(np.median(self.midi[list(notes)])))
        centres = row_frequencies_hz(self.contract)
        kernel = np.exp(-0.5 * ((centres[:, None] - centres[None, :]) / width) ** 2)
        kernel /= kernel.sum(axis=1, keepdims=True)
        return level.mean(axis=0) @ kernel.T

    def _source_filter(self, others: list[int], midi: float, loudness: float) -> np.ndarray:
        """The neighbours' spectra moved to the pitch (the source: their harmonics), with the
        envelope put back where it was (the filter: each moved note loses its envelope's
        move, `_envelope` at its own place minus moved)."""
        envelope = self._envelope(tuple(others))
        log_centres = self._log_centres

        def corrected(k: int) -> np.ndarray:
            octaves = (midi - self.midi[k]) / 12.0
            moved_envelope = np.stack([np.interp(log_centres - octaves, log_centres, value)
                                       for value in envelope])
            return self._moved(k, midi, loudness) + envelope - moved_envelope

        spectrum = self._mixed(others, midi, corrected)
        return np.clip(spectrum, 0.0, 1.0).astype(np.float32)
