"""The DETR family's processors, PIL backend: transformers' `DetrImageProcessor` (DETR, Table Transformer),
`ConditionalDetrImageProcessor`, `DeformableDetrImageProcessor`, `GroundingDinoImageProcessor` and
`RTDetrImageProcessor` (RT-DETR, RT-DETRv2, D-FINE, DEIMv2), from models/<name>/image_processing_pil_<name>.py.

One pipeline: resize (keeping the aspect ratio within a shortest and a longest edge, or within a maximum height and
width, or to a fixed height and width), rescale, normalise, then pad every image with zeros at the bottom and right
to the largest of the batch (or to `pad_size`), with a `pixel_mask` (1 on image pixels, 0 on padding). DETR's
defaults: shortest edge 800, longest 1333, ImageNet normalisation, padding on. RT-DETR's: 640 x 640, no
normalisation, no padding. Only images are processed: the annotation options (`format`, `do_convert_annotations`)
act on detection targets, not on `pixel_values`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from .common import (
    IMAGENET_DEFAULT_MEAN,
    IMAGENET_DEFAULT_STD,
    BatchFeature,
    _batch,
    _check_call_args,
    _height_width,
    _padded_batch,
    _pil_resize,
    _processed_images,
)
from .hf_processors import _TransformersImageProcessor


def _size_within_edges(height: int, width: int, shortest_edge: int, longest_edge: int) -> tuple[int, int]:
    """transformers' `get_size_with_aspect_ratio`: the shorter side at `shortest_edge` unless the longer would pass
    `longest_edge`; then the longer side at `longest_edge` (rounded) and the shorter truncated from the unrounded
    scale."""
    size, raw_size = shortest_edge, None
    short, long = float(min(height, width)), float(max(height, width))
    if long / short * size > longest_edge:
        raw_size = longest_edge * short / long
        size = int(round(raw_size))
    if (height <= width and height == size) or (width <= height and width == size):
        return height, width
    scale = raw_size if raw_size is not None else size
    if width < height:
        return int(scale * height / width), size
    return size, int(scale * width / height)


def _resized_size(height: int, width: int, size: dict[str, int]) -> tuple[int, int]:
    """The (height, width) a `size` of the DETR family resizes an image to: within {"shortest_edge",
    "longest_edge"}, the largest within {"max_height", "max_width"} (aspect ratio kept, truncated), or
    {"height", "width"}."""
    if "shortest_edge" in size:
        return _size_within_edges(height, width, size["shortest_edge"], size["longest_edge"])
    if "max_height" in size:
        scale = min(size["max_height"] / height, size["max_width"] / width)
        return int(height * scale), int(width * scale)
    return size["height"], size["width"]


@dataclasses.dataclass(kw_only=True)
class DetrImageProcessor(_TransformersImageProcessor):
    """transformers' `DetrImageProcessor` (PIL backend).

    Args (all keyword, as in transformers; every one can also be given per call):
        size: {"shortest_edge": s, "longest_edge": l} (default 800, 1333), {"max_height": h, "max_width": w} (the
            largest size within both, aspect ratio kept) or {"height": h, "width": w}; an int s means
            {"shortest_edge": s, "longest_edge": max_size}, as old DETR configs write it.
        max_size: the longest edge an int `size` goes with (1333, transformers' default for it).
        resample: PIL filter id (2 bilinear, the default).
        do_pad, pad_size: pad with zeros at the bottom and right to pad_size, or to the batch's largest image when
            None, and return `pixel_mask`. `pad_and_return_pixel_mask` is its old name.
        format, do_convert_annotations: for annotations only; kept so that configs round-trip.
        do_resize, do_rescale + rescale_factor (1/255), do_normalize + image_mean / image_std (ImageNet's).

    Call it on images to get a `BatchFeature` with `pixel_values` and, with padding, `pixel_mask` (N, H, W) int64.
    """

    size: int | tuple[int, int] | dict[str, int] = dataclasses.field(
        default_factory=lambda: {"shortest_edge": 800, "longest_edge": 1333})
    max_size: int | None = None
    resample: int = Image.Resampling.BILINEAR
    image_mean: float | Sequence[float] = IMAGENET_DEFAULT_MEAN
    image_std: float | Sequence[float] = IMAGENET_DEFAULT_STD
    do_pad: bool = True
    pad_size: int | tuple[int, int] | dict[str, int] | None = None
    pad_and_return_pixel_mask: bool | None = None
    format: str = "coco_detection"
    do_convert_annotations: bool | None = None

    _int_size_is_square: ClassVar[bool] = False
    _size_keys: ClassVar[tuple[frozenset, ...]] = (
        frozenset({"shortest_edge", "longest_edge"}), frozenset({"max_height", "max_width"}),
        frozenset({"height", "width"}))

    def __post_init__(self) -> None:
        if isinstance(self.size, int) and not isinstance(self.size, bool) and not self._int_size_is_square:
            self.size = {"shortest_edge": self.size, "longest_edge": 1333 if self.max_size is None else self.max_size}
        if self.pad_and_return_pixel_mask is not None:
            self.do_pad, self.pad_and_return_pixel_mask = self.pad_and_return_pixel_mask, None
        super().__post_init__()
        self.pad_size = _height_width(self.pad_size, "pad_size", needed=False, flag="do_pad")

    def _resize(self, array: np.ndarray) -> np.ndarray:
        return _pil_resize(array, *_resized_size(*array.shape[:2], self.size), self.resample)

    def __call__(self, images: Any, *, data_format: str = "channels_last", return_tensors: str = "np",
                 input_data_format: str | None = None, **overrides: Any) -> BatchFeature:
        """Preprocess one image or a list of them: as `ViTImageProcessor.__call__`, and with `do_pad` the batch
        padded to one size, with its `pixel_mask`."""
        _check_call_args(data_format, return_tensors, input_data_format)
        options, pixels = _processed_images(self, images, overrides, input_data_format)
        if not options.do_pad:
            return _batch(pixels, data_format, return_tensors)
        return _padded_batch(pixels, options.pad_size, data_format, return_tensors)


@dataclasses.dataclass(kw_only=True)
class ConditionalDetrImageProcessor(DetrImageProcessor):
    """transformers' `ConditionalDetrImageProcessor` (PIL backend): `DetrImageProcessor`'s pipeline and defaults."""


@dataclasses.dataclass(kw_only=True)
class DeformableDetrImageProcessor(DetrImageProcessor):
    """transformers' `DeformableDetrImageProcessor` (PIL backend): `DetrImageProcessor`'s pipeline and defaults."""


@dataclasses.dataclass(kw_only=True)
class GroundingDinoImageProcessor(DetrImageProcessor):
    """transformers' `GroundingDinoImageProcessor` (PIL backend): `DetrImageProcessor`'s pipeline and defaults."""


@dataclasses.dataclass(kw_only=True)
class RTDetrImageProcessor(DetrImageProcessor):
    """transformers' `RTDetrImageProcessor` (PIL backend), which RT-DETR, RT-DETRv2, D-FINE and DEIMv2 checkpoints
    name: `DetrImageProcessor`'s pipeline, resizing to 640 x 640 (an int s means s x s), rescaling by 1/255, with no
    normalisation and no padding by default."""

    size: int | tuple[int, int] | dict[str, int] = dataclasses.field(
        default_factory=lambda: {"height": 640, "width": 640})
    do_normalize: bool = False
    do_pad: bool = False

    _int_size_is_square: ClassVar[bool] = True
