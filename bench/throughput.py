"""Training throughput of tnca_jax vs a PyTorch reference NCA, and generation time, in one run.

  python -m bench.throughput            # full size (GPU): 128x256 grid, batch 8, 64 steps
  python -m bench.throughput --small    # CPU size, a few minutes: 64x64, batch 4, 32 steps
  python -m bench.throughput --prototype  # the prototype's workload: 80x89, batch 1, 96 steps

Prints one JSON object per line: `impl` ("tnca_jax", "torch_eager", "torch_compile",
"generate_4s", "ratio"), `cell_updates_per_s` (batch x steps x grid cells per second of
training, forward + backward + Adam), seconds per iteration, peak memory, the JAX and torch
versions, the device, `devices` (how many the tnca_jax step splits its batch over: all of
them, as `tnca_jax.training.train` does), and for tnca_jax the achieved GFLOP/s of the count
below. The tnca_jax side trains on a random target: one note of `--bands` mel bands (a
contract like the default one, with that many) and `--frames` frames.

The implementations take turns (`--rounds`; in each round `--iterations` timed iterations of
each, in an order rotated every round, after one warm-up call each before the first round),
so that a machine whose speed drifts (a shared virtual machine) slows them alike: seconds per
iteration is the median of the rounds' medians, and each "ratio" line holds the ratio of every
round (`rounds`) and their median (`ratio`), also against the faster PyTorch of each round
("tnca_jax/faster_torch").
Peak memory (`memory`): on a GPU the allocator's peak; on a CPU the peak resident memory of a
separate process that prepares only that implementation and runs two iterations of it
(`--memory-of`), so that no implementation is charged with what another left resident.

The two numbers per iteration (16 channels C, hidden H = 128, fire rate r = 0.5; per cell-step,
i.e. one cell through one growth step, forward and backward). tnca_jax runs the MLP on the
firing cells only (`tnca_jax.cells.growth_step`), since a cell that does not fire discards its
update; the PyTorch reference computes every cell, as Growing NCA is usually written (the
model, its randomness and its gradients are the same):
- FLOPs (`flops_per_cell_step`): perception 2 x 22 taps x C = 0.7 k forward and 0.7 k for its
  transpose backward, for every cell; per firing cell, forward hidden layer 2 x 4C x H = 16.4 k
  and output layer 2 x H x C = 4.1 k, backward the hidden layer recomputed (16.4 k) and four
  dots (41.0 k), plus activations and masks: 41 kFLOP per cell-step at r = 0.5 (81 k if every
  cell were computed). At --small (524,288 cell-steps) 21.5 GFLOP per iteration.
- Bytes that must move: the state (C floats = 64 B) read and written forward, its residual
  (state + 1-byte living mask) written, read back and its gradient read and written backward:
  about 386 B per cell-step, 0.2 GB per iteration at --small. At ~20 GB/s that is 10 ms against
  the ~100 ms the FLOPs take on 2 cores: the step is bound by arithmetic, not memory (the
  hidden activations are recomputed, never stored).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np


class Runner(NamedTuple):
    """One implementation's training iteration, ready to time (compiled on its first call)."""

    impl: str
    call: Callable[[], Any]
    sync: Callable[[Any], Any]
    # On an accelerator: runs one more iteration and returns its allocator's peak bytes.
    device_peak: Callable[[], int] | None
    info: dict


def peak_memory(runner: Runner, argv: list[str]) -> tuple[int, str]:
    """(bytes, how measured) of `runner`'s peak memory (see the module docstring)."""
    if runner.device_peak is not None:
        return runner.device_peak(), "device_allocator_peak"
    done = subprocess.run([sys.executable, "-m", "bench.throughput", *argv,
                           f"--memory-of={runner.impl}"], capture_output=True, text=True,
                          check=True)
    return json.loads(done.stdout.splitlines()[-1])["peak_memory_bytes"], "own_process_peak_rss"


def own_process_peak(runner: Runner) -> dict:
    """This process's peak resident memory after a warm-up and one more iteration of the one
    implementation it prepared: Linux's high-water mark of this program (ru_maxrss would
    start from the parent's resident memory, which a forked child inherits), else ru_maxrss."""
    for _ in range(2):
        runner.sync(runner.call())
    try:
        status = Path("/proc/self/status").read_text()
        peak = int(re.search(r"^VmHWM:\s*(\d+) kB", status, re.MULTILINE).group(1)) * 1024
    except (OSError, AttributeError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"impl": runner.impl, "peak_memory_bytes": peak}


def take_turns(runners: list[Runner], iterations: int, rounds: int) -> dict[str, list[float]]:
    """Each implementation's median seconds per iteration in each round: one warm-up call
    each, then `rounds` rounds in which each times `iterations` synchronised calls in turn
    (the order rotated each round, so that none always follows the same one)."""
    for runner in runners:
        runner.sync(runner.call())
    medians: dict[str, list[float]] = {runner.impl: [] for runner in runners}
    for round_ in range(rounds):
        shift = round_ % len(runners)  # who goes first changes from round to round
        for runner in runners[shift:] + runners[:shift]:
            times = []
            for _ in range(iterations):
                start = time.perf_counter()
                runner.sync(runner.call())
                times.append(time.perf_counter() - start)
            medians[runner.impl].append(statistics.median(times))
    return medians


