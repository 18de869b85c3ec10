"""The train step of a quick job in this checkout against the same step at another commit, in
one run: iterations per second and the losses of both.

  python -m bench.step_speed --against=3346c53                  # the many-note quick step
  python -m bench.step_speed --against=3346c53 --job=note       # the quick violin step

Each side runs in a process of its own (`--worker`, with the other commit's files first on
PYTHONPATH: its `tnca_jax` and `configs`), on the same recordings and seed. Both compile the
job's step (`tnca_jax.tnca_training.plan_training`) and run `WARMUP` iterations, then they
take short turns (`--rounds` of `--iterations` each, who goes first alternating, the other
idle), the model training on across turns: this virtual machine's speed drifts by tens of
percent over seconds to minutes, and short alternating turns slow both sides alike (a whole
process per side and round, as before, left single rounds between 0.8x and 1.3x). Prints one
JSON line per side (iterations per second, median over all its timed iterations; each turn's
median; its losses) and one comparison: the speed-up, each round's, and the largest
difference between the two sides' losses (0: the same computation, so the same trained model
and the same results).
"""

from __future__ import annotations

import argparse
import contextlib
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
from typing import IO

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


def serve(job: str) -> None:
    """Compile `job`'s quick step with whatever `tnca_jax` is first on the path, run `WARMUP`
    iterations, print "ready", then for each line N read from stdin time N more iterations,
    one at a time (the loss read back each time), and print their seconds and losses as one
    JSON line. The model trains on across turns, so both sides see the same iterations."""
    program, state, carry = quick_program(job)
    for _ in range(WARMUP):
        state, carry, metrics = program.step(state, carry)
        float(metrics["loss"])  # waits for the step
    print("ready", flush=True)
    for line in sys.stdin:
        losses, seconds = [], []
        for _ in range(int(line)):
            start = time.perf_counter()
            state, carry, metrics = program.step(state, carry)
            losses.append(float(metrics["loss"]))  # waits for the step
            seconds.append(time.perf_counter() - start)
        print(json.dumps({"seconds": seconds, "losses": losses}), flush=True)


def _export(ref: str, destination: Path) -> None:
    """The files of commit `ref` of this repository into `destination`."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", ref],
                             capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as files:
        files.extractall(destination, filter="data")


class Worker:
    """One side's `serve` process, started on the files of `tree` (its stderr into `errors`)."""

    def __init__(self, tree: Path, job: str, errors: IO[str]):
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(tree), *filter(None, [os.environ.get("PYTHONPATH")])])}
        self.tree, self.errors = tree, errors
        self.process = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--worker", f"--job={job}"],
            cwd=tree, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self.errors, text=True)

    def _answer(self, start: str) -> str:
        """The worker's next stdout line beginning with `start` (anything else a library
        printed is skipped); its stderr's last line as the error when it ended instead."""
        while line := self.process.stdout.readline():
            if line.startswith(start):
                return line
        self.process.wait()
        self.errors.seek(0)
        last = (self.errors.read().strip().splitlines() or ["no output"])[-1]
        sys.exit(f"error: the worker in {self.tree} failed: {last}")

    def ready(self) -> None:
        """Wait until the worker has compiled and warmed up."""
        self._answer("ready")

    def turn(self, iterations: int) -> dict:
        """Time `iterations` more iterations: {"seconds": [...], "losses": [...]}."""
        self.process.stdin.write(f"{iterations}\n")
        self.process.stdin.flush()
        return json.loads(self._answer("{"))

    def close(self) -> None:
        """End the worker: its stdin closed, it stops; killed if it has not after 10 s (still
        compiling when the other side failed)."""
        with contextlib.suppress(BrokenPipeError):
            self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--against", help="the commit to compare with (required)")
    parser.add_argument("--job", choices=("instruments", "note"), default="instruments")
    parser.add_argument("--iterations", type=int, default=2, help="timed iterations per turn")
    parser.add_argument("--rounds", type=int, default=10, help="turns of each side")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        serve(args.job)
        return
    if not args.against:
        parser.error("--against=COMMIT is required")
    if args.iterations < 1 or args.rounds < 1:
        parser.error("--iterations and --rounds must be at least 1")

    from bench.throughput import cpu_model

    with tempfile.TemporaryDirectory() as other, contextlib.ExitStack() as files:
        try:
            _export(args.against, Path(other))
        except subprocess.CalledProcessError as err:
            sys.exit(f"error: no commit {args.against!r} here ({err.stderr.decode().strip()})")
        sides = {"this checkout": ROOT, args.against: Path(other)}
        workers = {name: Worker(tree, args.job, files.enter_context(
            tempfile.TemporaryFile(mode="w+"))) for name, tree in sides.items()}
        try:
            for worker in workers.values():  # both compile side by side, then take turns
                worker.ready()
            runs: dict[str, list[dict]] = {name: [] for name in sides}
            order = list(workers.items())
            for round_ in range(args.rounds):  # who goes first alternates
                for name, worker in order[round_ % 2:] + order[:round_ % 2]:
                    runs[name].append(worker.turn(args.iterations))
        finally:
            for worker in workers.values():
                worker.close()
    about = {"job": args.job, "config": "quick", "iterations": args.iterations,
             "rounds": args.rounds, "cpu": cpu_model(), "host_cores": os.cpu_count(),
             "usable_cores": len(os.sched_getaffinity(0))}  # fewer under taskset
    speed, round_seconds = {}, {}
    for name, results in runs.items():
        seconds = [s for result in results for s in result["seconds"]]
        speed[name] = 1 / statistics.median(seconds)
        round_seconds[name] = [statistics.median(result["seconds"]) for result in results]
        print(json.dumps({"side": name, "iterations_per_s": speed[name],
                          "seconds_per_iteration": statistics.median(seconds),
                          "round_seconds": round_seconds[name],
                          "losses": [loss for result in results for loss in result["losses"]],
                          **about}), flush=True)
    mine, theirs = ([loss for result in runs[name] for loss in result["losses"]]
                    for name in ("this checkout", args.against))
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
