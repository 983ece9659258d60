"""Throughput of jaxbackbones against the PyTorch baselines, measured in one process on one device.

    python benchmarks/run.py                      # CPU mode: fp32, batch 8, eager baselines
    python benchmarks/run.py --models resnet50,swin_tiny --batch 256 --dtype bfloat16 --torch-compile   # GPU
    python benchmarks/run.py --models swin_tiny --size 800x1333 --batch 2
    python benchmarks/run.py --models resnet50,swin_tiny --skip-train --threads 1   # CPU: load-robust, one core
    python benchmarks/run.py --models vit_small_dinov2 --batch 4     # at 518: its CPU train step needs ~8 GB

For each model of `MODELS`: our jitted inference (compile time excluded and reported separately, memory) and
training step (forward + backward + optax SGD, BatchNorm in train mode, buffers donated), then the baselines on the
same device and batch: transformers' backbone eager (where transformers has the model), timm `features_only` eager
(channels_last for convnets; ViTs use SDPA attention) and, with --torch-compile, timm under `torch.compile`; bf16 runs
use autocast. Four stages are returned (ViTs: blocks 3, 6, 9, 12), at each model's checkpoint size (DINOv2: 518)
unless --size is given.
Prints the machine (CPU model and vector extensions, GPU, versions) and a table, and writes JSON (default
benchmarks/results/<date>-<device>.json).

On a CPU shared with other processes, wall-clock ratios depend on the load: torch's OpenMP threads wait for each
other at every operator, so a loaded 2-core machine slows timm far more than XLA (measured on 2 EPYC cores at load
8-11: ResNet-50 and Swin-T at 1.8x and 3.5x timm eager with 2 threads, 0.91x and 1.13x pinned to one core).
`--threads 1` pins the process to one core (XLA's thread pool and torch's threads follow), which makes the CPU time
per image (`cpu_ratio_vs_*`) a comparison of the work each does that other processes' load hardly moves. benchmarks/gpu_session.py runs every accelerator measurement in one go.

A model family is benchmarked by the `benchmarks` of its `jaxbackbones.registry` entry (jaxbackbones/families/<name>.py),
each an `Entry` of `MODELS`: our config, the transformers config/backbone classes, the timm architecture and its
`out_indices`, the input size.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import datetime
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jaxbackbones import AutoBackbone, AutoConfig, registry


@dataclasses.dataclass(frozen=True)
class Entry:
    """One benchmarked model: our config and the torch references that compute the same feature maps.

    config: our config, every stage that is compared selected, stochastic depth off.
    transformers: (config class, backbone class, config kwargs) in `transformers`; its `out_indices` are taken
        from `config`, so both return the same stages. None where transformers does not have the model.
    timm: the timm architecture; timm_out_indices: its `features_only` indices for the same stages.
    size: the default input (height, width).
    channels_last: run the torch baselines channels_last (how torch runs convnets fastest).
    timm_kwargs: extra `timm.create_model` arguments (e.g. `img_size`).
    timm_resize_kwargs: what timm needs to take an input size other than `size` (e.g. `dynamic_img_size=True`).
    timm_size_multiple: timm wants height and width multiples of this (its patch size): its input is padded up to
        one (ours and transformers pad inside the model, which is the same work).
    accelerator: measured by benchmarks/gpu_session.py by default (False: CPU comparisons only, unless named).
    """

    config: Callable[[], Any]
    transformers: tuple[str, str, dict] | None
    timm: str
    timm_out_indices: tuple[int, ...]
    size: tuple[int, int] = (224, 224)
    channels_last: bool = False
    timm_kwargs: dict = dataclasses.field(default_factory=dict)
    timm_resize_kwargs: dict = dataclasses.field(default_factory=dict)
    timm_size_multiple: int = 1
    accelerator: bool = True


def _entry(model_type: str, config: dict, **fields) -> Entry:
    return Entry(config=lambda: AutoConfig.for_model(model_type, **copy.deepcopy(config)), **fields)


# Every family's benchmark entries, in registry order; benchmarks/gpu_session.py runs them in this order.
MODELS: dict[str, Entry] = {name: _entry(**fields) for name, fields in registry.benchmarks().items()}

Record = Callable[[str, Any], None]


def parse_size(text: str | None, default: tuple[int, int]) -> tuple[int, int]:
    """'224' -> (224, 224); '800x1333' -> (800, 1333) (height x width); None -> `default`."""
    if text is None:
        return default
    height, _, width = str(text).partition("x")
    return int(height), int(width or height)


def time_calls(fn, iterations: int, repeats: int = 3) -> float:
    """Median seconds per call over `repeats` runs of `iterations` calls (after one warm-up call)."""
    fn()
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(iterations):
            fn()
        runs.append((time.perf_counter() - start) / iterations)
    return statistics.median(runs)


def measure(runners: dict[str, Callable[[], None]], batch: int, iterations: int, rounds: int, record: Record) -> None:
    """Images/s of each runner, interleaved: every round times `iterations` calls of each runner in turn, and the
    median over the rounds is recorded as `<name>_img_s`. A load that comes and goes (other processes on a shared
    machine) then hits every runner alike, so the ratios hold even when the absolute numbers move. On CPU the
    process's CPU time per image is recorded too (`<name>_cpu_ms_per_img`): the work done, which other processes'
    load disturbs far less than wall time (for torch, with OMP_WAIT_POLICY=PASSIVE, else its waiting threads spin).

    Each runner's turn starts with one call that is not timed: after an operator torch's OpenMP threads spin on the
    cores for a while, and the next XLA call, which needs those cores, ran 1.38x slower (an 11 ms product on 2 EPYC
    cores: 16.0 ms right after a torch call, 11.6 after an XLA call or 0.2 s of idle). Every runner is timed in its
    own steady state, as it would run in a loop of its own."""
    seconds = {name: [] for name in runners}
    cpu_seconds = {name: [] for name in runners}
    for _ in range(rounds):
        for name, fn in runners.items():
            fn()
            start, cpu_start = time.perf_counter(), time.process_time()
            for _ in range(iterations):
                fn()
            seconds[name].append((time.perf_counter() - start) / iterations)
            cpu_seconds[name].append((time.process_time() - cpu_start) / iterations)
    on_cpu = jax.devices()[0].platform == "cpu"
    for name, values in seconds.items():
        record(f"{name}_img_s", batch / statistics.median(values))
        if on_cpu:
            record(f"{name}_cpu_ms_per_img", 1e3 * statistics.median(cpu_seconds[name]) / batch)


def compiled_bytes(compiled) -> int | None:
    """Device memory a compiled program needs by XLA's buffer assignment: arguments + outputs + temporaries, less
    what donation lets outputs reuse. Deterministic, so comparable across runs and backends."""
    analysis = compiled.memory_analysis()
    if analysis is None:
        return None
    return int(analysis.argument_size_in_bytes + analysis.output_size_in_bytes + analysis.temp_size_in_bytes
               - analysis.alias_size_in_bytes)


def device_peak_bytes() -> int | None:
    """The JAX allocator's peak since the process started (GPU/TPU), None where it keeps no statistics (CPU)."""
    stats = jax.devices()[0].memory_stats()
    return int(stats["peak_bytes_in_use"]) if stats and "peak_bytes_in_use" in stats else None


