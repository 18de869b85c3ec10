"""The train step of a quick job in this checkout against the same step at another commit, in
one run: iterations per second and the losses of both.

  python -m bench.step_speed --against=3346c53                  # the many-note quick step
  python -m bench.step_speed --against=3346c53 --job=note       # the quick violin step

Each side runs in its own process (`--worker`, with the other commit's files first on
PYTHONPATH: its `tnca_jax` and `configs`), on the same recordings and seed; the sides take
turns (`--rounds`, who goes first alternating), so that a busy machine slows both alike. Each
worker compiles the job's step (`tnca_jax.tnca_training.plan_training`), runs `WARMUP`
iterations, then times `--iterations`, one at a time (the loss read back each time). Prints
one JSON line per side (iterations per second, median over all its timed iterations; each
round's median; its losses) and one comparison: the speed-up, each round's, and the largest
difference between the two sides' losses (0: the same computation, so the same trained model
and the same results).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WARMUP = 2  # untimed iterations (the first runs the compiled step's one-off work)


def quick_program(job: str) -> tuple:
    """(compiled train program, fresh train state, fresh carry) of `job`'s quick config on its
    recordings, with whatever `tnca_jax` and `configs` are first on the path."""
    import importlib

    from tnca_jax.modes import load_notes, new_inverse
    from tnca_jax.settings import read_tnca
    from tnca_jax.tnca_training import plan_training

    config_module = "configs.instruments" if job == "instruments" else "configs.violin"
    settings = read_tnca(importlib.import_module(config_module).get_config("quick"))
    notes = load_notes(settings, new_inverse(settings))
    program = plan_training(settings, notes, lambda workdir: None)
    _, state, carry = program.init()
    return program, state, carry


def worker(job: str, iterations: int) -> dict:
    """Time `iterations` steps of `job`'s quick config with whatever `tnca_jax` is first on the
    path."""
    program, state, carry = quick_program(job)
    losses, seconds = [], []
    for _ in range(WARMUP + iterations):
        start = time.perf_counter()
        state, carry, metrics = program.step(state, carry)
        losses.append(float(metrics["loss"]))  # waits for the step
        seconds.append(time.perf_counter() - start)
    return {"seconds": seconds[WARMUP:], "losses": losses}


def _export(ref: str, destination: Path) -> None:
    """The files of commit `ref` of this repository into `destination`."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", ref],
                             capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as files:
        files.extractall(destination, filter="data")


def _run_worker(tree: Path, job: str, iterations: int) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(tree), *filter(None, [os.environ.get("PYTHONPATH")])])}
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker",
                           f"--job={job}", f"--iterations={iterations}"],
                          cwd=tree, env=env, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        sys.exit(f"error: the worker in {tree} failed: {done.stderr.strip().splitlines()[-1]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--against", help="the commit to compare with (required)")
    parser.add_argument("--job", choices=("instruments", "note"), default="instruments")
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.job, args.iterations)))
        return
    if not args.against:
        parser.error("--against=COMMIT is required")

    from bench.throughput import cpu_model

    with tempfile.TemporaryDirectory() as other:
        try:
            _export(args.against, Path(other))
        except subprocess.CalledProcessError as err:
            sys.exit(f"error: no commit {args.against!r} here ({err.stderr.decode().strip()})")
        sides = {"this checkout": ROOT, args.against: Path(other)}
        runs: dict[str, list[dict]] = {name: [] for name in sides}
        order = list(sides.items())
        for round_ in range(args.rounds):  # who goes first alternates
            for name, tree in order[round_ % 2:] + order[:round_ % 2]:
                runs[name].append(_run_worker(tree, args.job, args.iterations))
    about = {"job": args.job, "config": "quick", "iterations": args.iterations,
             "rounds": args.rounds, "cpu": cpu_model(), "host_cores": os.cpu_count()}
    speed, round_seconds = {}, {}
    for name, results in runs.items():
        seconds = [s for result in results for s in result["seconds"]]
        speed[name] = 1 / statistics.median(seconds)
        round_seconds[name] = [statistics.median(result["seconds"]) for result in results]
        print(json.dumps({"side": name, "iterations_per_s": speed[name],
                          "seconds_per_iteration": statistics.median(seconds),
                          "round_seconds": round_seconds[name],
                          "losses": results[0]["losses"], **about}), flush=True)
    mine, theirs = runs["this checkout"][0]["losses"], runs[args.against][0]["losses"]
    print(json.dumps({"side": "comparison", "against": args.against,
                      "speedup": speed["this checkout"] / speed[args.against],
                      "round_speedups": [other / this for this, other in zip(
                          round_seconds["this checkout"], round_seconds[args.against],
                          strict=True)],
                      "max_loss_difference": max(abs(a - b) for a, b in zip(mine, theirs,
                                                                            strict=True)),
                      **about}), flush=True)


if __name__ == "__main__":
    main()
