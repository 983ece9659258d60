"""transformers' `Sam2ImageProcessor` (facebook/sam2.1-hiera-*: "Sam2ImageProcessorFast"; models/sam2/
image_processing_sam2.py), which transformers 5 has in its torchvision backend only, and so it is matched here.

The steps: RGB conversion, a resize of the uint8 pixels to 1024 x 1024 (the image is warped, not padded), bilinear
with antialiasing, as torchvision's `resize` runs it on uint8 tensors: torch's separable fixed-point kernel
(aten/src/ATen/native/cpu/UpSampleKernel.cpp, `_compute_index_ranges_int16_weights`: Pillow's filter weights in
float64, normalised, scaled to int16 with the largest precision that keeps the largest weight below 2**15, then per
output pixel sum(w * p) + 2**(precision - 1) shifted right and clamped to 0..255; width first, then height, a side
whose size does not change left alone). It differs from PIL's resize (22-bit weights) by one level in some pixels when
shrinking, and is reproduced here bit for bit. Then the rescale and normalisation, fused as transformers' torchvision
backend fuses them: (x - mean / rescale_factor) / (std / rescale_factor) in float32. For uint8 and PIL images
`pixel_values` are bit-identical to transformers' (tests/test_hiera.py). Float images are resized as floats, with
torch's antialiased interpolation (`image_processing.antialias`), as torchvision does: within about 1e-6.

Segmentation maps (`mask_size`) and the mask post-processing are not part of a backbone's input and are not
implemented; `mask_size` is kept for the `preprocessor_config.json`.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import ClassVar

import numpy as np
from PIL import Image

from . import antialias
from .common import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, _resized_size
from .hf_processors import DINOv3ViTImageProcessor, _TransformersImageProcessor


def _bilinear(x: np.ndarray) -> np.ndarray:
    x = np.abs(x)
    return np.where(x < 1.0, 1.0 - x, 0.0)


def _bicubic(x: np.ndarray) -> np.ndarray:
    a, x = -0.5, np.abs(x)
    return np.where(x < 1.0, ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0,
                    np.where(x < 2.0, (((x - 5.0) * x + 8.0) * x - 4.0) * a, 0.0))


_FILTERS = {Image.Resampling.BILINEAR: (_bilinear, 1.0), Image.Resampling.BICUBIC: (_bicubic, 2.0)}


@functools.lru_cache(maxsize=64)
def int16_weights(in_size: int, out_size: int, resample: int) -> tuple[np.ndarray, np.ndarray, int]:
    """torch's uint8 antialiased resampling along one axis: (first input index per output (out,), int weights
    (out, taps), precision bits)."""
    aa_filter, half_support = _FILTERS[resample]
    scale = in_size / out_size
    support = half_support * scale if scale >= 1.0 else half_support
    invscale = 1.0 / scale if scale >= 1.0 else 1.0
    starts, rows = [], []
    for i in range(out_size):
        center = scale * (i + 0.5)
        first = max(int(center - support + 0.5), 0)
        last = min(int(center + support + 0.5), in_size)
        weights = aa_filter((np.arange(first, last) - center + 0.5) * invscale)
        total = 0.0
        for weight in weights:  # summed in order, in float64
            total += float(weight)
        starts.append(first)
        rows.append(weights / total if total != 0.0 else weights)
    taps = max(len(row) for row in rows)
    dense = np.zeros((out_size, taps), np.float64)
    for i, row in enumerate(rows):
        dense[i, : len(row)] = row
    largest = float(max(row.max() for row in rows))
    precision = 0
    while precision < 22 and int(0.5 + largest * (1 << (precision + 1))) < (1 << 15):
        precision += 1
    scaled = dense * (1 << precision)
    ints = np.where(scaled < 0, np.trunc(scaled - 0.5), np.trunc(scaled + 0.5)).astype(np.int64)
    return np.asarray(starts), ints, precision


def _resize_axis_uint8(array: np.ndarray, axis: int, size: int, resample: int) -> np.ndarray:
    moved = np.moveaxis(array, axis, 0).astype(np.int64)
    starts, weights, precision = int16_weights(moved.shape[0], size, resample)
    taps = weights.shape[1]
    # each output row reads `taps` input rows from its start (weights past the row's own taps are zero)
    index = np.minimum(starts[:, None] + np.arange(taps)[None, :], moved.shape[0] - 1)
    total = np.full((size, *moved.shape[1:]), 1 << (precision - 1), np.int64)
    for tap in range(taps):
        total += weights[:, tap].reshape(-1, *[1] * (moved.ndim - 1)) * moved[index[:, tap]]
    return np.moveaxis(np.clip(total >> precision, 0, 255).astype(np.uint8), 0, axis)


def resize_uint8(array: np.ndarray, height: int, width: int, resample: int = Image.Resampling.BILINEAR) -> np.ndarray:
    """torchvision's antialiased `resize` of an (H, W, C) uint8 image (see the module docstring)."""
    if array.shape[1] != width:
        array = _resize_axis_uint8(array, 1, width, resample)
    if array.shape[0] != height:
        array = _resize_axis_uint8(array, 0, height, resample)
    return array