def _time(fn, iterations: int, sync) -> float:
    """Median seconds per call over `iterations` calls, each synchronised, after one warm-up
    call (the median resists a stray slow call on a shared machine)."""
    return take_turns([Runner("", fn, sync, None, {})], iterations, 1)[""][0]


def ratio_lines(medians: dict[str, list[float]]) -> list[dict]:
    """tnca_jax's speed over each reference's (and over the faster PyTorch of each round, when
    both ran), per round, and the median of the rounds."""
    mine = np.array(medians["tnca_jax"])
    references = {impl: np.array(seconds) for impl, seconds in medians.items()
                  if impl != "tnca_jax"}
    if {"torch_eager", "torch_compile"} <= set(references):
        references["faster_torch"] = np.minimum(references["torch_eager"],
                                                references["torch_compile"])
    lines = []
    for impl, seconds in references.items():
        rounds = seconds / mine
        lines.append({"impl": "ratio", "of": f"tnca_jax/{impl}",
                      "ratio": float(np.median(rounds)), "rounds": rounds.tolist()})
    return lines


def cpu_model() -> str:
    """The host CPU's model name (ratios between frameworks differ between CPU models)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def flops_per_cell_step(channels: int, hidden: int, fire_rate: float = 0.5) -> float:
    """The count of the module docstring: forward + written-out backward, per cell-step."""
    perception = 2 * 22 * channels  # every cell, forward and transposed backward
    hidden_layer, out = 2 * 4 * channels * hidden, 2 * hidden * channels
    per_firing_cell = (hidden_layer + out + 3 * hidden  # forward
                       + hidden_layer + hidden  # recomputed
                       + 2 * out + 2 * hidden_layer + 4 * hidden)  # backward dots and rest
    return 2 * perception + 16 * channels + fire_rate * per_firing_cell


def random_note_set(bands: int, frames: int):
    """A `NoteSet` of one unconditioned note whose normalised log-mel is uniform noise, `bands`
    bands (under the default contract's framing) by `frames` frames."""
    from tnca_jax.contract import get_contract
    from tnca_jax.notes import Note, NoteSet
    from tnca_jax.representations import get_representation

    contract = get_contract({"name": "bench", "sample_rate": 22050, "n_fft": 2048,
                             "hop_length": 512, "win_length": 2048, "n_mels": bands,
                             "magnitude_power": 2, "log_floor": 1e-10})
    representation = get_representation("mel", contract)
    unit = jax.random.uniform(jax.random.key(0), (1, bands, frames))
    note = Note(name="random", path="", instrument="", midi=None, pitch_source="",
                held_out=False, loudness_db=0.0, audio=np.zeros(0, np.float32),
                features=np.asarray(representation.from_unit(unit)))
    return NoteSet(notes=(note,), instruments=(), representation=representation,
                   grid_frames=frames, conditioned=False)


def prepare_tnca(args) -> Runner:
    from configs.violin import get_config
    from tnca_jax.settings import read_tnca
    from tnca_jax.tnca_training import Targets, create_train_state, make_train_step
    from tnca_jax.training import data_mesh

    config = get_config()
    config.model.channels, config.model.hidden = args.channels, args.hidden
    config.model.seed_spacing = 8
    config.train.batch_size = args.batch
    config.train.pool_size = 2 * args.batch
    config.train.min_growth_steps = config.train.max_growth_steps = args.steps
    settings = read_tnca(config)
    notes = random_note_set(args.bands, args.frames)
    targets = Targets.create(notes)
    mesh = data_mesh({"train.batch_size": args.batch, "train.pool_size": 2 * args.batch})
    graphdefs, state, pool = create_train_state(settings, notes, targets, mesh=mesh)
    step = make_train_step(graphdefs, settings, targets, notes.representation, mesh)
    holder = {"state": state, "pool": pool}

    def one():
        holder["state"], holder["pool"], metrics = step(holder["state"], holder["pool"])
        return metrics["loss"]

    def device_peak() -> int:  # JAX's allocator: its peak since the start (JAX's use only)
        jax.block_until_ready(one())
        return int(jax.devices()[0].memory_stats()["peak_bytes_in_use"])

    on_cpu = "peak_bytes_in_use" not in (jax.devices()[0].memory_stats() or {})
    return Runner("tnca_jax", one, jax.block_until_ready, None if on_cpu else device_peak, {})


def prepare_torch(args, compiled: bool) -> Runner:
    import torch

    from bench.torch_nca import TorchNCA, make_step

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = TorchNCA(args.bands, args.channels, args.hidden, 0.5).to(device)
    target = torch.rand(args.batch, args.bands, args.frames, device=device)
    seed = torch.zeros(args.batch, args.channels, args.bands, args.frames, device=device)
    seed[:, 1:, :, ::8] = 1.0
    step = make_step(model, target, args.steps, compiled)

    def sync(_):
        if device == "cuda":
            torch.cuda.synchronize()

    def device_peak() -> int:  # one iteration's: eager and compiled share the allocator
        torch.cuda.reset_peak_memory_stats()
        sync(step(seed))
        return int(torch.cuda.max_memory_allocated())

    return Runner("torch_compile" if compiled else "torch_eager", lambda: step(seed), sync,
                  device_peak if device == "cuda" else None, {"torch_device": device})


def bench_generate(args) -> dict:
    """Grow a 4 s note under the default contract and invert it (growth + Griffin-Lim)."""
    from flax import nnx

    from tnca_jax.contract import DEFAULT_CONTRACT
    from tnca_jax.inverse import GriffinLim
    from tnca_jax.model import TNCA, grow_stages
    from tnca_jax.representations import get_representation

    representation = get_representation("mel", DEFAULT_CONTRACT)
    contract = representation.contract
    frames = contract.num_frames(4 * contract.sample_rate)
    model = TNCA(contract.n_mels, channels=args.channels, hidden=args.hidden,
                 rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model)
    vocoder = GriffinLim(contract)

    @jax.jit
    def grow_and_shape(params, key):
        shown = grow_stages(graphdef, params, model.seed(frames), key, 64, 1)[-1]
        return representation.from_unit(shown)[:, 0]

    def one():
        return vocoder(grow_and_shape(params, jax.random.key(0)), contract=contract)

    seconds = _time(one, max(args.iterations // 2, 3), jax.block_until_ready)
    return {"impl": "generate_4s", "seconds": seconds, "frames": frames,
            "growth_steps": 64, "griffinlim_iterations": vocoder.iterations,
            "cell_updates_per_s": 64 * frames * contract.n_mels / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", action="store_true", help="CPU size: 64x64, batch 4, 32 steps")
    parser.add_argument("--prototype", action="store_true",
                        help="the prototype's workload: 80x89 grid, batch 1, 96 steps")
    parser.add_argument("--bands", type=int, default=128)
    parser.add_argument("--frames", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--iterations", type=int, default=4,
                        help="timed iterations of each implementation per round")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds in which the implementations take turns")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch reference")
    parser.add_argument("--memory-of", default=None, help=argparse.SUPPRESS)  # peak_memory's
    args = parser.parse_args()
    # Both frameworks share an accelerator in this process: JAX must not take 75% of its
    # memory up front (read when its backend starts, at the first jax.devices() below).
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    if args.small:
        args.bands, args.frames, args.batch, args.steps, args.rounds = 64, 64, 4, 32, 5
    if args.prototype:
        args.bands, args.frames, args.batch, args.steps = 80, 89, 1, 96

    size = {"bands": args.bands, "frames": args.frames, "batch": args.batch,
            "steps": args.steps, "channels": args.channels, "hidden": args.hidden,
            "device": str(jax.devices()[0].device_kind), "devices": jax.device_count(),
            "cpu": cpu_model(), "host_cores": os.cpu_count(), "jax": jax.__version__}
    if not args.no_torch:
        import torch

        size["torch"] = torch.__version__
    if args.iterations < 1 or args.rounds < 1:
        parser.error("--iterations and --rounds: give at least 1")
    if args.memory_of is not None:
        runner = (prepare_tnca(args) if args.memory_of == "tnca_jax"
                  else prepare_torch(args, compiled=args.memory_of == "torch_compile"))
        print(json.dumps(own_process_peak(runner)))
        return
    cells = args.batch * args.steps * args.bands * args.frames
    runners = [prepare_tnca(args)]
    if not args.no_torch:
        runners.append(prepare_torch(args, compiled=False))
        if not args.no_compile:
            runners.append(prepare_torch(args, compiled=True))
    medians = take_turns(runners, args.iterations, args.rounds)
    for runner in runners:
        seconds = statistics.median(medians[runner.impl])
        peak, measured = peak_memory(runner, sys.argv[1:])
        result = {"impl": runner.impl, "seconds_per_iteration": seconds,
                  "round_seconds": medians[runner.impl],
                  "cell_updates_per_s": cells / seconds, "peak_memory_bytes": peak,
                  "memory": measured, **runner.info}
        if runner.impl == "tnca_jax":
            result["flops_per_cell_step"] = flops_per_cell_step(args.channels, args.hidden)
            result["gflop_per_s"] = result["flops_per_cell_step"] * cells / seconds / 1e9
        if args.prototype:
            result["seconds_for_8000_iterations"] = 8000 * seconds
        print(json.dumps({**result, **size}), flush=True)
    for line in ratio_lines(medians):
        print(json.dumps({**line, "iterations_per_round": args.iterations, **size}),
              flush=True)
    print(json.dumps({**bench_generate(args), "device": size["device"]}), flush=True)


if __name__ == "__main__":
    main()
