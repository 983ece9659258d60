"""Conversion time and peak memory of full-size checkpoints, and `from_pretrained` time from the native format.

    python benchmarks/convert.py
    python benchmarks/convert.py --models sam_huge --bin    # SAM ViT-H, also from pytorch_model.bin

Writes transformers checkpoints of full-size ResNet-50, Swin-T, ConvNeXt-T, MiT-b2 and PVTv2-b2 (random weights, the hub's layout),
then, each in a fresh process: `AutoBackbone.from_pretrained(torch folder)` (read + convert + place on device: "convert"),
the same followed by `save_pretrained` (what `jaxbackbones convert` does: "convert_to_native"),
`AutoBackbone.from_pretrained(native folder)` ("native_load") and, with `--bin`, from a `pytorch_model.bin` copy of the
checkpoint ("convert_bin"). Peak memory is the process's peak resident-memory growth over
a baseline taken after JAX has started (the loaded model included), as a multiple of the checkpoint's size; for
the .bin, after torch is imported too (its libraries, ~0.5 GB whatever the checkpoint, are recorded apart).
Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import datetime
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

CHECKPOINTS = {
    "resnet50": ("ResNetConfig", "ResNetForImageClassification", {}),
    "swin_tiny": ("SwinConfig", "SwinForImageClassification", {}),
    "convnext_tiny": ("ConvNextConfig", "ConvNextForImageClassification",
                      dict(hidden_sizes=[96, 192, 384, 768], depths=[3, 3, 9, 3])),
    "mit_b2": ("SegformerConfig", "SegformerForImageClassification",
               dict(hidden_sizes=[64, 128, 320, 512], depths=[3, 4, 6, 3], decoder_hidden_size=768)),
    "pvt_v2_b2": ("PvtV2Config", "PvtV2ForImageClassification",
                  dict(hidden_sizes=[64, 128, 320, 512], depths=[3, 4, 6, 3])),
    "hiera_tiny": ("HieraConfig", "HieraForImageClassification", dict(depths=[1, 2, 7, 2])),
}
# Run only when named (`--models sam_huge`): SAM ViT-H's SamModel checkpoint (641M parameters, 2.6 GB), of which the
# image encoder (632M) is converted and loaded.
LARGE_CHECKPOINTS = {
    "sam_huge": ("SamConfig", "SamModel", dict(vision_config=dict(hidden_size=1280, num_hidden_layers=32,
                                                                   num_attention_heads=16,
                                                                   global_attn_indexes=[7, 15, 23, 31]))),
}


def resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def measure(folder: str, save_to: str | None = None) -> dict:
    """Run in a fresh process: time and peak resident-memory growth of one from_pretrained (and, with `save_to`, of
    writing the model there as a native folder too: what `jaxbackbones convert` does).

    The peak is sampled every millisecond from /proc (the kernel's own high-water mark would still hold JAX's
    start-up peak).
    """
    import jax
    import jax.numpy as jnp

    from jaxbackbones import AutoBackbone

    def run():
        model = AutoBackbone.from_pretrained(folder, cache_conversion=False)
        jax.block_until_ready(jax.tree_util.tree_leaves(model))
        if save_to:
            model.save_pretrained(save_to)

    jax.block_until_ready(jnp.ones(1) + 1)  # start the runtime before the baseline
    facts = {}
    if any(Path(folder).glob("*.bin")):  # torch's libraries: a fixed cost (~0.5 GB), apart from the checkpoint's
        before = resident_bytes()
        import torch  # noqa: F401

        facts["torch_import_bytes"] = resident_bytes() - before
    _, seconds, peak = timed_peak(run)
    return {"seconds": seconds, "peak_rss_growth_bytes": peak, **facts}


def timed_peak(run):
    """(run()'s result, its seconds, the peak growth of resident memory while it ran), the peak sampled every
    millisecond from /proc."""
    baseline = resident_bytes()
    peak = [baseline]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], resident_bytes())
            time.sleep(0.001)

    sampler = threading.Thread(target=sample)
    sampler.start()
    start = time.perf_counter()
    result = run()
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    return result, seconds, max(peak[0], resident_bytes()) - baseline


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--save-to", help=argparse.SUPPRESS)
    parser.add_argument("--bin", action="store_true",
                        help="also write the checkpoint as pytorch_model.bin and time its conversion")
    parser.add_argument("--output", type=Path)
    parser.add_argument("--models", default=None,
                        help=f"comma-separated subset of {sorted(CHECKPOINTS)} and {sorted(LARGE_CHECKPOINTS)} "
                             "(default: the former)")
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.save_to)))
        return

    import transformers
    from run import cpu_description

    from jaxbackbones import AutoBackbone

    rows = {}
    with tempfile.TemporaryDirectory() as workdir:
        known = {**CHECKPOINTS, **LARGE_CHECKPOINTS}
        names = args.models.split(",") if args.models else list(CHECKPOINTS)
        for name in names:
            config_name, model_name, kwargs = known[name]
            torch_dir, native_dir = Path(workdir) / f"{name}-torch", Path(workdir) / f"{name}-native"
            bin_dir = Path(workdir) / f"{name}-bin"
            model = getattr(transformers, model_name)(getattr(transformers, config_name)(**kwargs))
            model.save_pretrained(torch_dir)
            if args.bin:  # transformers 5 writes safetensors only
                import torch

                bin_dir.mkdir()
                torch.save(model.state_dict(), bin_dir / "pytorch_model.bin")
                shutil.copyfile(torch_dir / "config.json", bin_dir / "config.json")
            del model
            AutoBackbone.from_pretrained(torch_dir, cache_conversion=False).save_pretrained(native_dir)
            size = sum(path.stat().st_size for path in torch_dir.glob("*.safetensors"))
            row = {"checkpoint_bytes": size}
            # convert: load the safetensors checkpoint; convert_to_native: and write it as a native folder
            loads = [("convert", torch_dir, None), ("convert_to_native", torch_dir, Path(workdir) / f"{name}-out"),
                     ("native_load", native_dir, None)] + ([("convert_bin", bin_dir, None)] if args.bin else [])
            for kind, folder, save_to in loads:
                command = [sys.executable, __file__, "--measure", str(folder)]
                output = subprocess.run(command + (["--save-to", str(save_to)] if save_to else []), check=True,
                                        capture_output=True, text=True).stdout
                result = json.loads(output.strip().splitlines()[-1])
                row[f"{kind}_s"] = result["seconds"]
                row[f"{kind}_peak_over_checkpoint"] = result["peak_rss_growth_bytes"] / size
                if "torch_import_bytes" in result:
                    row[f"{kind}_torch_import_bytes"] = result["torch_import_bytes"]
            rows[name] = row

    kinds = [kind for kind in ("convert", "convert_to_native", "native_load", "convert_bin") if f"{kind}_s" in row]
    print(f"{'model':<14} {'checkpoint MB':>13}" + "".join(f" {kind + ' s':>21} {'peak/ckpt':>9}" for kind in kinds))
    for name, row in rows.items():
        print(f"{name:<14} {row['checkpoint_bytes'] / 1e6:>13.1f}" + "".join(
            f" {row[f'{kind}_s']:>21.2f} {row[f'{kind}_peak_over_checkpoint']:>9.2f}" for kind in kinds))
    date = datetime.date.today().isoformat()
    suffix = f"-{args.models.replace(',', '-')}" if args.models else ""
    output = args.output or Path(__file__).parent / "results" / f"{date}-conversion-cpu{suffix}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps({"date": date, "cpu": cpu_description()["cpu"],
                                  "results": rows}, indent=2) + "\n")
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