def hlo_layout_ops(compiled) -> dict[str, int]:
    """How many transposes and copies the optimised program holds (layout changes XLA could not fold away)."""
    text = compiled.as_text()
    return {"transpose": text.count(" transpose("), "copy": text.count(" copy(")}


def build_model(entry: Entry, dtype, config=None):
    return AutoBackbone.from_config(config or entry.config(), dtype=dtype)


def compile_inference(model, pixels):
    """(compiled forward returning the feature maps, its state, compile seconds)."""
    model.eval()
    graphdef, state = nnx.split(model)
    forward = jax.jit(lambda state, x: nnx.merge(graphdef, state)(x).feature_maps)
    start = time.perf_counter()
    compiled = forward.lower(state, pixels).compile()
    return compiled, state, time.perf_counter() - start


def compile_train_step(model, pixels):
    """(step function advancing its own carry, compiled step, compile seconds): SGD with momentum, donated buffers."""
    model.train()
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    optimizer = optax.sgd(0.01, momentum=0.9)
    opt_state = optimizer.init(params)

    def train_step(params, rest, opt_state, x):
        def loss_fn(params):
            module = nnx.merge(graphdef, params, rest, copy=True)
            loss = sum(jnp.mean(f.astype(jnp.float32)) for f in module(x).feature_maps)
            return loss, nnx.state(module, nnx.Not(nnx.Param))

        (loss, rest), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), rest, opt_state, loss

    step = jax.jit(train_step, donate_argnums=(0, 1, 2))
    start = time.perf_counter()
    compiled = step.lower(params, rest, opt_state, pixels).compile()
    compile_seconds = time.perf_counter() - start
    carry = [params, rest, opt_state]

    def run_step():
        carry[0], carry[1], carry[2], loss = compiled(*carry, pixels)
        jax.block_until_ready(loss)

    return run_step, compiled, compile_seconds


