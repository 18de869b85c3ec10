"""metrics.json as a typed record: what every job measured, written by the jobs and read by
the report page (`tnca_jax.report`) and the benches (`bench/`).

`RunMetrics` holds one `NoteMetrics` per measured note: the generated audio's metrics against
its recording, beside the static baseline (the recording's per-band time average, held still:
what a model with no temporal structure would grow) and the vocoder's ceiling (the recording's
own features through the same vocoder: the error no model can beat with it), and the temporal
gain (static-baseline mel L1 / generated mel L1). A `note` run measures its one note with every
metric of `tnca_jax.metrics.METRICS`; an `instruments` run measures many (held out and seen)
with `summary` over each side; the vocoder job measures its ceiling on its held-out notes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from tnca_jax.metrics import AudioMetrics, badness

FORMAT = "tnca_jax.metrics/2"


def _metrics(data: dict | None) -> AudioMetrics | None:
    return None if data is None else AudioMetrics(**data)


@dataclasses.dataclass(frozen=True)
class NoteMetrics:
    """One measured note.

    Attributes:
      note: its labels (`tnca_jax.notes.Note.to_dict`: name, instrument, midi, held_out, ...).
      generated: the generated (or, for the vocoder job, vocoded) audio against the recording.
      static_baseline, ceiling: the same metrics of those two renderings (None: not measured).
      temporal_gain: static-baseline mel L1 / generated mel L1 (None without a baseline).
      grid_l1_db: the grown level against the recording's, before rendering (None: n/a).
    """

    note: dict
    generated: AudioMetrics
    static_baseline: AudioMetrics | None = None
    ceiling: AudioMetrics | None = None
    temporal_gain: float | None = None
    grid_l1_db: float | None = None

    @property
    def held_out(self) -> bool:
        return bool(self.note.get("held_out"))

    @property
    def name(self) -> str:
        return self.note["name"]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> NoteMetrics:
        return cls(note=data["note"], generated=AudioMetrics(**data["generated"]),
                   static_baseline=_metrics(data.get("static_baseline")),
                   ceiling=_metrics(data.get("ceiling")),
                   temporal_gain=data.get("temporal_gain"), grid_l1_db=data.get("grid_l1_db"))


def summarise(notes: Sequence[NoteMetrics]) -> dict[str, dict]:
    """Per split ("held_out", "seen": only those present) the number of notes and, for every
    generated metric measured, its mean and worst; the static baseline's and the ceiling's
    mean mel L1, the temporal gain (mean, worst) and how many notes beat the baseline."""
    summary = {}
    for split, held in (("held_out", True), ("seen", False)):
        chosen = [n for n in notes if n.held_out == held]
        if not chosen:
            continue
        part: dict[str, Any] = {"notes": len(chosen)}
        names = [f.name for f in dataclasses.fields(AudioMetrics) if f.name != "notes"]
        for name in names:
            values = [getattr(n.generated, name) for n in chosen
                      if getattr(n.generated, name) is not None]
            if values:
                worst = max(values, key=lambda value, name=name: badness(name, value))
                part[name] = {"mean": float(np.mean(values)), "worst": float(worst)}
        for side in ("static_baseline", "ceiling"):
            values = [getattr(n, side).mel_l1_db for n in chosen
                      if getattr(n, side) is not None and getattr(n, side).mel_l1_db is not None]
            if values:
                part[f"{side}_mel_l1_db"] = float(np.mean(values))
        gains = [n.temporal_gain for n in chosen if n.temporal_gain is not None]
        if gains:
            part["temporal_gain"] = {"mean": float(np.mean(gains)), "worst": float(min(gains))}
            part["beat_static"] = sum(g > 1 for g in gains)
        summary[split] = part
    return summary


@dataclasses.dataclass(frozen=True)
class RunMetrics:
    """metrics.json.

    Attributes:
      job: "note", "instruments" or "vocoder".
      contract, vocoder, representation: how the notes were grown and rendered.
      checkpoint_step: the iteration of the model measured.
      notes: every measured note (a `note` run: its one).
      summary: `summarise(notes)`.
      refinement, best_of: the refinement used and the best-of-N record (`note` runs).
      other_vocoders: the same note through the companion vocoder ({name: {"generated",
        "ceiling", "files"}}).
      demos, morph, regrowth: what an `instruments` run writes under notes/ (WAVs with
        labels), its morph curve and its regrowth measures.
      extra: job-specific facts (the vocoder's weights file, training corpus, ...).
    """

    job: str
    contract: str
    vocoder: str
    representation: str
    checkpoint_step: int
    notes: list[NoteMetrics]
    summary: dict
    refinement: dict | None = None
    best_of: dict | None = None
    other_vocoders: dict = dataclasses.field(default_factory=dict)
    demos: list[dict] = dataclasses.field(default_factory=list)
    morph: dict | None = None
    regrowth: list[dict] = dataclasses.field(default_factory=list)
    extra: dict = dataclasses.field(default_factory=dict)

    @property
    def note(self) -> NoteMetrics:
        """The one note of a `note` run."""
        return self.notes[0]

    def to_dict(self) -> dict:
        return {"format": FORMAT, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: dict) -> RunMetrics:
        if data.get("format") != FORMAT:
            raise ValueError(f"metrics.json of format {data.get('format')!r}, not {FORMAT!r}")
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {key: value for key, value in data.items() if key in fields}
        values["notes"] = [NoteMetrics.from_dict(n) for n in data["notes"]]
        return cls(**values)
