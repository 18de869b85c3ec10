"""Where a quick job's train step spends its time: `jax.profiler` over a few iterations, each XLA
operation labelled with the JAX primitive it came from and whether it runs in the forward or
the backward pass (the compiled step's HLO metadata).

  python -m bench.step_profile                   # the many-note quick step
  python -m bench.step_profile --job=note        # the quick violin step

Prints JSON lines: one per (pass, primitive) group, largest first (milliseconds per
iteration, share of all operation time, how many operations and calls), then the ten largest
single operations, then a summary: seconds per iteration (timed without the profiler), the
summed operation time per iteration (more than the wall time where operations ran side by
side on several threads; control flow, whose time contains its body's, is left out) and the
share of the matrix products. Profiling slows each iteration a little; the shares hold.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import tempfile
import time
from pathlib import Path

CONTROL_FLOW = {"while", "conditional", "call"}
MATMUL_FUSIONS = ("__ynn_fusion", "__xnn_fusion", "__onednn_fusion")  # XLA:CPU's library calls
# `%name = <type> opcode(operands...), ..., metadata={op_name="jit(f)/jvp()/.../primitive"`
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%([\w.\-]+)\s*=\s*(.*)$")
_OPCODE = re.compile(r"\s([a-z][a-z0-9\-]*)\((?:%|\))")
_OP_NAME = re.compile(r'op_name="([^"]*)"')


def hlo_labels(hlo_text: str) -> dict[str, dict]:
    """Each instruction of optimised HLO text -> {"opcode", "primitive", "pass"}: "dot_general"
    for a matrix product (a dot, or a fusion XLA hands to a matmul library), else the JAX
    primitive its metadata names (the last part of op_name; "" without metadata), and
    "backward" where JAX transposed it (the gradient), else "forward"."""
    labels = {}
    for line in hlo_text.splitlines():
        instruction = _INSTRUCTION.match(line)
        if not instruction:
            continue
        name, rest = instruction.groups()
        opcode = _OPCODE.search(rest)
        op_name = _OP_NAME.search(rest)
        path = op_name.group(1) if op_name else ""
        opcode = opcode.group(1) if opcode else ""
        matmul = opcode == "dot" or any(kind in rest for kind in MATMUL_FUSIONS)
        labels[name] = {"opcode": opcode,
                        "primitive": "dot_general" if matmul else path.rsplit("/", 1)[-1],
                        "pass": "backward" if "transpose(" in path else "forward"}
    return labels


def profile_events(trace_dir: Path) -> tuple[collections.Counter, collections.Counter]:
    """(nanoseconds, calls) per event name over the profile in `trace_dir`: XLA's operations
    (on whichever thread ran them) and other events, which `summarise` leaves out."""
    from jax.profiler import ProfileData

    times: collections.Counter = collections.Counter()
    calls: collections.Counter = collections.Counter()
    for path in trace_dir.rglob("*.xplane.pb"):
        for plane in ProfileData.from_file(str(path)).planes:
            for line in plane.lines:
                for event in line.events:
                    times[event.name] += event.duration_ns
                    calls[event.name] += 1
    return times, calls


def summarise(times: collections.Counter, labels: dict[str, dict], calls: collections.Counter,
              iterations: int) -> tuple[list[dict], list[dict], float]:
    """(groups by pass and primitive, the ten largest operations, summed ms per iteration) of
    the step's own operations (`labels`), control flow left out."""
    rows = {name: ns for name, ns in times.items()
            if name in labels and labels[name]["opcode"] not in CONTROL_FLOW}
    total = sum(rows.values()) or 1
    groups: dict[tuple[str, str], list] = collections.defaultdict(lambda: [0, 0, 0])
    for name, ns in rows.items():
        group = groups[labels[name]["pass"], labels[name]["primitive"] or "?"]
        group[0] += ns
        group[1] += 1
        group[2] += calls[name]

    def ms(ns: float) -> float:
        return round(ns / iterations / 1e6, 3)

    by_group = [{"pass": p, "primitive": q, "ms_per_iteration": ms(ns),
                 "share": round(ns / total, 4), "operations": n,
                 "calls_per_iteration": round(c / iterations, 1)}
                for (p, q), (ns, n, c) in sorted(groups.items(), key=lambda g: -g[1][0])]
    largest = [{"operation": name, **labels[name], "ms_per_iteration": ms(ns),
                "share": round(ns / total, 4)}
               for name, ns in sorted(rows.items(), key=lambda r: -r[1])[:10]]
    return by_group, largest, total / iterations / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--job", choices=("instruments", "note"), default="instruments")
    parser.add_argument("--iterations", type=int, default=5)
    args = parser.parse_args()

    import jax

    from bench.step_speed import WARMUP, quick_program
    from bench.throughput import cpu_model

    program, state, carry = quick_program(args.job)

    def run(iterations: int) -> None:
        nonlocal state, carry
        for _ in range(iterations):
            state, carry, metrics = program.step(state, carry)
            float(metrics["loss"])  # waits for the step

    run(WARMUP)
    start = time.perf_counter()
    run(args.iterations)
    seconds = (time.perf_counter() - start) / args.iterations
    with tempfile.TemporaryDirectory() as trace:
        jax.profiler.start_trace(trace)
        run(args.iterations)
        jax.profiler.stop_trace()
        times, calls = profile_events(Path(trace))
    labels = hlo_labels(program.step.as_text())
    groups, largest, op_ms = summarise(times, labels, calls, args.iterations)
    about = {"job": args.job, "config": "quick", "cpu": cpu_model(),
             "host_cores": os.cpu_count(), "backend": jax.default_backend()}
    for row in groups + largest:
        print(json.dumps(row), flush=True)
    dots = sum(g["ms_per_iteration"] for g in groups if g["primitive"] == "dot_general")
    print(json.dumps({"summary": True, "seconds_per_iteration": round(seconds, 4),
                      "op_ms_per_iteration": round(op_ms, 1),
                      "dot_general_share": round(dots / op_ms, 4), **about}), flush=True)


if __name__ == "__main__":
    main()
