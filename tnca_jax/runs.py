"""A trained TNCA run: what run.json says of it (`describe`), the one type that holds it in use
(`Run`), its loader (`load_run`, the model's weights only, no optimizer: from a workdir, a
weights file or the shipped instruments model), its export as one weights file
(`export_weights`), its recordings loaded again (`notes_of`), and the check that a workdir is
resumed only by the run it belongs to (`check_resumable`).

run.json (written by `tnca_jax.training.train` once the first checkpoint exists) holds the
run's settings, its contract, grid length, the notes it saw and held out (their labels), its
instruments and prior (a conditioned run), and the fingerprint of its training notes' audio.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path

from flax import nnx

from tnca_jax import weights
from tnca_jax.contract import ContractError, SpectralContract
from tnca_jax.errors import ConfigError, WorkdirError
from tnca_jax.model import TNCA
from tnca_jax.notes import Note, NoteSet, load_note, load_note_set
from tnca_jax.priors import SpectrumPrior
from tnca_jax.representations import Representation, get_representation
from tnca_jax.settings import CorpusData, TncaSettings, read_tnca, to_dict
from tnca_jax.tnca_training import new_model
from tnca_jax.training import restore_model
from tnca_jax.workdir import Workdir

# Settings a workdir's checkpoints do not depend on: a rerun may change them (iterations: a
# run trained further; the rest: how it is logged, checkpointed, rendered and measured; the
# data and the contract are compared as what they give: the notes' audio, the contract).
FREE_SETTINGS = {"train": {"iterations", "log_every", "checkpoint_every", "keep_checkpoints",
                           "memory_budget_gb"},
                 "": {"vocoder", "vocoder_path", "generate", "eval", "data", "contract"}}


SHIPPED_MODEL = Path(__file__).resolve().parent / "instruments.safetensors"
WEIGHTS_FORMAT = "tnca_jax.run"


def describe(settings: TncaSettings, notes: NoteSet) -> dict:
    """run.json's content for a run of `settings` on `notes`."""
    return _description(settings, notes.representation.contract, notes.grid_frames,
                        notes.fingerprint, notes.instruments,
                        [note.to_dict() for note in notes.notes], notes.prior)


def _description(settings: TncaSettings, contract: SpectralContract, grid_frames: int,
                 fingerprint: str, instruments: Sequence[str], notes: Sequence[dict],
                 prior: SpectrumPrior | None) -> dict:
    return {"job": settings.job, "settings": to_dict(settings), "contract": contract.to_dict(),
            "grid_frames": grid_frames, "fingerprint": fingerprint,
            "instruments": list(instruments), "notes": list(notes),
            "prior": None if prior is None else prior.to_dict()}


@dataclasses.dataclass(frozen=True)
class Run:
    """A trained TNCA in use: its workdir (None: loaded from a weights file, e.g. the shipped
    model), settings, representation, grid length, the labels of the notes it saw and held
    out, its instruments and prior (conditioned runs; else () and None), the fingerprint of
    its training notes, and the model (at checkpoint `step`)."""

    workdir: Workdir | None
    settings: TncaSettings
    representation: Representation
    grid_frames: int
    notes: tuple[dict, ...]
    instruments: tuple[str, ...]
    prior: SpectrumPrior | None
    fingerprint: str
    model: TNCA
    step: int

    @property
    def contract(self) -> SpectralContract:
        return self.representation.contract

    @property
    def conditioned(self) -> bool:
        return self.model.conditioned

    def frames(self, seconds: float) -> int:
        """Grid frames of a note `seconds` long."""
        return max(2, self.contract.num_frames(round(seconds * self.contract.sample_rate)))

    @classmethod
    def trained(cls, workdir: Workdir, settings: TncaSettings, notes: NoteSet, model: TNCA
                ) -> Run:
        """The run a training call just finished (no reload)."""
        return cls(workdir=workdir, settings=settings, representation=notes.representation,
                   grid_frames=notes.grid_frames,
                   notes=tuple(n.to_dict() for n in notes.notes),
                   instruments=notes.instruments, prior=notes.prior,
                   fingerprint=notes.fingerprint, model=model,
                   step=settings.train.iterations)

    def description(self) -> dict:
        """What run.json says of this run."""
        return _description(self.settings, self.contract, self.grid_frames, self.fingerprint,
                            self.instruments, self.notes, self.prior)

    def pitch_ranges(self) -> dict[str, list[float]]:
        """Each instrument's lowest and highest training pitch (MIDI)."""
        return {name: [min(n["midi"] for n in self.notes if n["instrument"] == name
                           and not n["held_out"]),
                       max(n["midi"] for n in self.notes if n["instrument"] == name
                           and not n["held_out"])] for name in self.instruments}


