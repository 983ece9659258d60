"""transformers' `DPTImageProcessor`, PIL backend (`DPTImageProcessorPil`, models/dpt/image_processing_pil_dpt.py),
which the DPT checkpoints (Intel/dpt-*, facebook/dpt-dinov2-*) and the Depth Anything V1 / V2 checkpoints
(LiheYoung/depth-anything-*-hf, depth-anything/Depth-Anything-V2-*-hf) name.

Resize to `size` (384 x 384 by default), optionally keeping the aspect ratio by scaling as little as possible and
rounding each side to a multiple of `ensure_multiple_of`; bicubic with PIL on uint8 pixels; rescale; normalise; then,
with `do_pad` and a `size_divisor`, pad with zeros on all four sides (centred, the odd pixel after) to multiples of
`size_divisor`. Depth Anything's `preprocessor_config.json`: 518 x 518, `keep_aspect_ratio`, `ensure_multiple_of` 14,
ImageNet normalisation. facebook/dpt-dinov2-*: no resize, no rescale, normalisation on the 0..255 scale (mean
123.675, ...) and centre padding to multiples of 14. Only images are processed: `do_reduce_labels` acts on
segmentation maps (transformers turns it off for images).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import ClassVar

import numpy as np
from PIL import Image

from .common import IMAGENET_STANDARD_MEAN, IMAGENET_STANDARD_STD, _normalize, _pil_resize, _rescale, _window
from .hf_processors import _TransformersImageProcessor


def _multiple_size(height: int, width: int, size: dict[str, int], keep_aspect_ratio: bool,
                   multiple: int) -> tuple[int, int]:
    """DPT's `get_resize_output_image_size`: each side scaled to `size`, or both by the scale nearer 1 when keeping
    the aspect ratio, then rounded to a multiple of `multiple` (Python's round, half to even)."""
    scale_height, scale_width = size["height"] / height, size["width"] / width
    if keep_aspect_ratio:
        if abs(1 - scale_width) < abs(1 - scale_height):
            scale_height = scale_width
        else:
            scale_width = scale_height
    return round(scale_height * height / multiple) * multiple, round(scale_width * width / multiple) * multiple


def _is_positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


@dataclasses.dataclass(kw_only=True)
class DPTImageProcessor(_TransformersImageProcessor):
    """transformers' `DPTImageProcessor` (PIL backend); see the module docstring.

    Args (all keyword, as in transformers; every one can also be given per call):
        size: {"height": h, "width": w} (an int s means s x s, a pair (h, w)); default 384 x 384.
        keep_aspect_ratio: scale both sides by the one of the two scales that is nearer 1.
        ensure_multiple_of: round each resized side to a multiple of this (1: no rounding).
        resample: PIL filter id (3 bicubic, the default).
        do_pad, size_divisor: pad with zeros around the image, centred, to multiples of size_divisor (after
            normalising); no padding unless both are set.
        do_reduce_labels: for segmentation maps only; no effect on images.
        do_resize, do_rescale + rescale_factor (1/255), do_normalize + image_mean / image_std (0.5 each),
        do_convert_rgb. transformers' DPT pipeline has no centre crop step, so do_center_crop is ignored, as there.

    Call it on images to get a `BatchFeature` (see `__call__`). With `keep_aspect_ratio` images of different shapes
    give different sizes, so they cannot form one batch: process them one at a time.
    """

    size: int | tuple[int, int] | dict[str, int] = dataclasses.field(
        default_factory=lambda: {"height": 384, "width": 384})
    resample: int = Image.Resampling.BICUBIC
    image_mean: float | Sequence[float] = IMAGENET_STANDARD_MEAN
    image_std: float | Sequence[float] = IMAGENET_STANDARD_STD
    keep_aspect_ratio: bool = False
    ensure_multiple_of: int = 1
    do_pad: bool = False
    size_divisor: int | None = None
    do_reduce_labels: bool = False

    _int_size_is_square: ClassVar[bool] = True
    _size_keys: ClassVar[tuple[frozenset, ...]] = (frozenset({"height", "width"}),)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not _is_positive_int(self.ensure_multiple_of):
            raise ValueError(f"ensure_multiple_of={self.ensure_multiple_of!r}: expected a positive int (1: none)")
        if self.size_divisor is not None and not _is_positive_int(self.size_divisor):
            raise ValueError(f"size_divisor={self.size_divisor!r}: expected a positive int, or None")

    def _process(self, array: np.ndarray) -> np.ndarray:
        if self.do_resize:
            height, width = _multiple_size(*array.shape[:2], self.size, self.keep_aspect_ratio,
                                           self.ensure_multiple_of)
            if height == 0 or width == 0:
                raise ValueError(f"an image of size {array.shape[:2]} resizes to {(height, width)} with "
                                 f"size={self.size} and ensure_multiple_of={self.ensure_multiple_of}: expected at "
                                 "least one pixel")
            array = _pil_resize(array, height, width, self.resample)
        if self.do_rescale:
            array = _rescale(array, self.rescale_factor)
        if self.do_normalize:
            array = _normalize(array, self.image_mean, self.image_std)
        if self.do_pad and self.size_divisor is not None:
            height, width = (math.ceil(side / self.size_divisor) * self.size_divisor for side in array.shape[:2])
            top, left = (height - array.shape[0]) // 2, (width - array.shape[1]) // 2
            array = _window(array, -top, -left, height, width)
        return array
