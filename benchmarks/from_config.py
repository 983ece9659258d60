"""Seconds to build a backbone with random weights, each build in a fresh process (every compile included).

    python benchmarks/from_config.py                       # resnet50, swin_tiny, convnext_tiny, vit_small_dinov2
    python benchmarks/from_config.py --models resnet50 --repeats 5

For each model (an entry of benchmarks/run.py's MODELS), in fresh processes, JAX started before the clock:
- from_config: `AutoBackbone.from_config(config, rngs=nnx.Rngs(0))` until every weight is ready, what a user waits
  for (the weights are made all at once, see `jaxbackbones.initializers`);
- eager: the module built directly, `BackboneClass(config, rngs=nnx.Rngs(0))`, each weight drawn as it is created
  (what from_config did before; the same values bit for bit);
- torch: transformers' backbone of the same config, constructed (its random initialisation), as a yardstick.
Each repeat runs every model and kind once, interleaved, so a load that comes and goes (other jobs on a shared
machine) hits them alike; the medians are reported with the load average. Prints a table and writes JSON (default
benchmarks/results/<date>-from-config-cpu.json).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_MODELS = ("resnet50", "swin_tiny", "convnext_tiny", "vit_small_dinov2")
KINDS = ("from_config", "eager", "torch")


def measure(model: str, kind: str) -> float:
    """In this (fresh) process: seconds of one build of `model` the `kind` way."""
    import run as bench

    entry = bench.MODELS[model]
    if kind == "torch":
        import torch
        import transformers

        config_name, backbone_name, kwargs = entry.transformers
        config = getattr(transformers, config_name)(**kwargs, out_indices=list(entry.config().out_indices))
        torch.manual_seed(0)
        start = time.perf_counter()
        getattr(transformers, backbone_name)(config)
        return time.perf_counter() - start

    import jax
    import jax.numpy as jnp
    from flax import nnx

    from jaxbackbones import AutoBackbone
    from jaxbackbones.auto import FAMILIES

    jax.block_until_ready(jnp.ones(2) + 1)  # start the runtime before the clock
    config = entry.config()
    start = time.perf_counter()
    if kind == "from_config":
        model = AutoBackbone.from_config(config, rngs=nnx.Rngs(0))
    else:
        model = FAMILIES[config.model_type].backbone_class(config, rngs=nnx.Rngs(0))
    jax.block_until_ready(jax.tree.leaves(nnx.state(model)))
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", type=Path)
    parser.add_argument("--measure", nargs=2, metavar=("MODEL", "KIND"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))
    if args.measure:
        print(json.dumps(measure(*args.measure)))
        return

    import run as bench

    models = args.models.split(",")
    unknown = [name for name in models if name not in bench.MODELS or bench.MODELS[name].transformers is None]
    if unknown:
        raise SystemExit(f"unknown model(s) {unknown}: pick from the MODELS of benchmarks/run.py with a "
                         f"transformers backbone")
    seconds = {name: {kind: [] for kind in KINDS} for name in models}
    loads = [os.getloadavg()[0]]
    for _ in range(args.repeats):
        for name in models:
            for kind in KINDS:
                output = subprocess.run([sys.executable, __file__, "--measure", name, kind], check=True,
                                        capture_output=True, text=True).stdout
                seconds[name][kind].append(json.loads(output.strip().splitlines()[-1]))
                loads.append(os.getloadavg()[0])
    rows = {name: {**{f"{kind}_s": statistics.median(runs[kind]) for kind in KINDS},
                   **{f"{kind}_runs_s": runs[kind] for kind in KINDS}} for name, runs in seconds.items()}

    env = bench.cpu_description()
    env["load_average_during"] = [round(min(loads), 2), round(max(loads), 2)]
    print(f"{env['cpu']}, {env['cpu_count']} cores, load average {env['load_average_during'][0]}-"
          f"{env['load_average_during'][1]} (1 min); median of {args.repeats} fresh processes")
    print(f"{'model':<18} {'from_config s':>13} {'eager s':>8} {'speed-up':>8} {'torch s':>8}")
    for name, row in rows.items():
        print(f"{name:<18} {row['from_config_s']:>13.2f} {row['eager_s']:>8.2f} "
              f"{row['eager_s'] / row['from_config_s']:>7.1f}x {row['torch_s']:>8.2f}")
    date = datetime.date.today().isoformat()
    output = args.output or Path(__file__).parent / "results" / f"{date}-from-config-cpu.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps({"date": date, "environment": env, "repeats": args.repeats, "results": rows},
                                 indent=2) + "\n")
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
