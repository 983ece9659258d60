"""What jaxbackbones builds without downloading anything: the architecture a name stands for, and the stages of
every supported model.

A name is a timm architecture (`resnet50`, `swin_tiny_patch4_window7_224`, with or without a pretrained tag, or as a
`timm/` repo id: every entry of `models.timm.supported_architectures()`), or a hub repo id of `KNOWN_CHECKPOINTS`,
whose `config.json` and preprocessing are stated here. A family adds its repo ids as rows of that table; `models`
(the `jaxbackbones models` command) lists `auto.FAMILIES`, their known repos and the timm architectures.
"""

from __future__ import annotations

import dataclasses
import re

from .auto import FAMILIES, AutoBackbone, AutoConfig
from .configuration import PretrainedConfig
from .image_processing import TimmImageProcessor, processor_class
from .models.timm import TimmBackboneConfig, supported_architectures

IMAGENET = {"image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}
# The preprocessor_config.json of microsoft/resnet-* and of facebook/convnext-*-224* (ConvNextFeatureExtractor(size=224)
# in transformers' convert_convnext_to_pytorch.py; size 384 for the -384 ones), and of microsoft/swin-* (size 384 for
# the window12-384 ones).
RESNET_PREPROCESSING = {"feature_extractor_type": "ConvNextFeatureExtractor", "crop_pct": 0.875, "do_normalize": True,
                        "do_resize": True, "resample": 3, "size": 224, **IMAGENET}
SWIN_PREPROCESSING = {"feature_extractor_type": "ViTFeatureExtractor", "do_normalize": True, "do_resize": True,
                      "resample": 3, "size": 224, **IMAGENET}
# facebook/convnextv2-*: ConvNextImageProcessor(size=224 or 384, crop_pct=224 / 256 (None, the same, at 384),
# ImageNet mean and std, bicubic), as convert_convnextv2_to_pytorch.py saves it.
CONVNEXTV2_PREPROCESSING = {"image_processor_type": "ConvNextImageProcessor", "crop_pct": 0.875, "do_normalize": True,
                            "do_rescale": True, "do_resize": True, "resample": 3, "rescale_factor": 1 / 255,
                            "size": {"shortest_edge": 224}, **IMAGENET}
# facebook/dinov2-* and facebook/dinov2-with-registers-*: BitImageProcessor(size={"shortest_edge": 256}, bicubic,
# ImageNet mean and std; its default centre crop of 224), as convert_dinov2_to_hf.py and
# convert_dinov2_with_registers_to_hf.py save it.
DINOV2_PREPROCESSING = {"image_processor_type": "BitImageProcessor", "crop_size": {"height": 224, "width": 224},
                        "do_center_crop": True, "do_convert_rgb": True, "do_normalize": True, "do_rescale": True,
                        "do_resize": True, "resample": 3, "rescale_factor": 1 / 255, "size": {"shortest_edge": 256},
                        **IMAGENET}
# facebook/dinov3-vit*-pretrain-lvd1689m and facebook/dinov3-convnext-*-pretrain-lvd1689m:
# DINOv3ViTImageProcessorFast(size={"height": 224, "width": 224}, resample=2 (bilinear)), as convert_dinov3_vit_to_hf.py
# and convert_dinov3_convnext_to_hf.py save it (with transformers 4.56, which writes the unset options as null).
DINOV3_PREPROCESSING = {"image_processor_type": "DINOv3ViTImageProcessorFast", "crop_size": None,
                        "data_format": "channels_first", "default_to_square": True, "device": None,
                        "disable_grouping": None, "do_center_crop": None, "do_convert_rgb": None, "do_normalize": True,
                        "do_rescale": True, "do_resize": True, "input_data_format": None, "resample": 2,
                        "rescale_factor": 1 / 255, "return_tensors": None, "size": {"height": 224, "width": 224},
                        **IMAGENET}
_SWIN_BASE = dict(embed_dim=128, depths=[2, 2, 18, 2], num_heads=[4, 8, 16, 32])
_SWIN_LARGE = dict(embed_dim=192, depths=[2, 2, 18, 2], num_heads=[6, 12, 24, 48])
_AT_384 = dict(window_size=12, image_size=384)
# ConvNeXt sizes (depths, hidden_sizes), as transformers' ConvNeXt, V2 and DINOv3-ConvNeXt conversion scripts
# state them.
_CONVNEXT_SIZES = {
    "atto": ([2, 2, 6, 2], [40, 80, 160, 320]),
    "femto": ([2, 2, 6, 2], [48, 96, 192, 384]),
    "pico": ([2, 2, 6, 2], [64, 128, 256, 512]),
    "nano": ([2, 2, 8, 2], [80, 160, 320, 640]),
    "tiny": ([3, 3, 9, 3], [96, 192, 384, 768]),
    "small": ([3, 3, 27, 3], [96, 192, 384, 768]),
    "base": ([3, 3, 27, 3], [128, 256, 512, 1024]),
    "large": ([3, 3, 27, 3], [192, 384, 768, 1536]),
    "xlarge": ([3, 3, 27, 3], [256, 512, 1024, 2048]),
    "huge": ([3, 3, 27, 3], [352, 704, 1408, 2816]),
}


def _convnext(size: str) -> dict:
    depths, hidden_sizes = _CONVNEXT_SIZES[size]
    return dict(depths=depths, hidden_sizes=hidden_sizes)


def _resolution(name: str) -> int:
    """The input size a ConvNeXt repo name states ("base-384-22k-1k" -> 384)."""
    return next(int(part) for part in name.split("-") if part in ("224", "384"))


# DINOv2 sizes: convert_dinov2_to_hf.py (and the registers one) start from image_size=518, patch_size=14.
_DINOV2_SIZES = {
    "small": dict(hidden_size=384, num_attention_heads=6),
    "base": {},
    "large": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16),
    "giant": dict(hidden_size=1536, num_hidden_layers=40, num_attention_heads=24, use_swiglu_ffn=True),
}
_AT_518 = dict(image_size=518, patch_size=14)
# DINOv3 ViT sizes, as convert_dinov3_vit_to_hf.py states them (all with 4 register tokens).
_GATED = dict(use_gated_mlp=True, hidden_act="silu")
_DINOV3_VIT_SIZES = {
    "vits16": {},
    "vits16plus": _GATED,
    "vitb16": dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12),
    "vitl16": dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16),
    "vith16plus": dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
                       **_GATED),
    "vit7b16": dict(hidden_size=4096, intermediate_size=8192, num_hidden_layers=40, num_attention_heads=32,
                    query_bias=False, value_bias=False, **_GATED),
}


