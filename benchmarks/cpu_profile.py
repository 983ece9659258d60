"""Where XLA:CPU spends a forward pass: a jax.profiler trace of our jitted inference, each traced op (an HLO fusion
or a library call: XLA:CPU hands matrix products and convolutions to YNNPACK) classified by the HLO it runs.

    python benchmarks/cpu_profile.py [--models resnet50,swin_tiny] [--batch 8] [--calls 5]

Prints, per model, the share of the summed op time by kind (matrix products, attention products with their softmax,
norm + product fusions, convolutions, transposes/copies, elementwise, reductions, ...) and the ten slowest ops, and
writes JSON (default benchmarks/results/<date>-cpu-profile.json). Op times are the median over the calls of each
op's wall time; ops run by the two threads of one library call are counted once, independent ops that XLA runs at
the same time are each counted, so shares, not sums, are the point. Under other processes' load shares stay
meaningful while times do not.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import gzip
import json
import re
import statistics
import sys
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench  # noqa: E402


def hlo_ops_by_fusion(hlo_text: str) -> dict[str, collections.Counter]:
    """{fusion instruction name: Counter of the HLO opcodes of the computation it calls}."""
    bodies, current = {}, None
    for line in hlo_text.splitlines():
        header = re.match(r"^(?:ENTRY )?%?([\w.\-]+) .*\{$", line)
        if header:
            current = bodies[header.group(1)] = collections.Counter()
            continue
        opcode = re.search(r"= \S+ ([a-z][\w\-]*)\(", line)
        if current is not None and opcode:
            current[opcode.group(1)] += 1
    calls = {}
    for line in hlo_text.splitlines():
        call = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = \S+ .*?calls=%?([\w.\-]+)", line)
        if call and call.group(2) in bodies:
            calls[call.group(1)] = bodies[call.group(2)]
    return calls


def kind(ops: collections.Counter) -> str:
    if ops["dot"] >= 2:
        return "attention (two products + softmax)"
    if ops["dot"] and ops["reduce"]:
        return "norm + matrix product"
    if ops["dot"]:
        return "matrix product"
    if ops["convolution"]:
        return "convolution"
    if ops["transpose"] or ops["copy"]:
        return "transpose / copy"
    if ops["concatenate"] or ops["slice"] or ops["pad"]:
        return "roll / pad / slice"
    if ops["reduce"] or ops["reduce-window"]:
        return "reduction (norm statistics, pooling)"
    if ops["broadcast"] and sum(ops.values()) - ops["parameter"] - ops["constant"] <= ops["broadcast"] + 1:
        return "broadcast"
    return "elementwise"


def profile(name: str, batch: int, calls: int) -> dict:
    entry = bench.MODELS[name]
    pixels = jax.random.normal(jax.random.key(0), (batch, *entry.size, 3), jnp.float32)
    compiled, state, _ = bench.compile_inference(bench.build_model(entry, jnp.float32), pixels)
    for _ in range(2):
        jax.block_until_ready(compiled(state, pixels))
    with tempfile.TemporaryDirectory() as folder:
        with jax.profiler.trace(folder, create_perfetto_trace=True):
            for _ in range(calls):
                jax.block_until_ready(compiled(state, pixels))
        trace = json.load(gzip.open(next(Path(folder).rglob("*.trace.json.gz"))))
    durations = collections.defaultdict(list)
    for event in trace["traceEvents"]:
        if event.get("ph") == "X":
            durations[event["name"]].append(float(event["dur"]))
    fusions = hlo_ops_by_fusion(compiled.as_text())
    by_kind, count, ops = collections.Counter(), collections.Counter(), []
    for op, values in durations.items():
        if op not in fusions:
            continue
        seconds = statistics.median(values) / 1e6
        by_kind[kind(fusions[op])] += seconds
        count[kind(fusions[op])] += 1
        ops.append((seconds, op, kind(fusions[op])))
    total = sum(by_kind.values())
    return {
        "kinds": {k: {"ms": round(v * 1e3, 2), "share": round(v / total, 4), "ops": count[k]}
                  for k, v in by_kind.most_common()},
        "slowest": [{"op": op, "kind": k, "ms": round(s * 1e3, 2)} for s, op, k in sorted(ops, reverse=True)[:10]],
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="resnet50,swin_tiny")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    env = bench.environment(with_torch=False)
    print(f"{env}\nbatch {args.batch}, float32, inference")
    results = {}
    for name in args.models.split(","):
        results[name] = profile(name, args.batch, args.calls)
        print(f"\n{name}")
        for k, row in results[name]["kinds"].items():
            print(f"  {k:40s} {row['share']:6.1%}  {row['ms']:9.1f} ms  ({row['ops']} ops)")
        print("  slowest: " + ", ".join(f"{o['op']} ({o['kind']}) {o['ms']:.1f} ms" for o in results[name]["slowest"][:5]))
    output = args.output or (Path(__file__).parent / "results" / f"{datetime.date.today().isoformat()}-cpu-profile.json")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps({"environment": env, "batch": args.batch, "results": results}, indent=2) + "\n")
    print(f"\nwrote {output}")


if __name__ == "__main__":
    main()
