"""Training throughput of tnca_jax vs a PyTorch reference NCA, and generation time, in one run.

  python -m bench.throughput            # full size (GPU): 128x256 grid, batch 8, 64 steps
  python -m bench.throughput --small    # CPU size, a few minutes: 64x64, batch 4, 32 steps
  python -m bench.throughput --prototype  # the prototype's workload: 80x89, batch 1, 96 steps

Prints one JSON object per line: `impl` ("tnca_jax", "torch_eager", "torch_compile",
"generate_4s", "ratio"), `cell_updates_per_s` (batch x steps x grid cells per second of
training, forward + backward + Adam; median over the timed iterations), seconds per
iteration, peak memory, the JAX and torch versions, the device, `devices` (how many the
tnca_jax step splits its batch over: all of them, as `tnca_jax.training.train` does), and for
tnca_jax the achieved GFLOP/s of the count below. The tnca_jax side trains on a random target:
one note of `--bands` mel bands (a contract like the default one, with that many) and
`--frames` frames.

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
import resource
import statistics
import time
from pathlib import Path

import jax
import numpy as np


def _peak_memory_bytes() -> int:
    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        return int(stats["peak_bytes_in_use"])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # host RSS (CPU)


def _time(fn, iterations: int, sync) -> float:
    """Median seconds per call over `iterations` calls, each synchronised, after one warm-up
    call (the median resists a stray slow call on a shared machine)."""
    sync(fn())
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        sync(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


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


def bench_tnca(args) -> dict:
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

    seconds = _time(one, args.iterations, jax.block_until_ready)
    return {"impl": "tnca_jax", "seconds_per_iteration": seconds,
            "peak_memory_bytes": _peak_memory_bytes()}


def bench_torch(args, compiled: bool) -> dict:
    import torch

    from bench.torch_nca import TorchNCA, make_step

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = TorchNCA(args.bands, args.channels, args.hidden, 0.5).to(device)
    target = torch.rand(args.batch, args.bands, args.frames, device=device)
    seed = torch.zeros(args.batch, args.channels, args.bands, args.frames, device=device)
    seed[:, 1:, :, ::8] = 1.0
    step = make_step(model, target, args.steps, compiled)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()

    def sync(_):
        if device == "cuda":
            torch.cuda.synchronize()

    seconds = _time(lambda: step(seed), args.iterations, sync)
    peak = (torch.cuda.max_memory_allocated() if device == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"impl": "torch_compile" if compiled else "torch_eager",
            "seconds_per_iteration": seconds, "peak_memory_bytes": int(peak),
            "torch_device": device}


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
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch reference")
    args = parser.parse_args()
    if args.small:
        args.bands, args.frames, args.batch, args.steps, args.iterations = 64, 64, 4, 32, 9
    if args.prototype:
        args.bands, args.frames, args.batch, args.steps = 80, 89, 1, 96

    size = {"bands": args.bands, "frames": args.frames, "batch": args.batch,
            "steps": args.steps, "channels": args.channels, "hidden": args.hidden,
            "device": str(jax.devices()[0].device_kind), "devices": jax.device_count(),
            "cpu": cpu_model(), "host_cores": os.cpu_count(), "jax": jax.__version__}
    if not args.no_torch:
        import torch

        size["torch"] = torch.__version__
    cells = args.batch * args.steps * args.bands * args.frames
    results = [bench_tnca(args)]
    if not args.no_torch:
        results.append(bench_torch(args, compiled=False))
        if not args.no_compile:
            results.append(bench_torch(args, compiled=True))
    results[0]["flops_per_cell_step"] = flops_per_cell_step(args.channels, args.hidden)
    results[0]["gflop_per_s"] = (results[0]["flops_per_cell_step"] * cells
                                 / results[0]["seconds_per_iteration"] / 1e9)
    for result in results:
        result["cell_updates_per_s"] = cells / result["seconds_per_iteration"]
        if args.prototype:
            result["seconds_for_8000_iterations"] = 8000 * result["seconds_per_iteration"]
        print(json.dumps({**result, **size}), flush=True)
    for reference in results[1:]:
        print(json.dumps({"impl": "ratio", "of": f"tnca_jax/{reference['impl']}",
                          "cell_updates_per_s": results[0]["cell_updates_per_s"],
                          "ratio": results[0]["cell_updates_per_s"]
                          / reference["cell_updates_per_s"], **size}), flush=True)
    print(json.dumps({**bench_generate(args), "device": size["device"]}), flush=True)


if __name__ == "__main__":
    main()