@dataclasses.dataclass(frozen=True)
class KnownCheckpoint:
    """A hub checkpoint's architecture, stated: its `model_type`, the `config.json` values that differ from the
    config class's defaults, and its `preprocessor_config.json`."""

    model_type: str
    config: dict
    preprocessing: dict


KNOWN_CHECKPOINTS: dict[str, KnownCheckpoint] = {
    "microsoft/resnet-18": KnownCheckpoint("resnet", dict(layer_type="basic", hidden_sizes=[64, 128, 256, 512],
                                                          depths=[2, 2, 2, 2]), RESNET_PREPROCESSING),
    "microsoft/resnet-34": KnownCheckpoint("resnet", dict(layer_type="basic", hidden_sizes=[64, 128, 256, 512],
                                                          depths=[3, 4, 6, 3]), RESNET_PREPROCESSING),
    "microsoft/resnet-50": KnownCheckpoint("resnet", {}, RESNET_PREPROCESSING),
    "microsoft/resnet-101": KnownCheckpoint("resnet", dict(depths=[3, 4, 23, 3]), RESNET_PREPROCESSING),
    "microsoft/resnet-152": KnownCheckpoint("resnet", dict(depths=[3, 8, 36, 3]), RESNET_PREPROCESSING),
    "microsoft/swin-tiny-patch4-window7-224": KnownCheckpoint("swin", {}, SWIN_PREPROCESSING),
    "microsoft/swin-small-patch4-window7-224": KnownCheckpoint("swin", dict(depths=[2, 2, 18, 2]),
                                                               SWIN_PREPROCESSING),
    "microsoft/swin-base-patch4-window7-224": KnownCheckpoint("swin", _SWIN_BASE, SWIN_PREPROCESSING),
    "microsoft/swin-base-patch4-window12-384": KnownCheckpoint("swin", {**_SWIN_BASE, **_AT_384},
                                                               {**SWIN_PREPROCESSING, "size": 384}),
    "microsoft/swin-large-patch4-window7-224": KnownCheckpoint("swin", _SWIN_LARGE, SWIN_PREPROCESSING),
    "microsoft/swin-large-patch4-window12-384": KnownCheckpoint("swin", {**_SWIN_LARGE, **_AT_384},
                                                                {**SWIN_PREPROCESSING, "size": 384}),
    # size-resolution[-data] as convert_convnext_to_pytorch.py and convert_convnextv2_to_pytorch.py name them
    **{f"facebook/convnext-{name}": KnownCheckpoint(
        "convnext", _convnext(name.split("-")[0]), {**RESNET_PREPROCESSING, "size": _resolution(name)})
       for name in ("tiny-224", "small-224", "base-224", "large-224", "base-384", "large-384", "base-224-22k-1k",
                    "base-384-22k-1k", "large-224-22k-1k", "large-384-22k-1k", "xlarge-224-22k-1k",
                    "xlarge-384-22k-1k")},
    **{f"facebook/convnextv2-{name}": KnownCheckpoint(
        "convnextv2", _convnext(name.split("-")[0]),
        {**CONVNEXTV2_PREPROCESSING, "size": {"shortest_edge": _resolution(name)}})
       for name in ("atto-1k-224", "femto-1k-224", "pico-1k-224", "nano-1k-224", "tiny-1k-224", "base-1k-224",
                    "large-1k-224", "huge-1k-224", "nano-22k-384", "tiny-22k-224", "tiny-22k-384", "base-22k-224",
                    "base-22k-384", "large-22k-224", "large-22k-384")},
    **{f"facebook/dinov3-convnext-{size}-pretrain-lvd1689m": KnownCheckpoint(
        "dinov3_convnext", _convnext(size), DINOV3_PREPROCESSING) for size in ("tiny", "small", "base", "large")},
    **{f"facebook/dinov2-{size}": KnownCheckpoint("dinov2", {**_AT_518, **config}, DINOV2_PREPROCESSING)
       for size, config in _DINOV2_SIZES.items()},
    **{f"facebook/dinov2-with-registers-{size}": KnownCheckpoint(
        "dinov2_with_registers", {**_AT_518, **config}, DINOV2_PREPROCESSING)
       for size, config in _DINOV2_SIZES.items()},
    **{f"facebook/dinov3-{size}-pretrain-lvd1689m": KnownCheckpoint(
        "dinov3_vit", {**config, "num_register_tokens": 4}, DINOV3_PREPROCESSING)
       for size, config in _DINOV3_VIT_SIZES.items()},
}


