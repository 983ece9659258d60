"""Memory of `from_pretrained(..., mesh=, shard_axis=)` on 8 virtual CPU devices, for one big checkpoint.

    python benchmarks/sharded_loading.py                     # Swin-L (197M parameters), transformers layout
    python benchmarks/sharded_loading.py --model vit_large                   # DINOv2 ViT-L/14 (304M parameters)
    python benchmarks/sharded_loading.py --model swin_base --shard-size 100MB
    python benchmarks/sharded_loading.py --model sam_huge --shard-size 500MB  # SAM ViT-H (SamModel checkpoint)

Writes the model's checkpoint with random weights in the hub's layout (`save_pretrained`: one `model.safetensors`,
and a sharded copy with `model.safetensors.index.json`), then loads each, in a fresh process with
`XLA_FLAGS=--xla_force_host_platform_device_count=8`, onto a mesh of the 8 devices with FSDP sharding
(`shard_axis`): every array split along its largest dimension 8 divides, the rest replicated. For comparison, the
same process also runs the way loading onto a mesh used to work: the whole model on one device, then resharded
(`sharding.shard_model`).

Reported per load: the bytes of model state each device holds (the sum of its addressable shards' sizes), and the
host's peak resident-memory growth during the load (sampled every millisecond from /proc, over a baseline taken
after JAX has started), both against the checkpoint's size. On CPU the 8 devices live in host memory, so the host
peak includes what the devices hold; `host peak - devices` is what the loading itself needs beyond that.
Prints a table and writes JSON.

A model is one entry of MODELS: a transformers config class, the model class whose checkpoint to write, and the
config's arguments; its `model_type` must be one that jaxbackbones loads.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from convert import timed_peak

DEVICES = 8
# name -> (transformers config class, model class to save, config arguments)
MODELS = {
    "swin_large": ("SwinConfig", "SwinForImageClassification",
                   dict(embed_dim=192, depths=[2, 2, 18, 2], num_heads=[6, 12, 24, 48], window_size=7)),
    "swin_base": ("SwinConfig", "SwinForImageClassification",
                  dict(embed_dim=128, depths=[2, 2, 18, 2], num_heads=[4, 8, 16, 32], window_size=7)),
    "vit_large": ("Dinov2Config", "Dinov2Model", dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                                                      patch_size=14, image_size=518)),
    "resnet50": ("ResNetConfig", "ResNetForImageClassification", {}),
    # facebook/sam-vit-huge's layout: a SamModel, whose image encoder (ViT-H, 632M of its 641M parameters) is loaded
    "sam_huge": ("SamConfig", "SamModel", dict(vision_config=dict(hidden_size=1280, num_hidden_layers=32,
                                                                   num_attention_heads=16,
                                                                   global_attn_indexes=[7, 15, 23, 31]))),
}
LOADS = {
    "mesh": ("model.safetensors, straight onto the mesh", "single"),
    "mesh_index": ("sharded index, file by file onto the mesh", "sharded"),
    "one_device_then_shard": ("model.safetensors, one device then resharded (before)", "single"),
}


def measure(folder: str, load: str) -> dict:
    """Run in a fresh process with 8 devices: one load, its time, peak memory and what each device holds."""
    import jax
    import jax.numpy as jnp

    from jaxbackbones import AutoBackbone, sharding
    from jaxbackbones.checkpoint import flat_state

    mesh = sharding.make_mesh((jax.device_count(),), ("fsdp",))
    jax.block_until_ready(jax.device_put(jnp.ones(DEVICES), jax.sharding.NamedSharding(
        mesh, jax.sharding.PartitionSpec("fsdp"))))  # start the runtime on every device before the baseline

    def run():
        if load == "one_device_then_shard":
            model = sharding.shard_model(AutoBackbone.from_pretrained(folder, cache_conversion=False), mesh, "fsdp")
        else:
            model = AutoBackbone.from_pretrained(folder, mesh=mesh, shard_axis="fsdp", cache_conversion=False)
        return jax.block_until_ready(model)

    model, seconds, peak = timed_peak(run)

    held: dict[str, int] = {}
    for variable in flat_state(model).values():
        for shard in variable[...].addressable_shards:
            held[str(shard.device)] = held.get(str(shard.device), 0) + shard.data.nbytes
    return {"seconds": seconds, "peak_rss_growth_bytes": peak,
            "device_bytes": held, "devices": jax.device_count(),
            "model_bytes": sum(variable[...].nbytes for variable in flat_state(model).values())}


def write_checkpoints(name: str, workdir: Path, shard_size: str) -> dict:
    """The model's checkpoint, random weights, as one file and as a sharded index; their sizes."""
    import torch
    import transformers

    config_name, model_name, kwargs = MODELS[name]
    torch.manual_seed(0)
    model = getattr(transformers, model_name)(getattr(transformers, config_name)(**kwargs))
    model.save_pretrained(workdir / "single")
    model.save_pretrained(workdir / "sharded", max_shard_size=shard_size)
    shards = sorted((workdir / "sharded").glob("*.safetensors"))
    return {"parameters": sum(p.numel() for p in model.parameters()),
            "checkpoint_bytes": (workdir / "single" / "model.safetensors").stat().st_size,
            "shard_files": len(shards), "largest_shard_bytes": max(path.stat().st_size for path in shards)}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="swin_large", choices=sorted(MODELS))
    parser.add_argument("--shard-size", default="200MB", help="max_shard_size of the sharded copy")
    parser.add_argument("--repeats", type=int, default=1, help="loads of each kind (the lowest peak is reported)")
    parser.add_argument("--output", type=Path)
    parser.add_argument("--measure", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(*args.measure)))
        return

    env = dict(os.environ)
    env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={DEVICES}".strip()
    rows = {}
    with tempfile.TemporaryDirectory() as workdir:
        checkpoint = write_checkpoints(args.model, Path(workdir), args.shard_size)
        for _ in range(args.repeats):
            for load, (_, folder) in LOADS.items():
                output = subprocess.run([sys.executable, __file__, "--measure", str(Path(workdir) / folder), load],
                                        check=True, capture_output=True, text=True, env=env).stdout
                result = json.loads(output.strip().splitlines()[-1])
                if load not in rows or result["peak_rss_growth_bytes"] < rows[load]["peak_rss_growth_bytes"]:
                    rows[load] = result

    size = checkpoint["checkpoint_bytes"]
    print(f"{args.model}: {checkpoint['parameters'] / 1e6:.0f}M parameters, checkpoint {size / 1e6:.0f} MB "
          f"({checkpoint['shard_files']} files of at most {checkpoint['largest_shard_bytes'] / 1e6:.0f} MB sharded), "
          f"{DEVICES} CPU devices, FSDP")
    print(f"{'load':<56} {'s':>6} {'MB/device':>10} {'/ckpt':>6} {'host peak MB':>13} {'/ckpt':>6} "
          f"{'peak-devices MB':>16} {'/ckpt':>6}")
    for load, result in rows.items():
        per_device = max(result["device_bytes"].values())
        overhead = result["peak_rss_growth_bytes"] - sum(result["device_bytes"].values())
        result.update(max_device_bytes=per_device, peak_minus_devices_bytes=overhead)
        print(f"{LOADS[load][0]:<56} {result['seconds']:>6.2f} {per_device / 1e6:>10.1f} {per_device / size:>6.3f} "
              f"{result['peak_rss_growth_bytes'] / 1e6:>13.0f} {result['peak_rss_growth_bytes'] / size:>6.2f} "
              f"{overhead / 1e6:>16.0f} {overhead / size:>6.2f}")
    from run import cpu_description

    date = datetime.date.today().isoformat()
    output = args.output or Path(__file__).parent / "results" / f"{date}-sharded-loading-{args.model}-cpu.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps({"date": date, "model": args.model, "config": MODELS[args.model][2],
                                  "cpu": cpu_description()["cpu"], "devices": DEVICES,
                                  "checkpoint": checkpoint, "loads": rows}, indent=2) + "\n")
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
