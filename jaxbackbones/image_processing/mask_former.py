"""The MaskFormer family's processors, PIL backend: transformers' `MaskFormerImageProcessor`,
`Mask2FormerImageProcessor` and `OneFormerImageProcessor`, from models/<name>/image_processing_pil_<name>.py, which
facebook/maskformer-*, facebook/mask2former-* and shi-labs/oneformer_* name.

One pipeline: resize as the DETR processors do (the shorter side to `shortest_edge` unless the longer would pass
`longest_edge`; or within a maximum height and width; or to a fixed height and width), bilinear with PIL on uint8
pixels; rescale; normalise with ImageNet's mean and std; then pad every image with zeros at the bottom and right to
the largest of the batch, with a `pixel_mask` (1 on image pixels, 0 on padding). There is no switch for the padding:
transformers always pads these and always returns the mask.

MaskFormer and Mask2Former (the same steps) round the resized size up to multiples of `size_divisor` (32) before
resizing, so the image is stretched a little rather than padded to them, and can pad to a fixed `pad_size`. Their
checkpoints' configs write an int `size` with `max_size` (MaskFormer ADE20k: 512 and 2048), which reads as
{"shortest_edge": size, "longest_edge": max_size}. OneFormer has neither `size_divisor` nor `pad_size`, and reads an
int `size` as {"shortest_edge": size} alone (the shorter side at `size`, whatever the longer becomes), ignoring
`max_size`, as transformers 5 does.

Only images are processed. Segmentation maps and the options for them (`ignore_index`, `do_reduce_labels`,
`num_labels`) give `mask_labels` / `class_labels` in transformers and have no effect on `pixel_values`; they are
accepted so that configs round-trip. OneFormer's text side is out of scope: transformers' OneFormer processor also
returns `task_inputs` (the strings "the task is panoptic", ...) that `OneFormerProcessor` tokenises with CLIP's
tokenizer, and, with segmentation maps and `class_info_file`, `text_inputs`; here `OneFormerImageProcessor` returns
`pixel_values` and `pixel_mask` only, which are the same arrays as transformers'.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from .common import (
    IMAGENET_DEFAULT_MEAN,
    IMAGENET_DEFAULT_STD,
    BatchFeature,
    _check_call_args,
    _height_width,
    _normalize,
    _padded_batch,
    _pil_resize,
    _processed_images,
    _rescale,
    _shortest_edge_size,
)
from .detr import _resized_size as _detr_resized_size
from .hf_processors import _TransformersImageProcessor

_EDGES = frozenset({"shortest_edge", "longest_edge"})
_MAX_HEIGHT_WIDTH = frozenset({"max_height", "max_width"})
_HEIGHT_WIDTH = frozenset({"height", "width"})


@dataclasses.dataclass(kw_only=True)
class _MaskFormerFamilyImageProcessor(_TransformersImageProcessor):
    """What the three share: ImageNet statistics, bilinear, resize / rescale / normalise (no centre crop step: a
    `do_center_crop` is ignored, as in transformers), and the padded batch with its `pixel_mask`."""

    resample: int = Image.Resampling.BILINEAR
    image_mean: float | Sequence[float] = IMAGENET_DEFAULT_MEAN
    image_std: float | Sequence[float] = IMAGENET_DEFAULT_STD
    ignore_index: int | None = None
    do_reduce_labels: bool = False
    num_labels: int | None = None

    _int_size_is_square: ClassVar[bool] = False

    def _process(self, array: np.ndarray) -> np.ndarray:
        if self.do_resize:
            array = _pil_resize(array, *self._resized_size(*array.shape[:2]), self.resample)
        if self.do_rescale:
            array = _rescale(array, self.rescale_factor)
        if self.do_normalize:
            array = _normalize(array, self.image_mean, self.image_std)
        return array

    def _resized_size(self, height: int, width: int) -> tuple[int, int]:
        return _detr_resized_size(height, width, self.size)

    def _pad_size(self) -> dict[str, int] | None:
        return None

    def __call__(self, images: Any, *, data_format: str = "channels_last", return_tensors: str = "np",
                 input_data_format: str | None = None, **overrides: Any) -> BatchFeature:
        """Preprocess one image or a list of them: as `ViTImageProcessor.__call__`, with the batch padded to one
        size and its `pixel_mask` ((N, H, W) int64) in the `BatchFeature`."""
        _check_call_args(data_format, return_tensors, input_data_format)
        options, pixels = _processed_images(self, images, overrides, input_data_format)
        return _padded_batch(pixels, options._pad_size(), data_format, return_tensors)


@dataclasses.dataclass(kw_only=True)
class MaskFormerImageProcessor(_MaskFormerFamilyImageProcessor):
    """transformers' `MaskFormerImageProcessor` (PIL backend; "MaskFormerFeatureExtractor" in older configs); see
    the module docstring.

    Args (all keyword, as in transformers; every one can also be given per call):
        size: {"shortest_edge": s, "longest_edge": l} (default 800, 1333), {"max_height": h, "max_width": w} or
            {"height": h, "width": w}; an int s means {"shortest_edge": s, "longest_edge": max_size} and needs
            `max_size`, as in transformers.
        max_size: the longest edge of an int `size`, or of the default size when `size` is not given.
        size_divisor: round the resized height and width up to multiples of this before resizing (32; 0: none).
        pad_size: pad to this {"height", "width"} (an int s means s x s) instead of the batch's largest image.
        resample: PIL filter id (2 bilinear, the default).
        ignore_index, do_reduce_labels, num_labels: for segmentation maps only; no effect on images.
        do_resize, do_rescale + rescale_factor (1/255), do_normalize + image_mean / image_std (ImageNet's),
        do_convert_rgb.

    Call it on images to get a `BatchFeature` with `pixel_values` and `pixel_mask`.
    """

    size: int | tuple[int, int] | dict[str, int] | None = None
    max_size: int | None = None
    size_divisor: int = 32
    pad_size: int | tuple[int, int] | dict[str, int] | None = None

    _size_keys: ClassVar[tuple[frozenset, ...]] = (_EDGES, _MAX_HEIGHT_WIDTH, _HEIGHT_WIDTH)

    def __post_init__(self) -> None:
        if self.size is None:
            self.size = {"shortest_edge": 800, "longest_edge": 1333 if self.max_size is None else self.max_size}
        elif isinstance(self.size, int) and not isinstance(self.size, bool):
            if self.max_size is None:
                raise ValueError(f"size={self.size} needs max_size (its longest edge), or give size as a dict such as "
                                 "{'shortest_edge': 800, 'longest_edge': 1333}")
            self.size = {"shortest_edge": self.size, "longest_edge": self.max_size}
        super().__post_init__()
        if isinstance(self.size_divisor, bool) or not isinstance(self.size_divisor, int) or self.size_divisor < 0:
            raise ValueError(f"size_divisor={self.size_divisor!r}: expected an int >= 0 (0: no rounding)")
        self.pad_size = _height_width(self.pad_size, "pad_size", needed=False, flag="pad")

    def _resized_size(self, height: int, width: int) -> tuple[int, int]:
        height, width = super()._resized_size(height, width)
        if self.size_divisor > 0:
            height, width = (math.ceil(side / self.size_divisor) * self.size_divisor for side in (height, width))
        return height, width

    def _pad_size(self) -> dict[str, int] | None:
        return self.pad_size


@dataclasses.dataclass(kw_only=True)
class Mask2FormerImageProcessor(MaskFormerImageProcessor):
    """transformers' `Mask2FormerImageProcessor` (PIL backend): `MaskFormerImageProcessor`'s steps, options and
    defaults."""


@dataclasses.dataclass(kw_only=True)
class OneFormerImageProcessor(_MaskFormerFamilyImageProcessor):
    """transformers' `OneFormerImageProcessor` (PIL backend), images only; see the module docstring for what it
    returns and what it leaves to `OneFormerProcessor`.

    Args (all keyword, as in transformers; every one can also be given per call):
        size: {"shortest_edge": s, "longest_edge": l} (default 800, 1333), {"shortest_edge": s} (an int s), or
            {"max_height": h, "max_width": w}, or {"height": h, "width": w}.
        resample: PIL filter id (2 bilinear, the default).
        repo_path, class_info_file, num_text, ignore_index, do_reduce_labels, num_labels: for segmentation maps and
            text inputs only; no effect on images (the class metadata file is not read).
        do_resize, do_rescale + rescale_factor (1/255), do_normalize + image_mean / image_std (ImageNet's),
        do_convert_rgb.

    Call it on images to get a `BatchFeature` with `pixel_values` and `pixel_mask`.
    """

    size: int | tuple[int, int] | dict[str, int] = dataclasses.field(
        default_factory=lambda: {"shortest_edge": 800, "longest_edge": 1333})
    repo_path: str | None = "shi-labs/oneformer_demo"
    class_info_file: str | None = None
    num_text: int | None = None

    _size_keys: ClassVar[tuple[frozenset, ...]] = (
        _EDGES, frozenset({"shortest_edge"}), _MAX_HEIGHT_WIDTH, _HEIGHT_WIDTH)

    def _resized_size(self, height: int, width: int) -> tuple[int, int]:
        if set(self.size) == {"shortest_edge"}:
            return _shortest_edge_size(height, width, self.size["shortest_edge"])
        return super()._resized_size(height, width)
