"""Whether a code change leaves every benchmarked model's compiled program the same: a cheap, noise-free check
that a refactor made no family slower.

`dump DIR` writes, for each model of `benchmarks/run.py`'s MODELS, the optimized HLO that XLA compiles for the
jitted inference (and, with `--train`, the train step) on this machine's default backend, with the source metadata
(file names and lines, which a refactor moves) stripped. `compare A B` diffs two dumps. Run `dump` on each
revision (e.g. `git worktree` or `git archive` of the old one on PYTHONPATH), then `compare`.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from pathlib import Path

import jax
import jax.numpy as jnp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import MODELS, build_model, compile_inference, compile_train_step  # noqa: E402

METADATA = re.compile(r",? ?metadata=\{[^}]*\}")
NAME = re.compile(r"%[\w.\-]+")
PARAMETER = re.compile(r"(?<=[(,] )[\w.\-]+(?=: )|(?<=\()[\w.\-]+(?=: )")


def canonical(text: str) -> str:
    """HLO text without what names the Python source: instructions' `metadata={...}`, the module's FileNames /
    FunctionNames / FileLocations / StackFrames tables (everything between the module line and the first
    computation), and the numbers in instruction and computation names (`%dot_general.48`: a counter that code
    traced but not lowered, such as `lax.platform_dependent`'s other branches, advances), which become `%0`, `%1`, ...
    in order of first appearance (parameter names in computation headers become `p`)."""
    lines = text.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith(("%", "ENTRY")))
    lines = [METADATA.sub("", line) for line in lines[:1] + lines[first:]]
    # a computation's header names its parameters without the %: those names carry the counter too
    lines = [PARAMETER.sub("p", line) if line.endswith("{") and " -> " in line else line for line in lines]
    body = "\n".join(lines) + "\n"
    names: dict[str, str] = {}
    return NAME.sub(lambda match: names.setdefault(match.group(), f"%{len(names)}"), body)


def optimized_hlo(compiled) -> str:
    return canonical(compiled.as_text())


def dump(directory: Path, models: list[str], train: bool, batch: int) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name in models:
        entry = MODELS[name]
        pixels = jnp.zeros((batch, *entry.size, 3), jnp.float32)
        compiled, _, _ = compile_inference(build_model(entry, jnp.float32), pixels)
        (directory / f"{name}.inference.hlo").write_text(optimized_hlo(compiled))
        if train:
            _, compiled, _ = compile_train_step(build_model(entry, jnp.float32), pixels)
            (directory / f"{name}.train.hlo").write_text(optimized_hlo(compiled))
        print(name, "dumped", flush=True)


def compare(before: Path, after: Path) -> int:
    names = sorted({p.name for p in before.glob("*.hlo")} | {p.name for p in after.glob("*.hlo")})
    different = 0
    for name in names:
        old, new = before / name, after / name
        if not (old.exists() and new.exists()):
            print(f"{name}: only in {'before' if old.exists() else 'after'}")
            different += 1
            continue
        old_text, new_text = canonical(old.read_text()), canonical(new.read_text())
        if old_text == new_text:
            print(f"{name}: identical ({len(old_text.splitlines())} lines)")
            continue
        different += 1
        diff = list(difflib.unified_diff(old_text.splitlines(), new_text.splitlines(), lineterm=""))
        print(f"{name}: DIFFERENT ({len(diff)} diff lines)")
        print("\n".join(diff[:40]))
    return 1 if different else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    dumping = commands.add_parser("dump")
    dumping.add_argument("directory", type=Path)
    dumping.add_argument("--models", nargs="*", default=list(MODELS))
    dumping.add_argument("--train", action="store_true", help="also the train step")
    dumping.add_argument("--batch", type=int, default=1)
    comparing = commands.add_parser("compare")
    comparing.add_argument("before", type=Path)
    comparing.add_argument("after", type=Path)
    args = parser.parse_args()
    if args.command == "dump":
        print("backend:", jax.default_backend(), flush=True)
        dump(args.directory, args.models, args.train, args.batch)
        return 0
    return compare(args.before, args.after)


if __name__ == "__main__":
    sys.exit(main())