def prepare_ours(entry: Entry, batch: int, size: tuple[int, int], dtype, record: Record, train: bool = True,
                 config=None) -> dict[str, Callable[[], None]]:
    """Our compiled inference (and training step) as runners; compile seconds and memory `record`ed."""
    pixels = jax.random.normal(jax.random.key(0), (batch, *size, 3), jnp.float32)
    model = build_model(entry, dtype, config)
    compiled, state, seconds = compile_inference(model, pixels)
    record("inference_compile_s", seconds)
    record("inference_xla_bytes", compiled_bytes(compiled))
    record("inference_hlo_layout_ops", hlo_layout_ops(compiled))
    runners = {"inference": lambda: jax.block_until_ready(compiled(state, pixels))}
    if train:
        state = jax.tree.map(jnp.copy, state)  # the training step donates the model's own buffers
        runners["train"], compiled_step, seconds = compile_train_step(model, pixels)
        record("train_compile_s", seconds)
        record("train_xla_bytes", compiled_bytes(compiled_step))
        runners["train"]()
        record("device_peak_bytes", device_peak_bytes())
    return runners


def ours(entry: Entry, batch: int, size: tuple[int, int], dtype, iterations: int, record: Record,
         train: bool = True, config=None, rounds: int = 3) -> None:
    """Our inference (and training step) throughput, compile times and memory, each `record`ed as measured."""
    measure(prepare_ours(entry, batch, size, dtype, record, train, config), batch, iterations, rounds, record)


def torch_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def timm_model(entry: Entry, size: tuple[int, int], **kwargs):
    """timm's features_only model of `entry` for inputs of `size` (`kwargs`: more `timm.create_model` arguments)."""
    import timm

    kwargs = {**entry.timm_kwargs, **kwargs}
    if size != entry.size:
        kwargs.update(entry.timm_resize_kwargs)
    return timm.create_model(entry.timm, features_only=True, out_indices=entry.timm_out_indices, **kwargs)


def transformers_model(entry: Entry):
    import transformers

    config_class, backbone_class, kwargs = entry.transformers
    config = getattr(transformers, config_class)(**kwargs, out_indices=list(entry.config().out_indices))
    return getattr(transformers, backbone_class)(config)


