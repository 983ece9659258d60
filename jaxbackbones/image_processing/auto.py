"""Choosing a processor for a checkpoint: the dispatch table and `AutoImageProcessor`."""

from __future__ import annotations

import importlib
import os
from typing import Any

from ..hub import load_config_dict, read_json, resolve_file
from .common import PREPROCESSOR_CONFIG_NAME
from .hf_processors import _TransformersImageProcessor
from .timm_transforms import TimmImageProcessor

# The transformers processors a preprocessor_config.json may name: class name -> the module of this package that
# defines it. Adding a processor is its module plus one line here; `jaxbackbones.image_processing` exports it.
PROCESSOR_CLASSES: dict[str, str] = {
    "ConvNextImageProcessor": "hf_processors",
    "ViTImageProcessor": "hf_processors",
    "BitImageProcessor": "hf_processors",
    "DINOv3ViTImageProcessor": "hf_processors",
    "SegformerImageProcessor": "segformer",
    "PvtImageProcessor": "segformer",
    "DetrImageProcessor": "detr",
    "ConditionalDetrImageProcessor": "detr",
    "DeformableDetrImageProcessor": "detr",
    "GroundingDinoImageProcessor": "detr",
    "RTDetrImageProcessor": "detr",
    "DPTImageProcessor": "dpt",
    "MaskFormerImageProcessor": "mask_former",
    "Mask2FormerImageProcessor": "mask_former",
    "OneFormerImageProcessor": "mask_former",
    "SamImageProcessor": "sam",
    "Sam2ImageProcessor": "sam2",
}


def load_processor_class(name: str) -> type[_TransformersImageProcessor]:
    """The class `PROCESSOR_CLASSES` lists as `name`, imported from its module."""
    return getattr(importlib.import_module(f"{__package__}.{PROCESSOR_CLASSES[name]}"), name)


class AutoImageProcessor:
    """Builds the processor a checkpoint names: `AutoImageProcessor.from_pretrained("microsoft/resnet-50")`."""

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | os.PathLike, revision: str | None = None, **overrides: Any
    ) -> _TransformersImageProcessor | TimmImageProcessor:
        """The processor of a local folder or hub repo, with `overrides` replacing its configured options.

        A `preprocessor_config.json` names a transformers processor in `image_processor_type`, or, in older
        checkpoints, `feature_extractor_type` (e.g. "ConvNextFeatureExtractor"); "Pil" and "Fast" variants name the
        same processor. Without one, a timm checkpoint's `config.json` (`architecture` and `pretrained_cfg`, as
        timm's `push_to_hf_hub` writes it) gives a `TimmImageProcessor`.

        Raises:
            OSError: the checkpoint has neither file, or the hub cannot be reached (see `jaxbackbones.hub`).
            ValueError: the processor type is not supported, or a value is invalid.
        """
        path = resolve_file(name_or_path, PREPROCESSOR_CONFIG_NAME, revision=revision, required=False)
        if path is not None:
            config = read_json(path)
            return processor_class(config, path).from_dict(config, **overrides)

        config = load_config_dict(name_or_path, revision=revision)
        if "architecture" not in config:
            raise OSError(
                f"{name_or_path} has no {PREPROCESSOR_CONFIG_NAME}, and its config.json is not a timm config "
                "(no 'architecture' key): expected one or the other"
            )
        # Older timm exports have no "pretrained_cfg": config.json is the pretrained_cfg, as timm reads it.
        return TimmImageProcessor.from_pretrained_cfg(config.get("pretrained_cfg", config), **overrides)


def processor_class(config: dict, where: str | os.PathLike) -> type[_TransformersImageProcessor]:
    """The class a parsed preprocessor_config.json names (`where` names it in the error)."""
    name = config.get("image_processor_type") or config.get("feature_extractor_type")
    # Feature extractors were renamed image processors; "Pil" and "Fast" name backends of one processor.
    base_name = (name or "").replace("FeatureExtractor", "ImageProcessor").removesuffix("Fast").removesuffix("Pil")
    if base_name not in PROCESSOR_CLASSES:
        supported = ", ".join(PROCESSOR_CLASSES)
        raise ValueError(
            f"{where} names the image processor {name!r}: supported are {supported} (or their FeatureExtractor, "
            "Pil and Fast names), and timm checkpoints"
        )
    return load_processor_class(base_name)
