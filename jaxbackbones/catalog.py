"""What jaxbackbones builds without downloading anything: the architecture a name stands for, and the stages of
every supported model.

A name is a timm architecture (`resnet50`, `swin_tiny_patch4_window7_224`, with or without a pretrained tag, or as a
`timm/` repo id: every entry of `models.timm.supported_architectures()`), or a hub repo id of `KNOWN_CHECKPOINTS`,
whose `config.json` and preprocessing are stated offline: the `checkpoints` of every family in `jaxbackbones.registry`
(each family's rows sit in its `jaxbackbones/families/<name>.py`). `models` (the `jaxbackbones models` command) lists
`auto.FAMILIES`, their known repos and the timm architectures.
"""

from __future__ import annotations

import json
import re

from . import registry
from .auto import FAMILIES, AutoBackbone, AutoConfig
from .configuration import PretrainedConfig
from .families.convnext import CONVNEXTV2_PREPROCESSING
from .families.preprocessing import DINOV3_PREPROCESSING, IMAGENET, RESNET_PREPROCESSING
from .families.swin import SWIN_PREPROCESSING
from .families.vit import DINOV2_PREPROCESSING
from .image_processing import TimmImageProcessor, processor_class
from .initializers import abstract_module
from .models.timm import TimmBackboneConfig, supported_architectures
from .registry import KnownCheckpoint

__all__ = ["CONVNEXTV2_PREPROCESSING", "DINOV2_PREPROCESSING", "DINOV3_PREPROCESSING", "IMAGENET", "KNOWN_CHECKPOINTS",
           "RESNET_PREPROCESSING", "SWIN_PREPROCESSING", "KnownCheckpoint", "config_of_listing", "models",
           "offline_config", "offline_processor", "stages", "timm_architecture"]

KNOWN_CHECKPOINTS: dict[str, KnownCheckpoint] = registry.known_checkpoints()


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
    Configs that differ only in their stage selection share one trace (the head rows repeat their backbones).
    """
    selection = ("out_features", "out_indices", "_out_features", "_out_indices")
    key = json.dumps({name: value for name, value in config.to_dict().items() if name not in selection},
                     sort_keys=True, default=str)
    if key not in _STAGES:
        _STAGES[key] = _stages(config)
    return list(_STAGES[key])


_STAGES: dict[str, list[tuple[str, int, int]]] = {}


def _stages(config: PretrainedConfig) -> list[tuple[str, int, int]]:
    spec = getattr(config, "timm_spec", None)
    if spec is not None and all(hasattr(spec, name) for name in ("stage_names", "num_features", "reductions")):
        return list(zip(spec.stage_names, spec.num_features, spec.reductions))
    depths = getattr(config, "depths", None)
    if isinstance(depths, list) and depths:
        config = type(config).from_dict(config.to_dict(), depths=[1] * len(depths))
    layers = getattr(config, "num_hidden_layers", None)
    if isinstance(layers, int) and layers > 1 and len(config.stage_names) == layers + 1:  # (SAM adds its neck)
        one_layer = {**config.to_dict(), "num_hidden_layers": 1, "out_features": None, "out_indices": None}
        stem, (_, channels, reduction) = _traced_stages(type(config).from_dict(one_layer))
        return [stem] + [(name, channels, reduction) for name in config.stage_names[1:]]
    return _traced_stages(config)


def _traced_stages(config: PretrainedConfig) -> list[tuple[str, int, int]]:
    model = abstract_module(lambda: AutoBackbone.from_config(config))
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