def torch_runner(model, entry: Entry, batch: int, size: tuple[int, int], dtype: str, *, train: bool,
                 size_multiple: int = 1) -> tuple[Callable[[], None], dict]:
    """A torch model as a runner (inference under no_grad, or an SGD training step), after a first call whose
    seconds (the compile time of a `torch.compile`d model) and, on CUDA, peak allocated memory it returns. The input
    is padded up to multiples of `size_multiple`."""
    import torch

    device = torch_device()
    height, width = (-(-side // size_multiple) * size_multiple for side in size)
    pixels = torch.randn(batch, 3, height, width, device=device)
    model = model.to(device)
    if entry.channels_last:
        model = model.to(memory_format=torch.channels_last)
        pixels = pixels.contiguous(memory_format=torch.channels_last)
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=dtype == "bfloat16")

    def features():
        outputs = model(pixels)
        return outputs.feature_maps if hasattr(outputs, "feature_maps") else outputs

    def synchronize():
        if device == "cuda":
            torch.cuda.synchronize()

    if train:
        model.train()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

        def call():
            with autocast:
                loss = sum(f.float().mean() for f in features())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            synchronize()
    else:
        model.eval()

        def call():
            with torch.no_grad(), autocast:
                features()
            synchronize()

    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    call()
    facts = {"first_call_s": time.perf_counter() - start}
    if device == "cuda":
        call()
        facts["peak_bytes"] = int(torch.cuda.max_memory_allocated())
    return call, facts


def prepare_torch(entry: Entry, batch: int, size: tuple[int, int], dtype: str, record: Record, *, eager: bool = True,
                  compile_timm: bool = False, compile_backend: str = "inductor",
                  train: bool = True) -> dict[str, Callable[[], None]]:
    """timm and transformers eager and timm under torch.compile as runners named `<baseline>_<task>`; the compile
    seconds of the compiled ones and the peak memory of the training steps on CUDA `record`ed."""
    import torch

    runners = {}

    def add(label, make, train_step):
        multiple = entry.timm_size_multiple if label.startswith("timm") else 1
        runner, facts = torch_runner(make(), entry, batch, size, dtype, train=train_step, size_multiple=multiple)
        name = f"{label}_{'train' if train_step else 'inference'}"
        runners[name] = runner
        if label.endswith("compile"):
            record(f"{name}_compile_s", facts["first_call_s"])
        if train_step and "peak_bytes" in facts:
            record(f"{name}_peak_bytes", facts["peak_bytes"])

    if eager:
        add("timm_eager", lambda: timm_model(entry, size), False)
        if train:
            add("timm_eager", lambda: timm_model(entry, size), True)
        if entry.transformers is not None:
            add("transformers_eager", lambda: transformers_model(entry), False)
    if compile_timm:
        def compiled():
            torch._dynamo.reset()
            return torch.compile(timm_model(entry, size), backend=compile_backend)

        add("timm_compile", compiled, False)
        if train:
            add("timm_compile", compiled, True)
    return runners


def torch_baselines(entry: Entry, batch: int, size: tuple[int, int], dtype: str, iterations: int, record: Record, *,
                    eager: bool = True, compile_timm: bool = False, compile_backend: str = "inductor",
                    train: bool = True, rounds: int = 3) -> None:
    """timm and transformers eager, then timm under torch.compile: throughput and first-call (compile) seconds,
    peak memory of the training steps on CUDA; each `record`ed as measured."""
    runners = prepare_torch(entry, batch, size, dtype, record, eager=eager, compile_timm=compile_timm,
                            compile_backend=compile_backend, train=train)
    measure(runners, batch, iterations, rounds, record)


def add_ratios(row: dict) -> dict:
    """ours / baseline for throughput (`ratio_vs_*`) and, on CPU, baseline / ours for CPU time per image
    (`cpu_ratio_vs_*`): above 1 is ours ahead in both."""
    for task in ("inference", "train"):
        for baseline in ("transformers_eager", "timm_eager", "timm_compile"):
            if row.get(f"{baseline}_{task}_img_s") and row.get(f"{task}_img_s"):
                row[f"ratio_vs_{baseline}_{task}"] = row[f"{task}_img_s"] / row[f"{baseline}_{task}_img_s"]
            if row.get(f"{baseline}_{task}_cpu_ms_per_img") and row.get(f"{task}_cpu_ms_per_img"):
                row[f"cpu_ratio_vs_{baseline}_{task}"] = (row[f"{baseline}_{task}_cpu_ms_per_img"]
                                                          / row[f"{task}_cpu_ms_per_img"])
    return row


def cpu_description() -> dict:
    """CPU model (with its family/model/stepping numbers: virtual machines often name only the vendor), core count,
    the vector extensions that decide XLA's and oneDNN's kernels, and the load average."""
    model, flags, ids = platform.processor() or platform.machine(), set(), {}
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name":
                    model = value.strip()
                elif key in ("cpu family", "model", "stepping") and key not in ids:
                    ids[key] = value.strip()
                elif key == "flags":
                    flags = set(value.split())
                elif not line.strip() and flags:
                    break
    except OSError:
        pass
    if ids:
        model += " (" + ", ".join(f"{key} {value}" for key, value in ids.items()) + ")"
    wanted = ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16")
    threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": model, "cpu_count": os.cpu_count(), "cpu_threads": threads,
            "cpu_flags": [flag for flag in wanted if flag in flags],
            "avx512": "avx512f" in flags, "amx": "amx_tile" in flags,
            "load_average": [round(load, 2) for load in os.getloadavg()]}