def timm_architecture(name: str) -> str | None:
    """The timm architecture `name` stands for (`resnet50`, `resnet50.a1_in1k`, `timm/resnet50.a1_in1k`), if
    jaxbackbones builds it."""
    organisation, _, model = str(name).rpartition("/")
    if organisation not in ("", "timm"):
        return None
    architecture = model.split(".")[0]
    return architecture if architecture in supported_architectures() else None


def offline_config(name: str, **kwargs) -> PretrainedConfig | None:
    """The config of the architecture `name` names without the network (timm names, `KNOWN_CHECKPOINTS`), with
    `kwargs` (e.g. `out_indices`) applied; None if it is neither."""
    architecture = timm_architecture(name)
    if architecture is not None:
        return TimmBackboneConfig(backbone=architecture, **kwargs)
    known = KNOWN_CHECKPOINTS.get(str(name))
    if known is None:
        return None
    return AutoConfig.for_model(known.model_type, **{**known.config, **kwargs})


def offline_processor(name: str, config: PretrainedConfig):
    """The preprocessing of `offline_config(name)`: the known checkpoint's, or timm's defaults for the architecture."""
    known = KNOWN_CHECKPOINTS.get(str(name))
    if known is not None:
        return processor_class(known.preprocessing, f"the preprocessing of {name}").from_dict(known.preprocessing)
    return TimmImageProcessor.from_pretrained_cfg(config.to_timm_dict()["pretrained_cfg"])


def stages(config: PretrainedConfig) -> list[tuple[str, int, int]]:
    """(name, channels, reduction) of every stage of the backbone `config` describes, without building weights.

    A timm architecture's spec states them. Otherwise the module is built abstractly (`nnx.eval_shape`), with one
    block per stage where the config has per-stage `depths`: a stage's channels and stride do not depend on its number
    of blocks; and with one layer where the config has `num_hidden_layers` (ViTs, a stage per layer): every layer's
    stage is the first one's. tests/test_catalog.py checks both for every family; deep models list ten times faster.
    """
    spec = getattr(config, "timm_spec", None)
    if spec is not None and all(hasattr(spec, name) for name in ("stage_names", "num_features", "reductions")):
        return list(zip(spec.stage_names, spec.num_features, spec.reductions))
    depths = getattr(config, "depths", None)
    if isinstance(depths, list) and depths:
        config = type(config).from_dict(config.to_dict(), depths=[1] * len(depths))
    layers = getattr(config, "num_hidden_layers", None)
    if isinstance(layers, int) and layers > 1:
        one_layer = {**config.to_dict(), "num_hidden_layers": 1, "out_features": None, "out_indices": None}
        stem, (_, channels, reduction) = _traced_stages(type(config).from_dict(one_layer))
        return [stem] + [(name, channels, reduction) for name in config.stage_names[1:]]
    return _traced_stages(config)


def _traced_stages(config: PretrainedConfig) -> list[tuple[str, int, int]]:
    from flax import nnx

    model = nnx.eval_shape(lambda: AutoBackbone.from_config(config))
    return list(zip(model.stage_names, model.num_features, model.reductions))


def _natural(name: str) -> list:
    """resnet18 before resnet101: digit runs compare as numbers."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def models() -> list[tuple[str, str, list[str]]]:
    """Every supported family with the names `offline_config` knows for it: (model_type, description, names).

    A family without known names is listed with its default config (the name is its model_type)."""
    listing = []
    for model_type, family in FAMILIES.items():
        description = (f"{family.layout} layout, {family.config_class.__name__} -> "
                       f"{family.backbone_class.__name__}")
        names = [name for name, known in KNOWN_CHECKPOINTS.items() if known.model_type == model_type]
        if family.config_class is TimmBackboneConfig:
            names += sorted(supported_architectures(), key=_natural)
        listing.append((model_type, description, names or [model_type]))
    return listing


def config_of_listing(model_type: str, name: str) -> PretrainedConfig:
    """The config a `models()` entry names (its default config when the name is the model_type)."""
    return AutoConfig.for_model(model_type) if name == model_type else offline_config(name)