def read_description(workdir: Workdir) -> tuple[TncaSettings, dict]:
    """(settings, run.json) of a TNCA workdir; WorkdirError (one line) for a run.json that is
    damaged, hand-edited beyond use, or of another job."""
    run = workdir.read_run()
    if run.get("job") == "vocoder":
        raise WorkdirError(f"{workdir} holds a music vocoder run, not a TNCA: use its weights "
                           "file with --config.vocoder=music --config.vocoder_path=<file>")
    return _checked(run, workdir.file("run.json"))


def _checked(run: dict, path: Path) -> tuple[TncaSettings, dict]:
    """(settings, run) of a run's description read from `path` (run.json or a weights file),
    checked; WorkdirError (one line) when it is damaged or was edited beyond use."""
    try:
        settings = read_tnca(run["settings"])
        missing = [key for key in ("contract", "grid_frames", "fingerprint", "instruments",
                                   "notes", "prior") if key not in run]
        if missing:
            raise KeyError(missing[0])
        if not isinstance(run["grid_frames"], int) or run["grid_frames"] < 1:
            raise ValueError(f"grid_frames {run['grid_frames']!r}")
    except (KeyError, TypeError, ValueError, ConfigError) as err:
        raise WorkdirError(f"{path} is damaged or was edited ({type(err).__name__}: "
                           f"{' '.join(str(err).split())}); train again in a new --workdir"
                           ) from None
    return settings, run


def load_run(source: str | os.PathLike | None = None) -> Run:
    """Restore a trained TNCA (only the model's weights are read, no optimizer) from a
    workdir (its newest checkpoint that can be read: a damaged one is skipped, saying so on
    stderr), one checkpoint (`workdir/checkpoints/<step>`), a weights file (`export_weights`)
    or, with None, the shipped instruments model."""
    if source is None or str(source).endswith(".safetensors"):
        return _load_weights(SHIPPED_MODEL if source is None else Path(source))
    workdir, step = Workdir.locate(source)
    settings, run = read_description(workdir)
    model, prior = _model(settings, run, workdir.file("run.json"))
    step = restore_model(workdir, step, model)
    return _run(workdir, settings, run, model, prior, step)


def _model(settings: TncaSettings, run: dict, path: Path) -> tuple[TNCA, SpectrumPrior | None]:
    """An untrained model of a described run's sizes, and its prior."""
    try:
        contract = SpectralContract.from_dict(run["contract"])
        representation = get_representation(settings.representation, contract)
        instruments = tuple(run["instruments"])
        prior = (None if run["prior"] is None else SpectrumPrior.from_dict(
            contract, [n for n in run["notes"] if not n["held_out"]], run["prior"]))
    except (KeyError, TypeError, ValueError, ContractError) as err:
        raise WorkdirError(f"{path} is damaged or was edited ({' '.join(str(err).split())}); "
                           "train again in a new --workdir") from None
    if settings.conditioned != bool(instruments) or settings.conditioned != (prior is not None):
        raise WorkdirError(f"{path} is damaged or was edited (its instruments and prior do not "
                           "fit its job); train again")
    return new_model(settings.model, settings.seed, representation, len(instruments)), prior


def _run(workdir: Workdir | None, settings: TncaSettings, run: dict, model: TNCA,
         prior: SpectrumPrior | None, step: int) -> Run:
    contract = SpectralContract.from_dict(run["contract"])
    return Run(workdir=workdir, settings=settings,
               representation=get_representation(settings.representation, contract),
               grid_frames=run["grid_frames"], notes=tuple(run["notes"]),
               instruments=tuple(run["instruments"]), prior=prior,
               fingerprint=run["fingerprint"], model=model, step=step)