@dataclasses.dataclass(kw_only=True)
class Sam2ImageProcessor(_TransformersImageProcessor):
    """transformers' `Sam2ImageProcessor` (torchvision backend, the only one transformers has): resize to
    1024 x 1024, bilinear with antialiasing, rescale by 1/255 and normalise with ImageNet's mean and std (fused, in
    float32); see the module docstring.

    Args (all keyword, as in transformers; every one can also be given per call):
        size: {"height": h, "width": w} (an int s means s x s), or {"shortest_edge": s}.
        resample: 2 (bilinear, default) or 3 (bicubic).
        mask_size: the segmentation maps' size (kept for the config; maps are not processed here).
        and do_resize, do_rescale + rescale_factor, do_normalize + image_mean / image_std, do_convert_rgb.

    Call it on images to get a `BatchFeature` (see `__call__`).
    """

    size: int | tuple[int, int] | dict[str, int] = dataclasses.field(
        default_factory=lambda: {"height": 1024, "width": 1024})
    resample: int = Image.Resampling.BILINEAR
    image_mean: float | Sequence[float] = IMAGENET_DEFAULT_MEAN
    image_std: float | Sequence[float] = IMAGENET_DEFAULT_STD
    mask_size: dict[str, int] = dataclasses.field(default_factory=lambda: {"height": 256, "width": 256})

    _int_size_is_square: ClassVar[bool] = True
    _size_keys: ClassVar[tuple[frozenset, ...]] = (frozenset({"height", "width"}), frozenset({"shortest_edge"}))
    _modes: ClassVar[dict[int, str]] = {Image.Resampling.BILINEAR: "bilinear", Image.Resampling.BICUBIC: "bicubic"}
    _array_to_rgb = staticmethod(DINOv3ViTImageProcessor._array_to_rgb)  # the torchvision backend's conversion

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.resample not in self._modes:
            raise ValueError(f"resample={int(self.resample)}: expected 2 (BILINEAR) or 3 (BICUBIC), the modes "
                             "torchvision resizes with antialiasing")

    def _process(self, array: np.ndarray) -> np.ndarray:
        if self.do_resize:
            height, width = _resized_size(array, self.size)
            if array.dtype == np.uint8:
                array = resize_uint8(array, height, width, self.resample)
            else:
                array = antialias.resize(array.astype(np.float32), height, width, self._modes[self.resample])
        array = array.astype(np.float32)
        f32 = np.float32
        channels = array.shape[-1]
        mean = np.broadcast_to(np.asarray(self.image_mean, f32), (channels,))
        std = np.broadcast_to(np.asarray(self.image_std, f32), (channels,))
        if self.do_rescale and self.do_normalize:
            inverse = f32(1.0 / self.rescale_factor)
            return (array - mean * inverse) / (std * inverse)
        if self.do_normalize:
            return (array - mean) / std
        if self.do_rescale:
            return array * f32(self.rescale_factor)
        return array