def environment(with_torch: bool = True) -> dict:
    env = {"date": datetime.date.today().isoformat(), "device": str(jax.devices()[0].device_kind),
           "platform": jax.devices()[0].platform, **cpu_description(), "python": platform.python_version(),
           "jax": jax.__version__, "flax": __import__("flax").__version__}
    if with_torch:
        import timm
        import torch
        import transformers

        env.update(torch=torch.__version__, transformers=transformers.__version__, timm=timm.__version__,
                   torch_threads=torch.get_num_threads())
        if torch.cuda.is_available():
            env.update(cuda_device=torch.cuda.get_device_name(), cuda=torch.version.cuda,
                       cudnn=torch.backends.cudnn.version())
    return env


def format_value(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def print_rows(rows: dict[str, dict]) -> None:
    print(f"\n{'model':<16} {'metric':<40} {'value':>16}")
    for name, row in rows.items():
        for metric, value in row.items():
            print(f"{name:<16} {metric:<40} {format_value(value):>16}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="resnet50,swin_tiny,convnext_tiny", help=f"comma-separated, of {', '.join(MODELS)}")
    parser.add_argument("--batch", type=int, default=None, help="default: 8 on CPU, 256 on an accelerator")
    parser.add_argument("--size", default=None, help="HxW or S (default: each model's own, 224 for most)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default=None,
                        help="default: float32 on CPU, bfloat16 on an accelerator")
    parser.add_argument("--iterations", type=int, default=None, help="calls per timing round (default 2 CPU, 20 GPU)")
    parser.add_argument("--rounds", type=int, default=None, help="timing rounds, interleaved (default 7 CPU, 3 GPU)")
    parser.add_argument("--torch-compile", action="store_true", help="also time timm under torch.compile")
    parser.add_argument("--skip-torch", action="store_true", help="only our models")
    parser.add_argument("--skip-train", action="store_true", help="inference only")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU mode: pin the process to this many cores (XLA and torch use that many threads)")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    if args.threads:
        # before the first jax.devices(): XLA:CPU sizes its thread pool from the cores the process may run on
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:args.threads])
        if not args.skip_torch:
            import torch

            torch.set_num_threads(args.threads)

    unknown = [name for name in args.models.split(",") if name not in MODELS]
    if unknown:
        parser.error(f"unknown model(s) {unknown}; known: {', '.join(MODELS)}")
    on_cpu = jax.devices()[0].platform == "cpu"
    batch = args.batch or (8 if on_cpu else 256)
    dtype = args.dtype or ("float32" if on_cpu else "bfloat16")
    iterations = args.iterations or (2 if on_cpu else 20)
    args.rounds = args.rounds or (7 if on_cpu else 3)
    env = environment(with_torch=not args.skip_torch)
    print(f"{env}\nbatch {batch}, {dtype}")
    if on_cpu:
        print(f"CPU: {env['cpu']}, {env['cpu_threads']} of {env['cpu_count']} cores used, AVX-512 "
              f"{'yes' if env['avx512'] else 'no'} ({' '.join(env['cpu_flags']) or 'no AVX2'}), load average "
              f"{env['load_average']}")

    rows = {}
    for name in args.models.split(","):
        entry = MODELS[name]
        size = parse_size(args.size, entry.size)
        row = rows[name] = {"size": f"{size[0]}x{size[1]}"}
        runners = prepare_ours(entry, batch, size, jnp.dtype(dtype), row.__setitem__, train=not args.skip_train)
        if not args.skip_torch:
            runners.update(prepare_torch(entry, batch, size, dtype, row.__setitem__, compile_timm=args.torch_compile,
                                         train=not args.skip_train))
        # Inference runners and training steps interleaved among themselves, each round all of them in turn.
        for task in ("inference", "train"):
            measure({key: fn for key, fn in runners.items() if key.endswith(task)}, batch, iterations, args.rounds,
                    row.__setitem__)
        row["load_average"] = [round(load, 2) for load in os.getloadavg()]
        add_ratios(row)
    print_rows(rows)

    output = args.output or Path(__file__).parent / "results" / f"{env['date']}-{env['device'].replace(' ', '_')}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps({"environment": env, "batch": batch, "dtype": dtype, "iterations": iterations,
                                  "rounds": args.rounds, "results": rows}, indent=2)
                      + "\n")
    print(f"\nwrote {output}")


if __name__ == "__main__":
    main()
