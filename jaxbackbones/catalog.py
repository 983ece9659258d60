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
from .image_processing import PROCESSOR_CLASSES, TimmImageProcessor
from .models.timm import TimmBackboneConfig, supported_architectures

IMAGENET = {"image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}
# The preprocessor_config.json of microsoft/resnet-* and of microsoft/swin-* (size 384 for the window12-384 ones).
RESNET_PREPROCESSING = {"feature_extractor_type": "ConvNextFeatureExtractor", "crop_pct": 0.875, "do_normalize": True,
                        "do_resize": True, "resample": 3, "size": 224, **IMAGENET}
SWIN_PREPROCESSING = {"feature_extractor_type": "ViTFeatureExtractor", "do_normalize": True, "do_resize": True,
                      "resample": 3, "size": 224, **IMAGENET}
_SWIN_BASE = dict(embed_dim=128, depths=[2, 2, 18, 2], num_heads=[4, 8, 16, 32])
_SWIN_LARGE = dict(embed_dim=192, depths=[2, 2, 18, 2], num_heads=[6, 12, 24, 48])
_AT_384 = dict(window_size=12, image_size=384)


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
        preprocessing = known.preprocessing
        kind = preprocessing["feature_extractor_type"].replace("FeatureExtractor", "ImageProcessor")
        return PROCESSOR_CLASSES[kind].from_dict(preprocessing)
    return TimmImageProcessor.from_pretrained_cfg(config.to_timm_dict()["pretrained_cfg"])


def stages(config: PretrainedConfig) -> list[tuple[str, int, int]]:
    """(name, channels, reduction) of every stage of the backbone `config` describes, without building weights.

    A timm architecture's spec states them. Otherwise the module is built abstractly (`nnx.eval_shape`), with one
    block per stage where the config has per-stage `depths`: a stage's channels and stride do not depend on its number
    of blocks (tests/test_catalog.py checks it for every family), and deep models build ten times faster.
    """
    spec = getattr(config, "timm_spec", None)
    if spec is not None and all(hasattr(spec, name) for name in ("stage_names", "num_features", "reductions")):
        return list(zip(spec.stage_names, spec.num_features, spec.reductions))
    depths = getattr(config, "depths", None)
    if isinstance(depths, list) and depths:
        config = type(config).from_dict(config.to_dict(), depths=[1] * len(depths))
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
