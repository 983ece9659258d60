"""transformers' `SamImageProcessor` (facebook/sam-vit-*), PIL backend (`SamImageProcessorPil`, transformers'
models/sam/image_processing_pil_sam.py).

The longest side is resized to `size["longest_edge"]` (1024), the other to `int(side * 1024 / longest + 0.5)`
(the aspect ratio kept, rounded half up, in Python floats), bilinear with PIL on uint8 pixels; then rescale by 1/255,
normalise with ImageNet's mean and std, and pad with zeros at the bottom and right to `pad_size` (1024 x 1024) after
normalising, as transformers does. Only images are processed (the segmentation-map options `mask_size` /
`mask_pad_size` act on label maps, not on `pixel_values`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import ClassVar

import numpy as np
from PIL import Image

from .common import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, _pil_resize
from .hf_processors import ViTImageProcessor


def longest_edge_size(height: int, width: int, longest_edge: int) -> tuple[int, int]:
    """(height, width) with the longer side at `longest_edge`, as SAM's `_get_preprocess_shape` computes it."""
    scale = longest_edge * 1.0 / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


@dataclasses.dataclass(kw_only=True)
class SamImageProcessor(ViTImageProcessor):
    """transformers' `SamImageProcessor` (PIL backend); see the module docstring. Options as `ViTImageProcessor`'s
    (`size` may also be {"height", "width"}), with SAM's defaults; `mask_size`, `mask_pad_size` are accepted and
    concern segmentation maps only.

    Call it on images to get a `BatchFeature` (see `__call__`).
    """

    size: int | tuple[int, int] | dict[str, int] = dataclasses.field(default_factory=lambda: {"longest_edge": 1024})
    resample: int = Image.Resampling.BILINEAR
    image_mean: float | Sequence[float] = IMAGENET_DEFAULT_MEAN
    image_std: float | Sequence[float] = IMAGENET_DEFAULT_STD
    do_pad: bool = True
    pad_size: int | tuple[int, int] | dict[str, int] | None = dataclasses.field(
        default_factory=lambda: {"height": 1024, "width": 1024})
    mask_size: dict | None = None
    mask_pad_size: dict | None = None

    _size_keys: ClassVar[tuple[frozenset, ...]] = (frozenset({"longest_edge"}), frozenset({"height", "width"}))

    def _resize(self, array: np.ndarray) -> np.ndarray:
        if "longest_edge" in self.size:
            height, width = longest_edge_size(array.shape[0], array.shape[1], self.size["longest_edge"])
            return _pil_resize(array, height, width, self.resample)
        return super()._resize(array)
