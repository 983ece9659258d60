"""Throughput of jaxbackbones against the PyTorch baselines, measured in one process on one device.

    python benchmarks/run.py                      # CPU mode: fp32, batch 8, eager baselines
    python benchmarks/run.py --models resnet50,swin_tiny,convnext_tiny --batch 256 --dtype bfloat16 --torch-compile
    python benchmarks/run.py --models vit_small_dinov2 --batch 4     # at 518: its CPU train step needs ~8 GB

For each model: our jitted inference (compile time excluded and reported separately, peak memory) and
training step (forward + backward + optax SGD, BatchNorm in train mode), then the baselines on the same
device and batch: transformers' backbone eager (where transformers has the model), timm `features_only` eager
(channels_last for ResNet; ViTs use SDPA attention) and, with --torch-compile, timm under `torch.compile`; bf16 runs
use autocast. Four stages are returned (ViTs: blocks 3, 6, 9, 12). Each model runs at its checkpoint's size
(DINOv2: 518) unless --size is given.
Prints a table and writes JSON (default benchmarks/results/<date>-<device>.json).
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jaxbackbones import AutoBackbone, ConvNextConfig, Dinov2Config, ResNetConfig, SwinConfig, TimmBackboneConfig

_DINOV2_SMALL = dict(hidden_size=384, num_attention_heads=6, image_size=518, patch_size=14)
MODELS = {
    # name: (our config, transformers config kwargs, transformers class (None: not in transformers), timm
    # architecture, timm out_indices)
    "resnet50": (lambda: ResNetConfig(out_indices=[1, 2, 3, 4]), {}, "ResNet", "resnet50", (1, 2, 3, 4)),
    "resnet18": (lambda: ResNetConfig(layer_type="basic", hidden_sizes=[64, 128, 256, 512], depths=[2, 2, 2, 2],
                                      out_indices=[1, 2, 3, 4]),
                 dict(layer_type="basic", hidden_sizes=[64, 128, 256, 512], depths=[2, 2, 2, 2]), "ResNet",
                 "resnet18", (1, 2, 3, 4)),
    "swin_tiny": (lambda: SwinConfig(drop_path_rate=0.0, out_indices=[1, 2, 3, 4]),
                  dict(drop_path_rate=0.0), "Swin", "swin_tiny_patch4_window7_224", (0, 1, 2, 3)),
    # transformers' ConvNextBackbone needs hidden_sizes as a list (its own default, a tuple, fails)
    "convnext_tiny": (lambda: ConvNextConfig(out_indices=[1, 2, 3, 4]),
                      dict(hidden_sizes=[96, 192, 384, 768], depths=[3, 3, 9, 3]), "ConvNext", "convnext_tiny",
                      (0, 1, 2, 3)),
    "vit_small_dinov2": (lambda: Dinov2Config(**_DINOV2_SMALL, out_indices=[3, 6, 9, 12]), _DINOV2_SMALL, "Dinov2",
                         "vit_small_patch14_dinov2", (2, 5, 8, 11)),
    "vit_base_patch16_224": (lambda: TimmBackboneConfig("vit_base_patch16_224", out_indices=[2, 5, 8, 11]), None,
                             None, "vit_base_patch16_224", (2, 5, 8, 11)),
}
# Input sizes other than 224 (the checkpoint's).
SIZES = {"vit_small_dinov2": 518}


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


def peak_bytes(compiled) -> int | None:
    """Peak device memory of a run: the allocator's peak on GPU/TPU, XLA's buffer estimate elsewhere."""
    stats = jax.devices()[0].memory_stats()
    if stats and "peak_bytes_in_use" in stats:
        return int(stats["peak_bytes_in_use"])
    analysis = compiled.memory_analysis()
    if analysis is None:
        return None
    return int(analysis.temp_size_in_bytes + analysis.argument_size_in_bytes + analysis.output_size_in_bytes)


def ours(name: str, batch: int, size: int, dtype, iterations: int) -> dict:
    make_config = MODELS[name][0]
    model = AutoBackbone.from_config(make_config(), dtype=dtype)
    pixels = jax.random.normal(jax.random.key(0), (batch, size, size, 3), jnp.float32)

    model.eval()
    graphdef, state = nnx.split(model)
    infer = jax.jit(lambda state, x: nnx.merge(graphdef, state)(x).feature_maps)
    start = time.perf_counter()
    compiled_infer = infer.lower(state, pixels).compile()
    infer_compile = time.perf_counter() - start
    infer_time = time_calls(lambda: jax.block_until_ready(compiled_infer(state, pixels)), iterations)
    infer_memory = peak_bytes(compiled_infer)

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
    compiled_step = step.lower(params, rest, opt_state, pixels).compile()
    train_compile = time.perf_counter() - start
    carry = [params, rest, opt_state]

    def run_step():
        carry[0], carry[1], carry[2], loss = compiled_step(*carry, pixels)
        jax.block_until_ready(loss)

    train_time = time_calls(run_step, iterations)
    return {
        "inference_img_s": batch / infer_time, "inference_compile_s": infer_compile,
        "inference_peak_bytes": infer_memory,
        "train_img_s": batch / train_time, "train_compile_s": train_compile,
        "train_peak_bytes": peak_bytes(compiled_step),
    }


def torch_baselines(name: str, batch: int, size: int, dtype: str, iterations: int, compile_timm: bool) -> dict:
    import timm
    import torch
    import transformers

    device = "cuda" if torch.cuda.is_available() else "cpu"
    _, hf_kwargs, hf_family, timm_arch, timm_indices = MODELS[name]
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=dtype == "bfloat16")
    pixels = torch.randn(batch, 3, size, size, device=device)
    channels_last = name.startswith("resnet")
    results = {}

    def measure(label, model, train):
        model = model.to(device)
        inputs = pixels.contiguous(memory_format=torch.channels_last) if channels_last else pixels
        if channels_last:
            model = model.to(memory_format=torch.channels_last)

        def features(m):
            outputs = m(inputs)
            return outputs.feature_maps if hasattr(outputs, "feature_maps") else outputs

        if not train:
            model.eval()

            def call():
                with torch.no_grad(), autocast:
                    features(model)
                if device == "cuda":
                    torch.cuda.synchronize()
        else:
            model.train()
            optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

            def call():
                with autocast:
                    loss = sum(f.float().mean() for f in features(model))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if device == "cuda":
                    torch.cuda.synchronize()

        results[label] = batch / time_calls(call, iterations)

    if hf_family is not None:
        config_class = getattr(transformers, f"{hf_family}Config")
        backbone_class = getattr(transformers, f"{hf_family}Backbone")
        hf_config = config_class(**hf_kwargs, out_features=MODELS[name][0]().out_features)
        measure("transformers_eager_inference_img_s", backbone_class(hf_config), train=False)
    measure("timm_eager_inference_img_s", timm.create_model(timm_arch, features_only=True, out_indices=timm_indices),
            train=False)
    measure("timm_eager_train_img_s", timm.create_model(timm_arch, features_only=True, out_indices=timm_indices),
            train=True)
    if compile_timm:
        measure("timm_compile_inference_img_s", torch.compile(
            timm.create_model(timm_arch, features_only=True, out_indices=timm_indices)), train=False)
        measure("timm_compile_train_img_s", torch.compile(
            timm.create_model(timm_arch, features_only=True, out_indices=timm_indices)), train=True)
    return results


def environment() -> dict:
    import timm
    import torch
    import transformers

    return {
        "date": datetime.date.today().isoformat(), "device": str(jax.devices()[0].device_kind),
        "platform": jax.devices()[0].platform, "machine": platform.processor() or platform.machine(),
        "jax": jax.__version__, "flax": __import__("flax").__version__, "torch": torch.__version__,
        "transformers": transformers.__version__, "timm": timm.__version__,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="resnet50,swin_tiny,convnext_tiny")
    parser.add_argument("--batch", type=int, default=None, help="default: 8 on CPU, 256 on an accelerator")
    parser.add_argument("--size", type=int, default=None, help="default: each model's checkpoint size (224, 518)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default=None,
                        help="default: float32 on CPU, bfloat16 on an accelerator")
    parser.add_argument("--iterations", type=int, default=None, help="calls per timing run (default 3 CPU, 20 GPU)")
    parser.add_argument("--torch-compile", action="store_true", help="also time timm under torch.compile")
    parser.add_argument("--skip-torch", action="store_true", help="only our models")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()

    on_cpu = jax.devices()[0].platform == "cpu"
    batch = args.batch or (8 if on_cpu else 256)
    dtype = args.dtype or ("float32" if on_cpu else "bfloat16")
    iterations = args.iterations or (3 if on_cpu else 20)
    env = environment() if not args.skip_torch else {"date": datetime.date.today().isoformat(),
                                                     "device": str(jax.devices()[0].device_kind)}
    print(f"{env}\nbatch {batch}, {dtype}")

    rows = {}
    for name in args.models.split(","):
        size = args.size or SIZES.get(name, 224)
        row = {"size": size, **ours(name, batch, size, jnp.dtype(dtype), iterations)}
        if not args.skip_torch:
            row.update(torch_baselines(name, batch, size, dtype, iterations, args.torch_compile))
            for task in ("inference", "train"):
                for baseline in ("transformers_eager", "timm_eager", "timm_compile"):
                    if f"{baseline}_{task}_img_s" in row:
                        row[f"ratio_vs_{baseline}_{task}"] = row[f"{task}_img_s"] / row[f"{baseline}_{task}_img_s"]
        rows[name] = row

    print(f"\n{'model':<10} {'metric':<38} {'value':>12}")
    for name, row in rows.items():
        for metric, value in row.items():
            shown = "n/a" if value is None else (f"{value:,.2f}" if isinstance(value, float) else f"{value:,}")
            print(f"{name:<10} {metric:<38} {shown:>12}")

    output = args.output or Path(__file__).parent / "results" / f"{env['date']}-{env['device'].replace(' ', '_')}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps({"environment": env, "batch": batch, "dtype": dtype,
                                  "results": rows}, indent=2) + "\n")
    print(f"\nwrote {output}")


if __name__ == "__main__":
    main()
