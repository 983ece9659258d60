"""Our throughput at an earlier revision against this checkout, in one process: whether a change made a family slower.

    python benchmarks/before_after.py --before 5ad5348 --threads 1
    python benchmarks/before_after.py --before 5ad5348 --models resnet50,swin_tiny --runs 3 --skip-train

The earlier revision's `jaxbackbones/` and `benchmarks/` are taken from git (`git archive`) into a temporary folder.
Each revision's models are built by its own `benchmarks/run.py` (its `MODELS` entry and `prepare_ours`: the configs
are the same, the code that builds them is not), one revision imported after the other in this process; then every
run times both revisions' programs interleaved (`run.measure`: rounds of `--iterations` calls of each in turn), so
that load from other processes hits both alike. Three runs by default; the table gives each run's after / before
throughput (above 1: this checkout is faster) and their median. Models are those both revisions benchmark.
Prints the machine (CPU model first: ratios differ between CPUs) and a table, and writes JSON.
"""

from __future__ import annotations

import argparse
import importlib
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import jax.numpy as jnp

ROOT = Path(__file__).resolve().parent.parent


def import_revision(source: Path):
    """`benchmarks/run.py` of the checkout at `source`, with that checkout's `jaxbackbones` imported (any other
    revision's modules are dropped from `sys.modules` first; objects already built from them keep working)."""
    for name in list(sys.modules):
        if name == "run" or name == "jaxbackbones" or name.startswith("jaxbackbones."):
            del sys.modules[name]
    sys.path[:0] = [str(source), str(source / "benchmarks")]
    try:
        run = importlib.import_module("run")
    finally:
        del sys.path[:2]
    assert Path(sys.modules["jaxbackbones"].__file__).is_relative_to(source), sys.modules["jaxbackbones"].__file__
    return run


def extract_revision(revision: str, folder: Path) -> str:
    """`jaxbackbones/` and `benchmarks/` of `revision` into `folder`; returns the full commit hash."""
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", revision], check=True, capture_output=True,
                            text=True).stdout.strip()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit, "jaxbackbones", "benchmarks"], check=True,
                             capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    return commit


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", required=True, help="the earlier revision (anything `git rev-parse` takes)")
    parser.add_argument("--models", default=None, help="comma-separated (default: every model both revisions have)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds per run")
    parser.add_argument("--iterations", type=int, default=2, help="calls per round")
    parser.add_argument("--skip-train", action="store_true", help="inference only")
    parser.add_argument("--threads", type=int, default=None, help="pin the process to this many cores")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    if args.threads:  # before the first jax.devices(): XLA:CPU sizes its thread pool from the allowed cores
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:args.threads])

    with tempfile.TemporaryDirectory() as folder:
        before_commit = extract_revision(args.before, Path(folder))
        after_commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], check=True, capture_output=True,
                                      text=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "jaxbackbones"],
                                    capture_output=True, text=True).stdout.strip())
        after_run = import_revision(ROOT)
        before_names = set(import_revision(Path(folder)).MODELS)
        common = [name for name in after_run.MODELS if name in before_names]
        names = args.models.split(",") if args.models else common
        unknown = [name for name in names if name not in common]
        if unknown:
            parser.error(f"not benchmarked by both revisions: {unknown}; both have: {', '.join(common)}")
        env = after_run.environment(with_torch=False)
        env.update(before=before_commit, after=after_commit + ("+uncommitted changes" if dirty else ""))
        print(f"CPU: {env['cpu']}, {env['cpu_threads']} of {env['cpu_count']} cores used, load average "
              f"{env['load_average']}\nbefore {before_commit[:10]}, after {env['after'][:10]}, batch {args.batch}, "
              f"float32", flush=True)

        # Each revision's models are built before the next revision is imported: what a module imports lazily is
        # then of its own revision.
        rows = {name: {} for name in names}
        runners = {name: {} for name in names}
        for label, source in (("before", Path(folder)), ("after", ROOT)):
            run = import_revision(source)
            for name in names:
                entry, facts = run.MODELS[name], {}
                prepared = run.prepare_ours(entry, args.batch, entry.size, jnp.float32, facts.__setitem__,
                                            train=not args.skip_train)
                runners[name].update({f"{label}_{task}": fn for task, fn in prepared.items()})
                rows[name][f"{label}_inference_compile_s"] = facts["inference_compile_s"]
                print(f"{name}: {label} compiled", flush=True)

        for name in names:
            row = rows[name]
            for task in ("inference",) + (() if args.skip_train else ("train",)):
                ratios = []
                for _ in range(args.runs):
                    measured = {}
                    run.measure({label: runners[name][f"{label}_{task}"] for label in ("before", "after")},
                                args.batch, args.iterations, args.rounds, measured.__setitem__)
                    ratios.append(measured["after_img_s"] / measured["before_img_s"])
                    row.setdefault(f"before_{task}_img_s", []).append(measured["before_img_s"])
                    row.setdefault(f"after_{task}_img_s", []).append(measured["after_img_s"])
                row[f"{task}_after_over_before"] = ratios
                row[f"{task}_after_over_before_median"] = statistics.median(ratios)
                print(f"{name:<22} {task:<9} after/before " + " ".join(f"{ratio:.3f}" for ratio in ratios)
                      + f"  median {statistics.median(ratios):.3f}", flush=True)
            del runners[name]

    output = args.output or ROOT / "benchmarks" / "results" / f"{env['date']}-cpu-before-after-{before_commit[:7]}.json"
    output.write_text(json.dumps({"environment": env, "batch": args.batch, "dtype": "float32", "runs": args.runs,
                                  "rounds": args.rounds, "iterations": args.iterations, "results": rows}, indent=2)
                      + "\n")
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
