"""The `jaxbackbones` command."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

SAMPLE_IMAGE = Path(__file__).parent / "assets" / "sample.jpg"
DEFAULT_MODEL = "microsoft/resnet-50"


def _load_backbone(args):
    """(model, processor, note): the checkpoint's, or the named architecture with random weights when its weights
    cannot be had (or with --random-init). Raises `ValueError` when the architecture cannot be known offline."""
    from . import AutoBackbone
    from .image_processing import AutoImageProcessor

    selection = {key: list(value) for key, value in
                 (("out_indices", args.out_indices), ("out_features", args.out_features)) if value is not None}
    if not args.random_init:
        try:
            model = AutoBackbone.from_pretrained(args.model, **selection)
            return model, AutoImageProcessor.from_pretrained(args.model), None
        except OSError as error:
            reason = f"could not load {args.model!r} ({str(error).splitlines()[0]})"
    else:
        reason = "--random-init"
    config, processor = _architecture(args.model, selection, reason)
    model = AutoBackbone.from_config(config)
    model.eval()
    note = (f"{reason}; using the {args.model} architecture with RANDOM weights: the shapes are right, the values "
            "mean nothing")
    return model, processor, note


def _architecture(name: str, selection: dict, reason: str):
    """(config, processor) of the architecture `name` names, known without downloading: a timm architecture, a
    known hub repo id (`jaxbackbones models` lists both), or a local folder or cached hub config."""
    from . import AutoConfig, catalog
    from .image_processing import AutoImageProcessor

    config = None if Path(name).is_dir() else catalog.offline_config(name, **selection)
    if config is not None:
        return config, catalog.offline_processor(name, config)
    try:
        config = AutoConfig.from_pretrained(name, **selection)
        return config, AutoImageProcessor.from_pretrained(name)
    except OSError as error:
        raise ValueError(
            f"{reason}, and jaxbackbones cannot know the architecture of {name!r} without its config.json "
            f"({str(error).splitlines()[0]}). Offline it builds timm architecture names and the hub repos "
            "`jaxbackbones models` lists; for others, download the checkpoint once while online."
        ) from None


IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def _image_paths(inputs: list[Path]) -> list[Path]:
    """Files as given; folders expanded to their image files, sorted."""
    paths = []
    for path in inputs:
        if path.is_dir():
            paths += sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            paths.append(path)
        else:
            raise OSError(f"{path} is neither an image file nor a folder")
    if not paths:
        raise ValueError(f"no images found in {', '.join(map(str, inputs))}")
    return paths


def extract(args) -> int:
    """`jaxbackbones extract`: preprocess images, run the backbone under jit, print (save, plot) the feature maps."""
    import numpy as np
    from flax import nnx
    from PIL import Image
    from tqdm.auto import tqdm

    paths = _image_paths(args.images)
    model, processor, note = _load_backbone(args)
    if note:
        print(f"NOTE: {note}", file=sys.stderr)
    forward = nnx.jit(lambda module, pixels: module(pixels).feature_maps)
    pixel_batches, map_batches = [], []
    with tqdm(total=len(paths), unit="image", disable=len(paths) < 2 * args.batch_size) as progress:
        for start in range(0, len(paths), args.batch_size):
            chunk = paths[start:start + args.batch_size]
            pixel_values = processor([Image.open(path) for path in chunk])["pixel_values"]
            map_batches.append([np.asarray(m) for m in forward(model, pixel_values)])
            pixel_batches.append(pixel_values)
            progress.update(len(chunk))
    pixel_values = np.concatenate(pixel_batches)
    arrays = {name: np.concatenate([maps[i] for maps in map_batches])
              for i, name in enumerate(model.out_features)}

    print(f"{len(paths)} image(s), pixel_values {tuple(pixel_values.shape)} (NHWC)")
    print(f"{'stage':<8} {'shape (N, H, W, C)':<22} {'mean':>9} {'std':>9} {'min':>9} {'max':>9}")
    for name, array in arrays.items():
        print(f"{name:<8} {str(array.shape):<22} {array.mean():>9.4f} {array.std():>9.4f} "
              f"{array.min():>9.4f} {array.max():>9.4f}")
    if args.save:
        np.savez(args.save, **arrays)
        print(f"saved {', '.join(arrays)} to {args.save}")
    if args.plot:
        from .visualize import feature_map_grid

        feature_map_grid(pixel_values, arrays, [path.name for path in paths]).save(args.plot)
        print(f"plotted channel-mean maps to {args.plot}")
    return 0


DTYPES = {"float32": "float32", "bfloat16": "bfloat16"}


def convert(args) -> int:
    """`jaxbackbones convert`: a torch hub checkpoint -> a native folder, optionally verified against torch."""
    import jax.numpy as jnp

    from . import AutoBackbone, checkpoint, hub

    if args.out_dir.exists() and not args.force:
        print(f"error: {args.out_dir} already exists; pass --force to replace it", file=sys.stderr)
        return 2
    param_dtype = jnp.dtype(args.dtype)
    model, report = AutoBackbone.from_pretrained(args.source, revision=args.revision, param_dtype=param_dtype,
                                                 cache_conversion=False, output_loading_info=True, progress=True)
    print(report.summary())
    processor = hub.resolve_file(args.source, "preprocessor_config.json", revision=args.revision, required=False)
    checkpoint.save_native(model, args.out_dir, config_dict=hub.load_config_dict(args.source, revision=args.revision),
                           extra_files=[processor] if processor else [], newly_initialized=report.initialized,
                           overwrite=args.force)
    print(f"wrote {args.out_dir} ({jnp.dtype(param_dtype).name} parameters)")
    if args.verify:
        from .verify import verify

        return verify(args.source, args.revision, args.out_dir)
    return 0


def export(args) -> int:
    """`jaxbackbones export`: a native folder -> a torch checkpoint folder (transformers or timm layout)."""
    from .auto import export_pretrained

    export_pretrained(args.flax_dir, args.out_dir, layout=args.layout, overwrite=args.force)
    print(f"wrote {args.out_dir}" + (f" ({args.layout} layout)" if args.layout else ""))
    return 0


def info(args) -> int:
    """`jaxbackbones info`: stages, channels, reductions, parameter count and dtype, without loading weights."""
    import jax
    import numpy as np
    from flax import nnx

    from . import AutoBackbone, AutoConfig, checkpoint, hub
    from .initializers import abstract_module

    config_dict = hub.load_config_dict(args.model, revision=args.revision)
    config = AutoConfig.from_pretrained(args.model, revision=args.revision)
    for index_name in hub.SHARD_SUFFIXES:  # a shard index is checked as loading checks it; no shard is fetched
        index = hub.resolve_file(args.model, index_name, revision=args.revision, required=False)
        if index is not None:
            hub.shard_names(hub.inside_checkpoint(index))
    model = abstract_module(lambda: AutoBackbone.from_config(config))
    parameters = jax.tree_util.tree_leaves(nnx.state(model, nnx.Param))
    native = config_dict.get(checkpoint.NATIVE_KEY)
    stored = native["param_dtype"] if native else config_dict.get("dtype") or config_dict.get("torch_dtype")
    print(f"model_type   {config.model_type}" + (" (native jaxbackbones format)" if native else ""))
    if config.model_type == "timm_backbone":
        print(f"architecture {config.backbone}")
    print(f"parameters   {sum(int(np.prod(p.shape)) for p in parameters):,}")
    print(f"dtype        {stored or 'float32'}")
    print(f"out_features {config.out_features}")
    print(f"{'stage':<10} {'channels':>8} {'reduction':>9}")
    for name, channels, reduction in zip(model.stage_names, model.num_features, model.reductions):
        print(f"{name:<10} {channels:>8} {reduction:>9}")
    return 0


def models(args) -> int:
    """`jaxbackbones models`: every family, layout and architecture name, with its stages, without any weights."""
    from . import catalog

    pattern = (args.pattern or "").lower()
    for model_type, description, names in catalog.models():
        shown = [name for name in names if pattern in name.lower() or pattern in model_type]
        if not shown:
            continue
        print(f"{model_type}: {description}")
        width = max(42, *(len(name) + 1 for name in shown))
        for name in shown:
            stages = catalog.stages(catalog.config_of_listing(model_type, name))
            print(f"  {name:<{width}}" + "  ".join(f"{i}:{stage} {channels}/{reduction}"
                                               for i, (stage, channels, reduction) in enumerate(stages)))
    print("\nstages as out_indices:stage_name channels/reduction (the stride relative to the input); each name "
          "builds offline with `jaxbackbones extract --model NAME --random-init`")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `jaxbackbones` command; returns the exit status."""
    parser = argparse.ArgumentParser(prog="jaxbackbones", description="Vision backbones in JAX from hub checkpoints.")
    commands = parser.add_subparsers(dest="command", required=True)

    extract_parser = commands.add_parser("extract", help="print (and save) the feature maps of images")
    extract_parser.add_argument("images", nargs="*", type=Path, default=[SAMPLE_IMAGE],
                                help="image files or folders of images (default: the bundled sample image)")
    extract_parser.add_argument("--model", default=DEFAULT_MODEL,
                                help="hub repo id, local folder, or timm architecture name")
    selection = extract_parser.add_mutually_exclusive_group()
    selection.add_argument("--out-indices", type=int, nargs="+",
                           help="stage indices, e.g. 1 4 or -1 (default: the last four)")
    selection.add_argument("--out-features", nargs="+", help="stage names, e.g. stage1 stage4")
    extract_parser.add_argument("--random-init", action="store_true",
                                help="the --model architecture with random weights, no download")
    extract_parser.add_argument("--save", type=Path, help="write the feature maps to this .npz file")
    extract_parser.add_argument("--plot", type=Path, help="write a PNG grid of channel-mean maps per stage")
    extract_parser.add_argument("--batch-size", type=int, default=8, help="images per forward pass")
    extract_parser.set_defaults(handler=extract)

    convert_parser = commands.add_parser("convert", help="convert a torch hub checkpoint to the native format once")
    convert_parser.add_argument("source", help="hub repo id or local folder (transformers or timm layout)")
    convert_parser.add_argument("out_dir", type=Path, help="the native folder to write")
    convert_parser.add_argument("--revision", help="branch, tag or commit of a hub repo")
    convert_parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32", help="parameter dtype")
    convert_parser.add_argument("--verify", action="store_true",
                                help="compare every stage with the torch reference (needs torch)")
    convert_parser.add_argument("--force", action="store_true", help="replace an existing out_dir")
    convert_parser.set_defaults(handler=convert)

    export_parser = commands.add_parser("export", help="write a native folder back as a torch checkpoint")
    export_parser.add_argument("flax_dir", type=Path, help="a native folder (from convert or save_pretrained)")
    export_parser.add_argument("out_dir", type=Path, help="the torch checkpoint folder to write")
    export_parser.add_argument("--layout", choices=["transformers", "timm"],
                               help="the torch layout to write (default: the one the checkpoint came in)")
    export_parser.add_argument("--force", action="store_true", help="replace an existing out_dir")
    export_parser.set_defaults(handler=export)

    info_parser = commands.add_parser("info", help="stages, channels, reductions, parameter count, dtype")
    info_parser.add_argument("model", help="hub repo id or local folder")
    info_parser.add_argument("--revision")
    info_parser.set_defaults(handler=info)

    models_parser = commands.add_parser("models", help="supported families, layouts and architectures, with stages")
    models_parser.add_argument("pattern", nargs="?", help="show only names (or model types) containing this")
    models_parser.set_defaults(handler=models)

    args = parser.parse_args(argv)
    if args.command == "extract" and args.out_indices is None and args.out_features is None:
        # The last four stages: stage1-4 of the transformers layouts, timm's four ConvNeXt stages, a ViT's last blocks.
        args.out_indices = [-4, -3, -2, -1]
    try:
        return args.handler(args)
    except (OSError, ValueError) as error:  # user errors: a message, not a traceback
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