def export_weights(run: Run, path: str | os.PathLike) -> Path:
    """Write `run` as one weights file (`tnca_jax.weights`: the model's arrays; its
    description, step and instruments' pitch ranges as metadata) that `load_run(path)`
    loads without a workdir. Paths under the repository are stored relative to it."""
    root = str(Path(__file__).resolve().parent.parent) + os.sep
    description = json.dumps(run.description()).replace(root, "")
    path = Path(path)
    weights.save(nnx.state(run.model), path, {
        "format": WEIGHTS_FORMAT, "run": description, "step": str(run.step),
        "pitch_ranges": json.dumps(run.pitch_ranges())}, what="the TNCA")
    return path


def _load_weights(path: Path) -> Run:
    tensors, metadata = weights.read(
        path, WEIGHTS_FORMAT, what="TNCA", missing_hint="train a model, or export one with "
        "--mode=export" + (" (the shipped model is missing from this installation)"
                           if path == SHIPPED_MODEL else ""))
    try:
        run, step = json.loads(metadata["run"]), int(metadata["step"])
    except (KeyError, ValueError) as err:
        raise WorkdirError(f"{path} is damaged ({err})") from None
    settings, run = _checked(run, path)
    model, prior = _model(settings, run, path)
    state = nnx.state(model)
    weights.fill(state, tensors, path, "TNCA")
    nnx.update(model, state)
    return _run(None, settings, run, model, prior, step)


def _training_settings(settings: dict) -> dict:
    """The settings a workdir's checkpoints depend on (all but `FREE_SETTINGS`), flattened."""
    flat = {}
    for section, values in settings.items():
        if section in FREE_SETTINGS[""]:
            continue
        if isinstance(values, dict):
            flat.update({f"{section}.{key}": value for key, value in values.items()
                         if key not in FREE_SETTINGS.get(section, ())})
        else:
            flat[section] = values
    return flat


def check_resumable(workdir: Workdir, settings: TncaSettings, notes: NoteSet) -> None:
    """Refuse (WorkdirError, one line) a workdir that holds another run: another job,
    contract, grid, training notes (their audio's fingerprint) or settings that its
    checkpoints depend on (`FREE_SETTINGS` may change: e.g. more iterations)."""
    if not workdir.has_run():
        return
    stored, run = read_description(workdir)
    fix = "use the same recording and settings, or a new --workdir"
    if stored.job != settings.job:
        raise WorkdirError(f"{workdir} holds a {stored.job!r} run, this config is a "
                           f"{settings.job!r} job; {fix}")
    field = SpectralContract.from_dict(run["contract"]).first_difference(
        notes.representation.contract)
    changed = [f"contract ({field} differs)"] if field else []
    if run["fingerprint"] != notes.fingerprint:
        trained = sum(not n["held_out"] for n in run["notes"])
        changed.append(f"training notes ({trained} there, {len(notes.training)} here; their "
                       "audio differs)")
    elif run["grid_frames"] != notes.grid_frames:
        changed.append(f"grid ({run['grid_frames']} frames there, {notes.grid_frames} here)")
    before, now = _training_settings(to_dict(stored)), _training_settings(to_dict(settings))
    changed += [f"{key} ({before.get(key)!r} there, {now[key]!r} here)" for key in now
                if before.get(key) != now[key]]
    if changed:
        raise WorkdirError(f"{workdir} holds a run with another {', '.join(changed)}, which "
                           f"its checkpoints depend on; {fix}")


def notes_of(run: Run) -> NoteSet:
    """The notes a run was trained on and held out, loaded again from its settings; WorkdirError
    when they are not the ones it trained on any more (a recording replaced or edited)."""
    data = run.settings.data
    notes = (load_note_set(data, run.representation, run.settings.model.prior)
             if isinstance(data, CorpusData) else load_note(data, run.representation))
    if notes.fingerprint != run.fingerprint:
        raise WorkdirError(f"{run.workdir} was trained on other audio than "
                           f"{', '.join(sorted({str(n.path) for n in notes.training})[:3])} "
                           "holds now; measure it against the recordings it was trained on")
    return notes


def recording_of(run: Run) -> Note:
    """A `note` run's recording (checked to be the one it trained on)."""
    return notes_of(run).notes[0]
