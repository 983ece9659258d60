"""Every accelerator measurement of the performance work, in one call of the device machine.

On the device machine (jax with CUDA, torch, transformers and timm installed; this package needs no install), with
the `run` tool, `timeout_s` 540 (the sections take 480 s, `--budget`; the rest is start-up and the summary):

    PYTHONUNBUFFERED=1 PYTHONPATH=. python3 benchmarks/gpu_session.py --out $OUT

A second call can rerun what did not finish, e.g. `--sections levers,profile --budget 120`; $OUT starts empty on
each call, so it writes its own gpu_session.json beside the first call's (which is back already).

Here, on CPU, the same flow with tiny batches and sizes (`torch.compile` with the `aot_eager` backend), to check
that the script works end to end: about 3 minutes of compiling on 2 idle cores, far longer under others' load
(give it `--budget 1500` then):

    .venv/bin/python benchmarks/gpu_session.py --smoke --out /tmp/gpu-smoke

Sections, most important first; each runs in its own process with its own time box (its budget, plus whatever
earlier sections left unused), so one failing or slow model loses only its own numbers. Every number is appended
to `gpu_session.jsonl` the moment it is measured; at the end `gpu_session.json` gathers them with the environment
and ratios, and a table is printed. `--sections` and `--models` rerun a part (e.g. `--sections sweep,levers`).

- throughput: each model of benchmarks/run.py's MODELS (one process per model), bf16 compute with fp32 parameters,
  batch 256, at its own size: our inference and training step (SGD + momentum, BatchNorm in train mode, donated
  buffers): throughput, compile seconds, XLA's buffer bytes, the allocator's peak, transposes/copies left in the
  compiled inference program; then timm eager (inference, train), transformers eager (inference) and timm under
  `torch.compile` (inference, train) with first-call (compile) seconds and `torch.cuda.max_memory_allocated` of
  the training steps.
- parity: randomised transformers backbones saved with `save_pretrained` (timm models with `save_for_hf` where
  transformers lacks the model) and loaded through `from_pretrained`, both
  on the GPU, batch 2: float32 under `jax.default_matmul_precision("highest")` against torch float32 with TF32 off
  (bound 1e-5, max |diff| / max |torch| per feature map), JAX's default precision (information), bf16 compute
  against torch float32 (bound 3e-2, the tests' bf16 bound) and torch's own bf16 autocast for comparison.
- sweep: inference at batch 1, 8, 32, 256 for ResNet-50 and Swin-T: ours, timm eager, then timm compiled
  (`dynamic=True`, one compile serving every batch).
- large: 800x1333 at batch 2 for ResNet-50 and Swin-T: ours (inference, train step), timm eager, transformers eager,
  timm compiled (inference).
- levers: ResNet-50 with 1x1 convolutions as matrix products vs convolutions (rewrite "conv_as_matmul" of
  `layers.rewrites`); Swin-T's window attention core (batch 256, each stage's shape) as written vs
  `jax.nn.dot_product_attention` (XLA and cuDNN); train steps with `gradient_checkpointing` (remat) against the
  throughput section's plain ones.
- profile: a `jax.profiler` trace of 3 inference and 3 training steps per model; the top device kernels go into
  the JSON and the traces into `traces.tar.gz`.
- flags (only when named in --sections): ours again under documented XLA GPU flags (`--xla_gpu_triton_gemm_any`,
  `--xla_gpu_enable_triton_gemm=false`, `--xla_gpu_enable_command_buffer=`).

Files under --out: gpu_session.json, gpu_session.jsonl, gpu_session.log (every process's output), traces.tar.gz.
Copy gpu_session.json to benchmarks/results/<date>-<card>-session.json and commit it.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import os
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

# (section, seconds): the time box of each, in order. Unused seconds pass on to the next.
SECTIONS = [("throughput", 330), ("parity", 40), ("sweep", 45), ("large", 25), ("levers", 25), ("profile", 15)]
OPTIONAL_SECTIONS = [("flags", 150)]
# Models for the sweep, the 800x1333 runs, the levers and the profile (the throughput section takes all of MODELS).
FOCUS = ("resnet50", "swin_tiny")
XLA_FLAG_SETS = ("--xla_gpu_triton_gemm_any=true", "--xla_gpu_enable_triton_gemm=false",
                 "--xla_gpu_enable_command_buffer=")
STARTED = time.monotonic()
PARITY_FP32 = 1e-5
PARITY_BF16 = 3e-2


# ----------------------------------------------------------------------------------------------------------------
# The driver: one process per section (per model for throughput), each under its time box.


def child_env(extra_flags: str = "") -> dict:
    env = dict(os.environ)
    env.update(PYTHONUNBUFFERED="1", XLA_PYTHON_CLIENT_PREALLOCATE="false", HF_HUB_OFFLINE="1",
               JAXBACKBONES_CACHE="0", TOKENIZERS_PARALLELISM="false")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    if extra_flags:
        env["XLA_FLAGS"] = " ".join(filter(None, [env.get("XLA_FLAGS"), extra_flags]))
    return env


def run_child(args: list[str], timeout: float, log, env: dict) -> str:
    """Run this script as a child in its own process group; kill the whole group when it outlives `timeout`."""
    log.write(f"\n===== {' '.join(args)} (time box {timeout:.0f} s)\n")
    log.flush()
    process = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), *args], stdout=log,
                               stderr=subprocess.STDOUT, env=env, cwd=ROOT, start_new_session=True)
    try:
        code = process.wait(timeout=max(timeout, 1))
        return "ok" if code == 0 else f"exit {code}"
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        return f"timed out after {timeout:.0f} s"


def drive(args) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    journal = out / "gpu_session.jsonl"
    if not args.keep:
        journal.unlink(missing_ok=True)
    start = time.monotonic()
    deadline = start + args.budget
    chosen = args.sections.split(",") if args.sections else [name for name, _ in SECTIONS]
    plan = [(name, seconds) for name, seconds in SECTIONS + OPTIONAL_SECTIONS if name in chosen]
    unknown = set(chosen) - {name for name, _ in SECTIONS + OPTIONAL_SECTIONS}
    if unknown:
        raise SystemExit(f"unknown section(s) {sorted(unknown)}")
    common = ["--out", str(out)] + (["--smoke"] if args.smoke else [])
    import run as bench  # benchmarks/run.py: the registry (imports jax only, cheap)

    models = args.models.split(",") if args.models else [name for name, entry in bench.MODELS.items()
                                                         if entry.accelerator]
    if args.smoke and not args.models:
        models = list(FOCUS)
    status = {}
    with open(out / "gpu_session.log", "a") as log:
        for index, (section, seconds) in enumerate(plan):
            reserved = sum(later for _, later in plan[index + 1:])
            remaining = deadline - time.monotonic()
            box = min(remaining, max(seconds, remaining - reserved))
            if box < 10:
                status[section] = "skipped: no time left"
                print(f"{section}: skipped, no time left", flush=True)
                continue
            section_start = time.monotonic()
            if section == "throughput":  # one process per model
                jobs = [(name, ["--models", name], child_env()) for name in models]
            elif section == "flags":  # one process per flag set
                jobs = [(flags, ["--models", ",".join(models), "--xla-flags", flags], child_env(flags))
                        for flags in XLA_FLAG_SETS]
            else:
                jobs = [("", ["--models", ",".join(models)], child_env())]
            results = []
            for position, (label, extra, env) in enumerate(jobs):
                # Each job gets an equal share of what is left of the box, so a slow one cannot starve the rest.
                share = (box - (time.monotonic() - section_start)) / (len(jobs) - position)
                results.append(f"{label} {run_child(['--section', section, *extra, *common], share, log, env)}".strip())
            status[section] = "; ".join(results)
            print(f"{section}: {status[section]} ({time.monotonic() - section_start:.0f} s)", flush=True)
    summary = summarize(journal, status, time.monotonic() - start, args.smoke)
    (out / "gpu_session.json").write_text(json.dumps(summary, indent=2) + "\n")
    pack_traces(out)
    print_summary(summary)
    print(f"\nwrote {out / 'gpu_session.json'}")


def summarize(journal: Path, status: dict, seconds: float, smoke: bool) -> dict:
    """Gather the journal into {section: {model: {metric: value}}}, with ratios against the torch baselines."""
    import run as bench

    results: dict = defaultdict(lambda: defaultdict(dict))
    environment = {}
    if journal.exists():
        for line in journal.read_text().splitlines():
            try:
                item = json.loads(line)
            except json.JSONDecodeError:  # a line cut off by a killed process
                continue
            if item["section"] == "environment":
                environment = item["value"]
            else:
                results[item["section"]][item["model"]][item["key"]] = item["value"]
    for section in results.values():
        for row in section.values():
            bench.add_ratios(row)
    return {"environment": environment, "smoke": smoke, "status": status, "seconds": round(seconds, 1),
            "results": {section: dict(rows) for section, rows in results.items()}}


def print_summary(summary: dict) -> None:
    import run as bench

    env = summary["environment"]
    print("\n" + json.dumps({key: env.get(key) for key in ("date", "cuda_device", "device", "jax", "torch", "timm",
                                                            "transformers", "cuda", "cudnn")}))
    print(json.dumps(summary["status"], indent=1))
    for section, rows in summary["results"].items():
        print(f"\n--- {section}")
        bench.print_rows({model: {key: value for key, value in row.items() if key != "top_device_ops"}
                          for model, row in rows.items()})


def markdown(summary: dict) -> str:
    """The README's GPU tables from a session's gpu_session.json."""
    env, results = summary["environment"], summary["results"]

    def number(value, scale=1.0, digits=0):
        return "n/a" if value is None else f"{value * scale:,.{digits}f}"

    lines = [f"{env.get('cuda_device') or env.get('device')}, {env.get('date')}; jax {env.get('jax')}, torch "
             f"{env.get('torch')}, transformers {env.get('transformers')}, timm {env.get('timm')}, CUDA "
             f"{env.get('cuda')}, cuDNN {env.get('cudnn')}; bf16 compute, fp32 parameters (images/s):", "",
             "| model | size, batch | ours inference | timm + torch.compile | ratio | ours train step | timm + "
             "torch.compile train | ratio | ours compile (inference / train) | train memory ours / torch |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for model, row in results.get("throughput", {}).items():
        ours_memory = row.get("device_peak_bytes") or row.get("train_xla_bytes")
        lines.append(
            f"| {model} | {row.get('size')}, {row.get('batch')} | {number(row.get('inference_img_s'))} | "
            f"{number(row.get('timm_compile_inference_img_s'))} | "
            f"{number(row.get('ratio_vs_timm_compile_inference'), digits=2)} | {number(row.get('train_img_s'))} | "
            f"{number(row.get('timm_compile_train_img_s'))} | "
            f"{number(row.get('ratio_vs_timm_compile_train'), digits=2)} | "
            f"{number(row.get('inference_compile_s'), digits=1)} s / "
            f"{number(row.get('train_compile_s'), digits=1)} s | {number(ours_memory, 2**-30, 1)} / "
            f"{number(row.get('timm_compile_train_peak_bytes'), 2**-30, 1)} GiB |")
    if results.get("sweep"):
        lines += ["", "| model @ batch | ours inference | timm eager | timm + torch.compile (dynamic) | ratio |",
                  "|---|---|---|---|---|"]
        for model, row in results["sweep"].items():
            lines.append(f"| {model} | {number(row.get('inference_img_s'))} | "
                         f"{number(row.get('timm_eager_inference_img_s'))} | "
                         f"{number(row.get('timm_compile_inference_img_s'))} | "
                         f"{number(row.get('ratio_vs_timm_compile_inference'), digits=2)} |")
    if results.get("large"):
        lines += ["", "| model at 800x1333, batch 2 | ours inference | timm eager | timm + torch.compile | ours train "
                  "step | timm eager train |", "|---|---|---|---|---|---|"]
        for model, row in results["large"].items():
            lines.append(f"| {model} | {number(row.get('inference_img_s'), digits=1)} | "
                         f"{number(row.get('timm_eager_inference_img_s'), digits=1)} | "
                         f"{number(row.get('timm_compile_inference_img_s'), digits=1)} | "
                         f"{number(row.get('train_img_s'), digits=1)} | "
                         f"{number(row.get('timm_eager_train_img_s'), digits=1)} |")
    if results.get("parity"):
        lines += ["", "| model | fp32 (highest) vs torch fp32 | bf16 vs torch fp32 | torch bf16 autocast vs fp32 |",
                  "|---|---|---|---|"]
        for model, row in results["parity"].items():
            fp32, bf16 = row.get("fp32_highest_errors"), row.get("bf16_errors")
            lines.append(f"| {model} | {max(fp32):.1e} | {max(bf16):.1e} | "
                         f"{row.get('torch_autocast_bf16_max_error', float('nan')):.1e} |" if fp32 and bf16 else
                         f"| {model} | n/a | n/a | n/a |")
    return "\n".join(lines)


def pack_traces(out: Path) -> None:
    """The profile section's trace folders into one traces.tar.gz (the device tool returns files, not deep trees)."""
    traces = out / "traces"
    if not traces.exists():
        return
    with tarfile.open(out / "traces.tar.gz", "w:gz") as archive:
        archive.add(traces, arcname="traces")
    for path in sorted(traces.rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    traces.rmdir()


# ----------------------------------------------------------------------------------------------------------------
# Sections, each in its own process.


class Journal:
    """Appends one JSON line per measurement, flushed at once: a killed process keeps what it measured."""

    def __init__(self, out: Path, section: str):
        self.path = out / "gpu_session.jsonl"
        self.section = section

    def __call__(self, model: str, key: str, value) -> None:
        with open(self.path, "a") as journal:
            journal.write(json.dumps({"section": self.section, "model": model, "key": key, "value": value}) + "\n")
        print(f"[{self.section} {time.monotonic() - STARTED:6.1f} s] {model} {key} = {value}", flush=True)

    def recorder(self, model: str):
        return lambda key, value: self(model, key, value)

    def guarded(self, model: str, what: str, fn, *args, **kwargs):
        """Run one measurement; on an exception record the error and go on with the next."""
        try:
            return fn(*args, **kwargs)
        except Exception as error:  # noqa: BLE001 - one failure must not lose the other numbers
            import traceback

            traceback.print_exc()
            self(model, f"error_{what}", f"{type(error).__name__}: {str(error)[:300]}")
            return None


class Settings:
    """What a section measures with: accelerator defaults, or tiny CPU ones with --smoke."""

    def __init__(self, smoke: bool):
        self.smoke = smoke
        self.batch = 2 if smoke else 256
        self.iterations = 1 if smoke else 20
        self.rounds = 1 if smoke else 3
        self.dtype = "bfloat16"
        self.sweep_batches = (1,) if smoke else (1, 8, 32, 256)
        self.large_size = (70, 99) if smoke else (800, 1333)
        self.large_batch = 1 if smoke else 2
        # aot_eager runs dynamo and AOTAutograd without inductor's code generation: the flow, not the speed.
        self.compile_backend = "aot_eager" if smoke else "inductor"

    def size(self, entry) -> tuple[int, int]:
        return (64, 64) if self.smoke else entry.size


def section_throughput(args, journal: Journal, settings: Settings) -> None:
    import jax.numpy as jnp
    import run as bench

    for name in args.models.split(","):
        entry, record = bench.MODELS[name], journal.recorder(name)
        size = settings.size(entry)
        record("size", f"{size[0]}x{size[1]}")
        record("batch", settings.batch)
        journal.guarded(name, "ours", bench.ours, entry, settings.batch, size, jnp.bfloat16, settings.iterations,
                        record, rounds=settings.rounds)
        journal.guarded(name, "torch_eager", bench.torch_baselines, entry, settings.batch, size, settings.dtype,
                        settings.iterations, record, eager=True, compile_timm=False, rounds=settings.rounds)
        journal.guarded(name, "torch_compile", bench.torch_baselines, entry, settings.batch, size, settings.dtype,
                        settings.iterations, record, eager=False, compile_timm=True, rounds=settings.rounds,
                        compile_backend=settings.compile_backend)


def parity_errors(reference: list, ours: list) -> list[float]:
    import numpy as np

    errors = []
    for r, o in zip(reference, ours, strict=True):
        r, o = np.asarray(r, np.float64), np.asarray(o, np.float64)
        if r.shape != o.shape:
            raise ValueError(f"shape {o.shape} != reference {r.shape}")
        errors.append(float(np.abs(o - r).max() / np.abs(r).max()))
    return errors


def parity_one(name: str, entry, settings: Settings, record) -> None:
    import jax
    import jax.numpy as jnp
    import numpy as np
    import run as bench
    import torch
    from flax import nnx

    sys.path.insert(0, str(ROOT / "tests"))
    from helpers import randomize_torch_module

    from jaxbackbones import AutoBackbone

    device = bench.torch_device()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    size = settings.size(entry)
    pixels = np.random.default_rng(0).standard_normal((2, 3, *size)).astype(np.float32)
    torch_pixels = torch.from_numpy(pixels).to(device)
    with tempfile.TemporaryDirectory() as folder:
        if entry.transformers is not None:
            reference_model = randomize_torch_module(bench.transformers_model(entry), seed=0).eval()
            reference_model.save_pretrained(folder)

            def maps(x):
                return reference_model(x).feature_maps
        else:  # timm's layout: the full model saved as the hub has it, features_only loading those weights
            import timm
            from timm.models._hub import save_for_hf

            save_for_hf(randomize_torch_module(timm.create_model(entry.timm, **entry.timm_kwargs), seed=0), folder,
                        safe_serialization=True)
            reference_model = bench.timm_model(entry, size, pretrained=True, pretrained_cfg_overlay=dict(
                file=str(Path(folder) / "model.safetensors"))).eval()

            def maps(x):
                return reference_model(x)
        out_indices = list(entry.config().out_indices)  # a timm folder's config does not hold them
        models = {dtype: AutoBackbone.from_pretrained(folder, dtype=dtype, out_indices=out_indices)
                  for dtype in (jnp.float32, jnp.bfloat16)}
    reference_model = reference_model.to(device)
    with torch.no_grad():
        reference = [f.float().cpu().numpy() for f in maps(torch_pixels)]
        with torch.autocast(device, dtype=torch.bfloat16):
            autocast = [f.float().cpu().numpy() for f in maps(torch_pixels)]
    record("torch_autocast_bf16_max_error", max(parity_errors(reference, autocast)))
    nhwc = jnp.asarray(pixels.transpose(0, 2, 3, 1))

    def features(model):
        graphdef, state = nnx.split(model)
        forward = jax.jit(lambda state, x: nnx.merge(graphdef, state)(x).feature_maps)
        return [np.asarray(f, np.float32).transpose(0, 3, 1, 2) for f in forward(state, nhwc)]

    with jax.default_matmul_precision("highest"):
        fp32 = parity_errors(reference, features(models[jnp.float32]))
    record("fp32_highest_errors", fp32)
    record("fp32_highest_pass", max(fp32) <= PARITY_FP32)
    record("fp32_default_precision_max_error", max(parity_errors(reference, features(models[jnp.float32]))))
    bf16 = parity_errors(reference, features(models[jnp.bfloat16]))
    record("bf16_errors", bf16)
    record("bf16_pass", max(bf16) <= PARITY_BF16)


def section_parity(args, journal: Journal, settings: Settings) -> None:
    import run as bench

    for name in args.models.split(","):
        journal.guarded(name, "parity", parity_one, name, bench.MODELS[name], settings, journal.recorder(name))


def section_sweep(args, journal: Journal, settings: Settings) -> None:
    import jax.numpy as jnp
    import run as bench

    names = [name for name in FOCUS if name in args.models.split(",")]
    for name in names:  # ours and eager first: the compiled baselines take longest
        entry, size = bench.MODELS[name], settings.size(bench.MODELS[name])
        for batch in settings.sweep_batches:
            record = journal.recorder(f"{name}@{batch}")
            journal.guarded(f"{name}@{batch}", "ours", bench.ours, entry, batch, size, jnp.bfloat16,
                            settings.iterations, record, train=False, rounds=settings.rounds)
            journal.guarded(f"{name}@{batch}", "timm_eager", measure_timm, entry, batch, size, settings, record,
                            "timm_eager", compiled=False)
    for name in names:
        entry, size = bench.MODELS[name], settings.size(bench.MODELS[name])
        for batch in settings.sweep_batches:
            journal.guarded(f"{name}@{batch}", "timm_compile", measure_timm, entry, batch, size, settings,
                            journal.recorder(f"{name}@{batch}"), "timm_compile", compiled=True, dynamic=True)


_COMPILED = {}


def measure_timm(entry, batch, size, settings, record, label, *, compiled, dynamic=None, train=False):
    """timm's model at this batch and size; a compiled one is kept per architecture, so a dynamic-shape compile
    serves every batch."""
    import run as bench
    import torch

    if compiled:
        key = (entry.timm, size)
        if key not in _COMPILED:
            _COMPILED[key] = torch.compile(bench.timm_model(entry, size), backend=settings.compile_backend,
                                           dynamic=dynamic)
        model = _COMPILED[key]
    else:
        model = bench.timm_model(entry, size)
    task = "train" if train else "inference"
    runner, facts = bench.torch_runner(model, entry, batch, size, settings.dtype, train=train,
                                       size_multiple=entry.timm_size_multiple)
    if compiled:
        record(f"{label}_{task}_first_call_s", facts["first_call_s"])
    if "peak_bytes" in facts and train:
        record(f"{label}_train_peak_bytes", facts["peak_bytes"])
    bench.measure({f"{label}_{task}": runner}, batch, settings.iterations, settings.rounds, record)


def section_large(args, journal: Journal, settings: Settings) -> None:
    import jax.numpy as jnp
    import run as bench

    size, batch = settings.large_size, settings.large_batch
    names = [name for name in FOCUS if name in args.models.split(",")]
    for name in names:
        entry, record = bench.MODELS[name], journal.recorder(name)
        record("size", f"{size[0]}x{size[1]}")
        journal.guarded(name, "ours", bench.ours, entry, batch, size, jnp.bfloat16, settings.iterations, record,
                        train=not settings.smoke, rounds=settings.rounds)
        journal.guarded(name, "torch_eager", bench.torch_baselines, entry, batch, size, settings.dtype,
                        settings.iterations, record, eager=True, compile_timm=False, rounds=settings.rounds)
    for name in names:
        entry = bench.MODELS[name]
        journal.guarded(name, "timm_compile", measure_timm, entry, batch, size, settings, journal.recorder(name),
                        "timm_compile", compiled=True)


def window_attention_variants(settings: Settings, record) -> None:
    """Swin-T's window attention core at each stage's shape: as jaxbackbones writes it, and through
    `jax.nn.dot_product_attention` with the XLA and cuDNN implementations (same bias and shift mask)."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import run as bench

    from jaxbackbones.models.swin import MASK_VALUE, shifted_window_regions

    batch, window, tokens, head_dim = settings.batch, 7, 49, 32
    grids = (8, 4, 2, 1) if not settings.smoke else (2, 1)
    for stage, grid in enumerate(grids):
        heads, num_windows = 3 * 2**stage, grid * grid
        windows = batch * num_windows
        keys = jax.random.split(jax.random.key(stage), 4)
        q, k, v = (jax.random.normal(key, (windows, heads, tokens, head_dim), jnp.bfloat16) for key in keys[:3])
        bias = jax.random.normal(keys[3], (heads, tokens, tokens), jnp.float32)
        ids = shifted_window_regions(grid * window, grid * window, window, window // 2)
        mask = jnp.asarray(np.where(ids[:, :, None] != ids[:, None, :], MASK_VALUE, 0.0).astype(np.float32))
        full_bias = (bias[None] + mask[:, None])  # (num_windows, heads, N, N)

        def ours(q, k, v, full_bias):
            logits = jnp.matmul(q * jnp.asarray(head_dim**-0.5, q.dtype), k.swapaxes(-1, -2),
                                preferred_element_type=jnp.float32)
            logits = logits.reshape(batch, num_windows, heads, tokens, tokens) + full_bias[None]
            probs = jax.nn.softmax(logits.reshape(windows, heads, tokens, tokens), axis=-1).astype(q.dtype)
            return jnp.matmul(probs, v).transpose(0, 2, 1, 3)

        def library(implementation):
            def attend(q, k, v, full_bias):
                expanded = jnp.broadcast_to(full_bias[None], (batch, num_windows, heads, tokens, tokens))
                expanded = expanded.reshape(windows, heads, tokens, tokens).astype(q.dtype)
                return jax.nn.dot_product_attention(q.transpose(0, 2, 1, 3), k.transpose(0, 2, 1, 3),
                                                    v.transpose(0, 2, 1, 3), bias=expanded,
                                                    implementation=implementation)
            return attend

        variants = {"ours": ours, "dpa_xla": library("xla")}
        if jax.default_backend() == "gpu":
            variants["dpa_cudnn"] = library("cudnn")
        reference = None
        for label, fn in variants.items():
            try:
                compiled = jax.jit(fn).lower(q, k, v, full_bias).compile()
                out = compiled(q, k, v, full_bias)
                reference = out if reference is None else reference
                error = float(jnp.abs(out.astype(jnp.float32) - reference.astype(jnp.float32)).max())
                seconds = bench.time_calls(lambda: jax.block_until_ready(compiled(q, k, v, full_bias)),
                                           settings.iterations)
                record(f"attention_stage{stage + 1}_{label}_ms", seconds * 1e3)
                record(f"attention_stage{stage + 1}_{label}_max_diff", error)
            except Exception as error:  # noqa: BLE001 - cuDNN may refuse a shape: say so, measure the rest
                record(f"attention_stage{stage + 1}_{label}_error", f"{type(error).__name__}: {str(error)[:200]}")


def section_levers(args, journal: Journal, settings: Settings) -> None:
    import jax.numpy as jnp
    import run as bench

    from jaxbackbones import layers

    models = args.models.split(",")
    if "resnet50" in models:
        entry = bench.MODELS["resnet50"]
        for as_matmul in (False, True):
            label = "conv1x1_matmul" if as_matmul else "conv1x1_conv"
            with layers.rewrites.override("conv_as_matmul", as_matmul):
                journal.guarded(label, "ours", bench.ours, entry, settings.batch, settings.size(entry), jnp.bfloat16,
                                settings.iterations, journal.recorder(f"resnet50_{label}"), train=not settings.smoke,
                                rounds=settings.rounds)
    if "swin_tiny" in models:
        journal.guarded("swin_tiny_attention", "attention", window_attention_variants, settings,
                        journal.recorder("swin_tiny_attention"))
    for name in FOCUS:
        if name not in models:
            continue
        entry = bench.MODELS[name]
        config = entry.config()
        config.gradient_checkpointing = True
        journal.guarded(f"{name}_remat", "ours", bench.ours, entry, settings.batch, settings.size(entry),
                        jnp.bfloat16, settings.iterations, journal.recorder(f"{name}_remat"), config=config,
                        rounds=settings.rounds)


def top_device_ops(trace_dir: Path, count: int = 15) -> list:
    """The `count` kernels (device events; all events on CPU) that took longest in a perfetto trace, summed."""
    totals, devices = defaultdict(float), set()
    for path in trace_dir.rglob("*.trace.json.gz"):
        trace = json.load(gzip.open(path))
        events = trace.get("traceEvents", [])
        for event in events:
            if event.get("ph") == "M" and event.get("name") == "process_name":
                if "/device:" in str(event.get("args", {}).get("name", "")):
                    devices.add(event["pid"])
        for event in events:
            if event.get("ph") == "X" and (not devices or event.get("pid") in devices):
                totals[event["name"]] += float(event.get("dur", 0))
    ranked = sorted(totals.items(), key=lambda item: -item[1])[:count]
    return [[name[:120], round(micros / 1e3, 3)] for name, micros in ranked]


def section_profile(args, journal: Journal, settings: Settings) -> None:
    import jax
    import jax.numpy as jnp
    import run as bench

    out = Path(args.out) / "traces"
    for name in [name for name in FOCUS if name in args.models.split(",")]:
        def trace(name=name):
            entry = bench.MODELS[name]
            pixels = jax.random.normal(jax.random.key(0), (settings.batch, *settings.size(entry), 3), jnp.float32)
            model = bench.build_model(entry, jnp.bfloat16)
            infer, state, _ = bench.compile_inference(model, pixels)
            state = jax.tree.map(jnp.copy, state)  # the train step donates the model's own buffers
            step, _, _ = bench.compile_train_step(model, pixels)
            for _ in range(2):
                jax.block_until_ready(infer(state, pixels))
                step()
            folder = out / name
            with jax.profiler.trace(str(folder), create_perfetto_trace=True):
                for _ in range(3):
                    jax.block_until_ready(infer(state, pixels))
                for _ in range(3):
                    step()
            journal(name, "top_device_ops", top_device_ops(folder))
        journal.guarded(name, "profile", trace)


def section_flags(args, journal: Journal, settings: Settings) -> None:
    import jax.numpy as jnp
    import run as bench

    for name in [name for name in FOCUS if name in args.models.split(",")]:
        entry = bench.MODELS[name]
        label = f"{name} {args.xla_flags}"
        journal.guarded(label, "ours", bench.ours, entry, settings.batch, settings.size(entry), jnp.bfloat16,
                        settings.iterations, journal.recorder(label), rounds=settings.rounds)


def run_section(args) -> None:
    import run as bench

    out = Path(args.out)
    journal = Journal(out, args.section)
    settings = Settings(args.smoke)
    if not any(line.startswith('{"section": "environment"') for line in _lines(out / "gpu_session.jsonl")):
        Journal(out, "environment")("all", "environment", bench.environment())
    globals()[f"section_{args.section}"](args, journal, settings)


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.environ.get("OUT", "gpu-session-out"), help="output folder ($OUT)")
    parser.add_argument("--budget", type=float, default=480, help="seconds for all sections together")
    parser.add_argument("--sections", default=None,
                        help="comma-separated subset, in the default order: "
                             + ",".join(name for name, _ in SECTIONS + OPTIONAL_SECTIONS))
    parser.add_argument("--models", default=None, help="comma-separated subset of benchmarks/run.py's MODELS")
    parser.add_argument("--smoke", action="store_true", help="tiny batches and sizes, on whatever device is there")
    parser.add_argument("--keep", action="store_true", help="append to an existing journal instead of starting anew")
    parser.add_argument("--markdown", type=Path, help="print the README's GPU tables from a gpu_session.json")
    parser.add_argument("--section", help=argparse.SUPPRESS)
    parser.add_argument("--xla-flags", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    if args.markdown:
        print(markdown(json.loads(args.markdown.read_text())))
    elif args.section:
        run_section(args)
    else:
        drive(args)


if __name__ == "__main__":
    main()
