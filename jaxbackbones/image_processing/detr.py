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

import jax.numpy as jnp
import numpy as np
from PIL import Image

from .common import (
    IMAGENET_DEFAULT_MEAN,
    IMAGENET_DEFAULT_STD,
    BatchFeature,
    _batch,
    _check_call_args,
    _height_width,
    _pil_resize,
    _processed_images,
    _window,
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
        height, width = array.shape[:2]
        if "shortest_edge" in self.size:
            size = _size_within_edges(height, width, self.size["shortest_edge"], self.size["longest_edge"])
        elif "max_height" in self.size:
            scale = min(self.size["max_height"] / height, self.size["max_width"] / width)
            size = int(height * scale), int(width * scale)
        else:
            size = self.size["height"], self.size["width"]
        return _pil_resize(array, *size, self.resample)

    def __call__(self, images: Any, *, data_format: str = "channels_last", return_tensors: str = "np",
                 input_data_format: str | None = None, **overrides: Any) -> BatchFeature:
        """Preprocess one image or a list of them: as `ViTImageProcessor.__call__`, and with `do_pad` the batch
        padded to one size, with its `pixel_mask`."""
        _check_call_args(data_format, return_tensors, input_data_format)
        options, pixels = _processed_images(self, images, overrides, input_data_format)
        if not options.do_pad:
            return _batch(pixels, data_format, return_tensors)
        if options.pad_size is not None:
            height, width = options.pad_size["height"], options.pad_size["width"]
        else:
            height, width = max(p.shape[0] for p in pixels), max(p.shape[1] for p in pixels)
        masks = np.zeros((len(pixels), height, width), dtype=np.int64)
        for mask, image in zip(masks, pixels):
            if image.shape[0] > height or image.shape[1] > width:
                raise ValueError(f"pad_size={options.pad_size} is smaller than an image of size {image.shape[:2]}")
            mask[: image.shape[0], : image.shape[1]] = 1
        out = _batch([_window(image, 0, 0, height, width) for image in pixels], data_format, return_tensors)
        out["pixel_mask"] = jnp.asarray(masks) if return_tensors == "jax" else masks
        return out


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
