"""Image preprocessing in numpy and PIL: images -> `pixel_values`, with no torch.

These processors reproduce the evaluation preprocessing of the checkpoints we load:

* `ConvNextImageProcessor`, `ViTImageProcessor` and `BitImageProcessor` match transformers' PIL backend
  (`ConvNextImageProcessorPil`, `ViTImageProcessorPil`, `BitImageProcessorPil`); the HF ResNet, Swin and DINOv2
  checkpoints name these in their `preprocessor_config.json`.
* `DINOv3ViTImageProcessor` matches transformers' `DINOv3ViTImageProcessor`, which exists only in its torchvision
  backend: it resizes float pixels with torch's antialiased interpolation (`image_processing.antialias`).
* `TimmImageProcessor` matches timm's eval transform, `create_transform(**resolve_data_config(pretrained_cfg=...))`:
  torchvision's PIL resize and centre crop, then `ToTensor` and `Normalize`.

`AutoImageProcessor.from_pretrained` picks and builds one from a local folder or hub repo.

Every processor takes one image or a list of them (PIL images, or uint8 / float numpy arrays of shape (H, W),
(H, W, C) or (C, H, W), or a batch (N, H, W, C) / (N, C, H, W)) and returns a `BatchFeature` whose `pixel_values`
is a float32 batch, (N, H, W, 3) by default, the layout of our modules, or (N, 3, H, W) with
`data_format="channels_first"`.

Except DINOv3's, the sources resize with PIL on uint8 pixels, so we do too: that is what makes the numbers agree to
float32 rounding, and it is also why float inputs are quantised to uint8 before a resize.

Modules: `common` (shared numpy helpers), `hf_processors` (transformers' processors), `timm_transforms` (timm's),
`antialias` (torch's antialiased resize), `auto` (the `AutoImageProcessor` dispatch table, `PROCESSOR_CLASSES`).
A processor listed in `PROCESSOR_CLASSES` is importable from here without a line of its own.
"""

from __future__ import annotations

from typing import Any

from .auto import PROCESSOR_CLASSES, AutoImageProcessor, load_processor_class, processor_class
from .common import (
    CHANNEL_COUNTS,
    DATA_FORMATS,
    IMAGENET_DEFAULT_MEAN,
    IMAGENET_DEFAULT_STD,
    IMAGENET_STANDARD_MEAN,
    IMAGENET_STANDARD_STD,
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    PREPROCESSOR_CONFIG_NAME,
    RETURN_TENSORS,
    TIMM_CROP_MODES,
    TIMM_INTERPOLATIONS,
    BatchFeature,
)
from .timm_transforms import TimmImageProcessor


def __getattr__(name: str) -> Any:
    """The processors of `PROCESSOR_CLASSES` (`ViTImageProcessor`, ...), imported from their modules on first use."""
    if name in PROCESSOR_CLASSES:
        return load_processor_class(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(PROCESSOR_CLASSES))
