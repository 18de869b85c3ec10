"""The optional metrics (pYIN f0 via librosa/numba, ViSQOL, PESQ, CDPAM), run where a crash
cannot take the run down.

Native code in them has crashed a run outright (a segmentation fault inside librosa's pYIN, in
a numba gufunc, on a GPU machine: exit 139, no metrics.json, no report, on every rerun). So
they run in one worker process per Python process (a fresh interpreter that imports neither
JAX nor the caller's state), started on first use and kept for later calls so that numba
compiles pYIN once. `measure` sends it a batch of tasks and collects the results as they come;
a task whose worker dies (any signal, any exception that kills it) or outlasts `TIMEOUT_S`
becomes a missing value with a note, and the next task gets a fresh worker.

numba's on-disk cache is not safe for two processes compiling the same function at once
(`tnca_jax.numba_cache`): a worker's first call of each task therefore holds
`numba_cache.numba_compile_lock`, a lock shared by the machine's processes.

This module imports no JAX: the worker imports only it, numpy and librosa (and visqol, pesq,
cdpam with torch, each only when asked for).
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import functools
import math
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from tnca_jax import interrupts
from tnca_jax.numba_cache import load_librosa, numba_compile_lock

F0_FMIN_HZ, F0_FMAX_HZ = 65.41, 2093.0  # C2..C7
VISQOL_RATE = 48000
PESQ_RATE = 16000  # wide-band PESQ
CDPAM_RATE = 22050  # the rate CDPAM was trained at
PERCEPTUAL_EXTRA = "pip install 'tnca_jax[perceptual]'"
TIMEOUT_S = 600.0  # per task: a hung metric is given up, not waited for forever


def pyin_f0(audio: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """pYIN over C2-C7 with ~93 ms frames: ([frames] f0 in Hz, NaN where unvoiced; [frames] bool
    voiced)."""
    librosa = load_librosa()

    frame_length = 2 ** math.ceil(math.log2(0.09 * sample_rate))
    f0, voiced, _ = librosa.pyin(audio, fmin=F0_FMIN_HZ, fmax=F0_FMAX_HZ, sr=sample_rate,
                                 frame_length=frame_length, hop_length=frame_length // 4)
    return f0, voiced


def f0_agreement(reference: tuple[np.ndarray, np.ndarray],
                 generated: tuple[np.ndarray, np.ndarray]) -> tuple[float | None, float]:
    """From the `pyin_f0` of two aligned signals: (mean |f0 error| in cents over frames voiced
    in both, None if none are; fraction of frames whose voicing agrees)."""
    (ref_f0, ref_voiced), (gen_f0, gen_voiced) = reference, generated
    both = ref_voiced & gen_voiced
    agreement = float(np.mean(ref_voiced == gen_voiced))
    if not both.any():
        return None, agreement
    return float(np.mean(np.abs(1200 * np.log2(gen_f0[both] / ref_f0[both])))), agreement


@functools.lru_cache(maxsize=1)
def _visqol_api():
    from visqol.api import VisqolApi

    api = VisqolApi()
    api.create(mode="audio")
    return api


def visqol_moslqo(reference: np.ndarray, generated: np.ndarray, sample_rate: int
                  ) -> tuple[float | None, str | None]:
    """(ViSQOL audio-mode MOS-LQO at 48 kHz, None) or (None, why it is missing), for two
    aligned signals."""
    librosa = load_librosa()

    try:
        api = _visqol_api()
    except ImportError:
        return None, ("visqol-python is not installed (pip install 'tnca_jax[metrics]'); "
                      "ViSQOL left out")
    reference, generated = (librosa.resample(x, orig_sr=sample_rate, target_sr=VISQOL_RATE)
                            .astype(np.float64) for x in (reference, generated))
    try:
        with np.errstate(all="ignore"):
            score = float(api.measure_from_arrays(reference, generated, VISQOL_RATE).moslqo)
    except ValueError as err:  # e.g. under ~1 s: fewer frames than one ViSQOL patch
        return None, f"ViSQOL cannot score this audio: {err}"
    if not math.isfinite(score):
        return None, "ViSQOL returned no score (is the generated audio silent?)"
    return score, None


def pesq_mos(reference: np.ndarray, generated: np.ndarray, sample_rate: int
             ) -> tuple[float | None, str | None]:
    """(wide-band PESQ MOS-LQO at 16 kHz, 1.04 to 4.64, None) or (None, why it is missing).
    A speech metric: on instrument notes it ranks vocoders, it is no absolute quality."""
    librosa = load_librosa()

    try:
        from pesq import PesqError, pesq
    except ImportError:
        return None, f"pesq is not installed ({PERCEPTUAL_EXTRA}); PESQ left out"
    reference, generated = (librosa.resample(x, orig_sr=sample_rate, target_sr=PESQ_RATE)
                            for x in (reference, generated))
    try:
        return float(pesq(PESQ_RATE, reference, generated, "wb")), None
    except PesqError as err:  # e.g. no utterance found in a quiet reference
        return None, f"PESQ cannot score this audio: {type(err).__name__}"


@functools.lru_cache(maxsize=1)
def _cdpam_model():
    import os

    # cdpam 0.0.6 pickles its checkpoint, which torch >= 2.6 refuses to load by default.
    os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    import warnings

    import cdpam

    with warnings.catch_warnings():  # torch's note that it loads the pickle as asked
        warnings.simplefilter("ignore", UserWarning)
        return cdpam.CDPAM(dev="cpu")


def cdpam_distance(reference: np.ndarray, generated: np.ndarray, sample_rate: int
                   ) -> tuple[float | None, str | None]:
    """(CDPAM distance, 0 for identical audio, lower is better, None) or (None, why it is
    missing): the learned perceptual distance of Manocha et al. 2021 at 22.05 kHz, on CPU."""
    librosa = load_librosa()

    try:
        model = _cdpam_model()
    except ImportError as err:
        return None, f"cdpam is not installed ({err}; {PERCEPTUAL_EXTRA}); CDPAM left out"
    import torch

    pair = [np.round(librosa.resample(x, orig_sr=sample_rate, target_sr=CDPAM_RATE)
                     * 32768.0)[None].astype(np.float32) for x in (reference, generated)]
    with torch.no_grad():
        distance = model.forward(*pair)
    return float(np.asarray(distance).reshape(-1)[0]), None


# The metrics that score a pair of signals: name -> (function, its name in messages).
PAIR_METRICS: dict[str, tuple[Callable, str]] = {
    "visqol_moslqo": (visqol_moslqo, "ViSQOL"),
    "pesq_mos": (pesq_mos, "PESQ"),
    "cdpam_distance": (cdpam_distance, "CDPAM"),
}


# ------------------------------------------------------------------------ the worker
@dataclasses.dataclass(frozen=True)
class Task:
    """One call for the worker: `function(*args)`, its result sent back whole."""

    function: Callable[..., Any]
    args: tuple


@dataclasses.dataclass(frozen=True)
class Missing:
    """A task that gave no result, and why."""

    why: str


def serve(descriptor: int) -> None:
    """The worker's loop, on the socket `descriptor` inherited from its parent: run each task
    received, send back its result (or the exception's text, which is no crash), until told to
    stop (None) or its parent is gone. A task function's first call holds
    `numba_compile_lock`."""
    connection = Connection(descriptor)
    called: set[Callable[..., Any]] = set()
    try:
        while (task := connection.recv()) is not None:
            try:
                with (contextlib.nullcontext() if task.function in called
                      else numba_compile_lock()):
                    result = task.function(*task.args)
                called.add(task.function)
                connection.send(result)
            except Exception as err:
                connection.send(Missing(f"{type(err).__name__}: {err}"))
    except (EOFError, OSError):  # the parent ended (exit, Ctrl-C): nothing left to do
        return


class _Worker:
    """One worker process (a fresh interpreter) and the socket to it.

    It runs in a session of its own: a terminal's Ctrl-C (SIGINT to the foreground process
    group) reaches only the parent, which handles it (`tnca_jax.interrupts`) and kills the
    worker, so no traceback comes from the worker, even while it is still importing."""

    def __init__(self):
        ours, theirs = socket.socketpair()
        # The parent's import path, as multiprocessing's spawn gives it: a task's function
        # is sent by name and must import there too.
        start = (f"import sys; sys.path[:] = {sys.path!r}; "
                 f"from {__name__} import serve; serve({theirs.fileno()})")
        with theirs:
            self.process = subprocess.Popen([sys.executable, "-c", start],
                                            pass_fds=(theirs.fileno(),), start_new_session=True)
        self.connection = Connection(ours.detach())
        interrupts.register(self.process.kill)  # Ctrl-C: do not finish the task alone
        atexit.register(self.stop)  # nor when the parent ends in the middle of one

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def run(self, task: Task, timeout: float) -> Any:
        """The task's result, or Missing when the worker died or timed out (it is then
        stopped for good)."""
        try:
            self.connection.send(task)
            if self.connection.poll(timeout):  # a result, or the end of a dead worker's pipe
                return self.connection.recv()
            timed_out = True
        except (EOFError, OSError):
            timed_out = False
        self.stop()
        if timed_out:
            return Missing(f"it gave no result within {timeout:g} s")
        return Missing(f"its process died ({_exit_reason(self.process.returncode)})")

    def stop(self) -> None:
        interrupts.unregister(self.process.kill)
        atexit.unregister(self.stop)
        if self.alive:
            self.process.kill()
        self.process.wait()
        self.connection.close()


def _exit_reason(code: int | None) -> str:
    if code is None or code >= 0:
        return f"exit status {code}"
    try:
        return f"signal {signal.Signals(-code).name}"
    except ValueError:
        return f"signal {-code}"


_worker: _Worker | None = None


def run_tasks(tasks: Sequence[Task], *, timeout: float = TIMEOUT_S) -> list[Any]:
    """Each task's result, in order, computed in the worker (a Missing where it gave none).
    A function that took its worker down is not run again in this batch: the same native
    crash would repeat, and each costs a new worker."""
    global _worker
    results = []
    failed: dict[Callable, Missing] = {}
    for task in tasks:
        if task.function in failed:
            results.append(failed[task.function])
            continue
        if _worker is None or not _worker.alive:
            _worker = _Worker()
        result = _worker.run(task, timeout)
        if isinstance(result, Missing) and not _worker.alive:
            _worker = None
            failed[task.function] = result
        results.append(result)
    return results


# ------------------------------------------------------------------------ the metrics
def measure(reference: np.ndarray, generated: Sequence[np.ndarray], sample_rate: int,
            names: set[str]) -> list[tuple[dict, dict]]:
    """The optional metrics in `names` (f0_error_cents, voiced_agreement and the
    `PAIR_METRICS`) of each generated signal against `reference` (the longer of each pair cut
    to the shorter): per signal, (values, notes), a value None with a note where it is missing.
    The two pYIN metrics come together; pYIN runs once per signal (for the reference, once per
    length)."""
    f0 = bool(names & {"f0_error_cents", "voiced_agreement"})
    scored = [name for name in PAIR_METRICS if name in names]
    pairs = [(reference[: min(len(reference), len(x))], x[: min(len(reference), len(x))])
             for x in generated]
    lengths = sorted({len(ref) for ref, _ in pairs})
    tasks = []
    if f0:
        tasks += [Task(pyin_f0, (reference[:n], sample_rate)) for n in lengths]
        tasks += [Task(pyin_f0, (gen, sample_rate)) for _, gen in pairs]
    for name in scored:
        tasks += [Task(PAIR_METRICS[name][0], (ref, gen, sample_rate)) for ref, gen in pairs]
    results = run_tasks(tasks)
    ref_f0 = dict(zip(lengths, results[: len(lengths)], strict=True)) if f0 else {}
    gen_f0 = results[len(lengths): len(lengths) + len(pairs)] if f0 else []
    first = len(lengths) + len(pairs) if f0 else 0
    scores = {name: results[first + i * len(pairs): first + (i + 1) * len(pairs)]
              for i, name in enumerate(scored)}
    out = []
    for i, (ref, _) in enumerate(pairs):
        values: dict = {}
        notes: dict = {}
        if f0:
            failed = next((r for r in (ref_f0[len(ref)], gen_f0[i]) if isinstance(r, Missing)),
                          None)
            if failed is not None:
                values["f0_error_cents"] = values["voiced_agreement"] = None
                notes["f0_error_cents"] = notes["voiced_agreement"] = (
                    f"left out: pYIN failed ({failed.why})")
            else:
                values["f0_error_cents"], values["voiced_agreement"] = f0_agreement(
                    ref_f0[len(ref)], gen_f0[i])
                if values["f0_error_cents"] is None:
                    notes["f0_error_cents"] = "no frame is voiced in both signals"
        for name in scored:
            result = scores[name][i]
            if isinstance(result, Missing):
                values[name] = None
                notes[name] = f"left out: {PAIR_METRICS[name][1]} failed ({result.why})"
            else:
                values[name], why = result
                if why:
                    notes[name] = why
        out.append((values, notes))
    return out
