"""transformers' resize / crop processors: the steps their PIL backend runs (`_TransformersImageProcessor`), and
ViT's, ConvNeXt's, BiT's and DINOv3's on top. A new transformers processor is a module of its own subclassing
`_TransformersImageProcessor`, plus its line in `auto.PROCESSOR_CLASSES`."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from . import antialias
from .common import (
    IMAGENET_DEFAULT_MEAN,
    IMAGENET_DEFAULT_STD,
    IMAGENET_STANDARD_MEAN,
    IMAGENET_STANDARD_STD,
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    BatchFeature,
    _array_to_rgb,
    _center_crop_transformers,
    _check_option_names,
    _floats,
    _height_width,
    _normalize,
    _option_names,
    _pil_resize,
    _positive,
    _preprocess,
    _resampling,
    _rescale,
    _resized_size,
    _shortest_edge_size,
    _size_dict,
    _window,
)


@dataclasses.dataclass(kw_only=True)
class _TransformersImageProcessor:
    """The steps transformers' PIL backend runs for each image: (RGB conversion), resize, centre crop, rescale,
    normalise; each behind its `do_*` flag. Subclasses add `size`, `resample` and `_resize`."""

    do_convert_rgb: bool = True
    do_resize: bool = True
    do_center_crop: bool = False
    crop_size: int | tuple[int, int] | dict[str, int] | None = None
    do_rescale: bool = True
    rescale_factor: float = 1 / 255
    do_normalize: bool = True
    image_mean: float | Sequence[float] = IMAGENET_STANDARD_MEAN
    image_std: float | Sequence[float] = IMAGENET_STANDARD_STD
    # Keys of the preprocessor_config.json this was read from that are not options here (image_processor_type, ...).
    extra_config: dict = dataclasses.field(default_factory=dict, init=False, repr=False, compare=False)

    # How a bare int `size` reads, and which size dicts the subclass can resize to.
    _int_size_is_square: ClassVar[bool]
    _size_keys: ClassVar[tuple[frozenset, ...]]

    def __post_init__(self) -> None:
        self.size = _size_dict(self.size, "size", int_is_square=self._int_size_is_square, allowed=self._size_keys)
        self.resample = _resampling(self.resample)
        self.crop_size = _height_width(self.crop_size, "crop_size", needed=self.do_center_crop, flag="do_center_crop")
        self.rescale_factor = _positive(self.rescale_factor, "rescale_factor")
        self.image_mean = _floats(self.image_mean, "image_mean")
        self.image_std = _floats(self.image_std, "image_std")

    @classmethod
    def from_dict(cls, config: dict, **overrides: Any) -> _TransformersImageProcessor:
        """A processor from a parsed `preprocessor_config.json`, with `overrides` replacing its values.

        Keys that are not options of this processor (`image_processor_type`, `processor_class`, ...) are kept in
        `extra_config`; null values mean the default.
        """
        _check_option_names(cls, overrides)
        names = _option_names(cls)
        options = {name: value for name, value in config.items() if name in names and value is not None}
        options.update({name: value for name, value in overrides.items() if value is not None})
        processor = cls(**options)
        processor.extra_config = {key: value for key, value in config.items() if key not in names}
        return processor

    def __call__(
        self,
        images: Any,
        *,
        data_format: str = "channels_last",
        return_tensors: str = "np",
        input_data_format: str | None = None,
        **overrides: Any,
    ) -> BatchFeature:
        """Preprocess one image or a list of them.

        Args:
            images: a PIL image, a numpy array (uint8, or float; (H, W), (H, W, C) or (C, H, W); or a batch
                (N, H, W, C) / (N, C, H, W)), or a list of them. Float arrays are taken on their own scale: with
                `do_rescale` they are multiplied by `rescale_factor` as uint8 pixels are, as in transformers, so pass
                `do_rescale=False` for floats already in [0, 1].
            data_format: "channels_last" for (N, H, W, C) output, "channels_first" for (N, C, H, W).
            return_tensors: "np" for a numpy array, "jax" for a jax array.
            input_data_format: the channel axis of 3-D arrays, "channels_first" or "channels_last"; None infers it.
            **overrides: any option of the processor (`size=`, `resample=`, `do_normalize=`, ...) for this call.

        Returns:
            A `BatchFeature` with `pixel_values`, float32, (N, H, W, C) or (N, C, H, W); C is 3 when
            `do_convert_rgb` (the default).
        """
        return _preprocess(self, images, overrides, data_format, return_tensors, input_data_format)

    def _process(self, array: np.ndarray) -> np.ndarray:
        """One (H, W, C) image through the enabled steps, in transformers' order."""
        if self.do_resize:
            array = self._resize(array)
        if self.do_center_crop:
            array = _center_crop_transformers(array, self.crop_size["height"], self.crop_size["width"])
        if self.do_rescale:
            array = _rescale(array, self.rescale_factor)
        if self.do_normalize:
            array = _normalize(array, self.image_mean, self.image_std)
        return array


@dataclasses.dataclass(kw_only=True)
class ViTImageProcessor(_TransformersImageProcessor):
    """transformers' `ViTImageProcessor` (PIL backend): resize to `size`, rescale, normalise.

    Args (all keyword, as in transformers; every one can also be given per call):
        size: {"height": h, "width": w} (an int s means s x s, a pair (h, w)) to resize to, or {"shortest_edge": s}
            to resize the shorter side to s keeping the aspect ratio.
        resample: PIL filter id (0 nearest, 2 bilinear (default), 3 bicubic, ...).
        do_pad, pad_size: pad with zeros at the bottom and right to pad_size, after normalising.
        do_resize, do_center_crop + crop_size, do_rescale + rescale_factor (1/255), do_normalize + image_mean /
            image_std (0.5 each).
        do_convert_rgb: gray and RGBA become RGB, alpha composited onto white. transformers leaves this off by
            default and then fails to normalise such images; we turn it on.

    Call it on images to get a `BatchFeature` (see `__call__`).
    """

    size: int | tuple[int, int] | dict[str, int] = dataclasses.field(
        default_factory=lambda: {"height": 224, "width": 224}
    )
    resample: int = Image.Resampling.BILINEAR
    do_pad: bool = False
    pad_size: int | tuple[int, int] | dict[str, int] | None = None

    _int_size_is_square: ClassVar[bool] = True
    _size_keys: ClassVar[tuple[frozenset, ...]] = (frozenset({"height", "width"}), frozenset({"shortest_edge"}))

    def __post_init__(self) -> None:
        super().__post_init__()
        self.pad_size = _height_width(self.pad_size, "pad_size", needed=self.do_pad, flag="do_pad")

    def _process(self, array: np.ndarray) -> np.ndarray:
        # transformers' base pipeline pads last; its ConvNext pipeline has no pad step, hence only here.
        array = super()._process(array)
        if self.do_pad:
            height, width = self.pad_size["height"], self.pad_size["width"]
            if array.shape[0] > height or array.shape[1] > width:
                raise ValueError(f"pad_size={self.pad_size} is smaller than an image of size {array.shape[:2]}")
            array = _window(array, 0, 0, height, width)
        return array

    def _resize(self, array: np.ndarray) -> np.ndarray:
        return _pil_resize(array, *_resized_size(array, self.size), self.resample)


@dataclasses.dataclass(kw_only=True)
class ConvNextImageProcessor(_TransformersImageProcessor):
    """transformers' `ConvNextImageProcessor` (PIL backend), used by its ResNet checkpoints too.

    Resizing follows ConvNeXt's evaluation recipe: below 384, the shorter side goes to int(shortest_edge / crop_pct)
    and the centre shortest_edge x shortest_edge is cropped; at 384 and above, the image is warped to a square of
    shortest_edge without cropping (crop_pct is then unused). Then rescale and normalise.

    Args (all keyword, as in transformers; every one can also be given per call):
        size: {"shortest_edge": s}, or an int s (default 384).
        crop_pct: the fraction of the resized image kept by the crop (default 224 / 256).
        resample: PIL filter id (default 3, bicubic).
        and the options `ViTImageProcessor` lists (do_resize, do_rescale, rescale_factor, do_normalize, image_mean,
        image_std, do_center_crop, crop_size, do_convert_rgb) except do_pad and pad_size: transformers' ConvNeXt
        pipeline has no pad step.

    Call it on images to get a `BatchFeature` (see `__call__`).
    """

    size: int | dict[str, int] = dataclasses.field(default_factory=lambda: {"shortest_edge": 384})
    crop_pct: float = 224 / 256
    resample: int = Image.Resampling.BICUBIC

    _int_size_is_square: ClassVar[bool] = False
    _size_keys: ClassVar[tuple[frozenset, ...]] = (frozenset({"shortest_edge"}),)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.crop_pct = _positive(self.crop_pct, "crop_pct")

    def _resize(self, array: np.ndarray) -> np.ndarray:
        shortest_edge = self.size["shortest_edge"]
        if shortest_edge >= 384:
            return _pil_resize(array, shortest_edge, shortest_edge, self.resample)
        height, width = _shortest_edge_size(array.shape[0], array.shape[1], int(shortest_edge / self.crop_pct))
        resized = _pil_resize(array, height, width, self.resample)
        return _center_crop_transformers(resized, shortest_edge, shortest_edge)


@dataclasses.dataclass(kw_only=True)
class BitImageProcessor(ViTImageProcessor):
    """transformers' `BitImageProcessor` (PIL backend, `BitImageProcessorPil`), which DINOv2 checkpoints name.

    `ViTImageProcessor`'s steps (resize, centre crop, rescale, normalise, pad) with BiT's defaults: the shorter side
    resized to `size["shortest_edge"]` (224; an int `size` is the shortest edge), bicubic, centre crop 224 x 224,
    OpenAI CLIP's mean and std. DINOv2's `preprocessor_config.json` sets shortest_edge 256, crop 224 and ImageNet's
    mean and std.

    Call it on images to get a `BatchFeature` (see `__call__`).
    """

    size: int | tuple[int, int] | dict[str, int] = dataclasses.field(default_factory=lambda: {"shortest_edge": 224})
    resample: int = Image.Resampling.BICUBIC
    do_center_crop: bool = True
    crop_size: int | tuple[int, int] | dict[str, int] | None = dataclasses.field(
        default_factory=lambda: {"height": 224, "width": 224}
    )
    image_mean: float | Sequence[float] = OPENAI_CLIP_MEAN
    image_std: float | Sequence[float] = OPENAI_CLIP_STD

    _int_size_is_square: ClassVar[bool] = False


@dataclasses.dataclass(kw_only=True)
class DINOv3ViTImageProcessor(_TransformersImageProcessor):
    """transformers' `DINOv3ViTImageProcessor`, which DINOv3 checkpoints (ViT and ConvNeXt) name as
    "DINOv3ViTImageProcessorFast". transformers has it in its torchvision backend only, and so it is matched here.

    Its order differs from the other processors': rescale first (uint8 * float32(rescale_factor), in float32), then
    resize the float image with torch's antialiased interpolation (`image_processing.antialias`), then centre crop
    (off by default; a side shorter than the crop is padded with zeros, the odd pixel after it), then normalise.
    The defaults are the checkpoints' `preprocessor_config.json`: 224 x 224 (the image is warped, not cropped),
    bilinear, ImageNet's mean and std. The resize matches torch's to within 2.4e-7 on [0, 1] pixels (its compiled
    kernel fuses some multiply-adds; see `image_processing.antialias`), so `pixel_values` match to about 1e-6.

    Args (all keyword, as in transformers; every one can also be given per call):
        size: {"height": h, "width": w} (an int s means s x s, a pair (h, w)), or {"shortest_edge": s}.
        resample: 2 (bilinear, default) or 3 (bicubic): the modes torch interpolates with antialiasing.
        and do_resize, do_center_crop + crop_size, do_rescale + rescale_factor, do_normalize + image_mean /
        image_std, do_convert_rgb (on by default here; transformers leaves it unset and then fails on gray images).
        Computation is in float32, float64 inputs included; uint8 pixels with do_rescale=False are resized as
        floats (torch would resize and round them as uint8, then refuse to normalise them).

    Call it on images to get a `BatchFeature` (see `__call__`).
    """

    size: int | tuple[int, int] | dict[str, int] = dataclasses.field(
        default_factory=lambda: {"height": 224, "width": 224}
    )
    resample: int = Image.Resampling.BILINEAR
    image_mean: float | Sequence[float] = IMAGENET_DEFAULT_MEAN
    image_std: float | Sequence[float] = IMAGENET_DEFAULT_STD

    _int_size_is_square: ClassVar[bool] = True
    _size_keys: ClassVar[tuple[frozenset, ...]] = (frozenset({"height", "width"}), frozenset({"shortest_edge"}))
    _modes: ClassVar[dict[int, str]] = {Image.Resampling.BILINEAR: "bilinear", Image.Resampling.BICUBIC: "bicubic"}

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.resample not in self._modes:
            raise ValueError(f"resample={self.resample!r}: expected 2 (BILINEAR) or 3 (BICUBIC), the modes torch "
                             "resizes with antialiasing")

    @staticmethod
    def _array_to_rgb(array: np.ndarray) -> np.ndarray:
        """transformers' torchvision backend converts uint8 RGBA arrays in float32 (x / 255, composited onto white,
        back as torchvision's `to_dtype` does: x 255.999, truncated); everything else as `_array_to_rgb`."""
        if array.dtype != np.uint8 or array.shape[-1] != 4:
            return _array_to_rgb(array)
        pixels = array.astype(np.float32) * np.float32(1 / 255)
        alpha = pixels[..., 3:]
        return ((pixels[..., :3] * alpha + (1 - alpha)) * np.float32(255.999)).astype(np.uint8)

    def _process(self, array: np.ndarray) -> np.ndarray:
        array = array.astype(np.float32)
        if self.do_rescale:
            array = array * np.float32(self.rescale_factor)
        if self.do_resize:
            array = self._resize(array)
        if self.do_center_crop:
            height, width = self.crop_size["height"], self.crop_size["width"]

            def start(size: int, crop: int) -> int:
                return (size - crop) // 2 if size >= crop else -((crop - size) // 2)

            array = _window(array, start(array.shape[0], height), start(array.shape[1], width), height, width)
        if self.do_normalize:
            array = _normalize(array, self.image_mean, self.image_std)
        return array

    def _resize(self, array: np.ndarray) -> np.ndarray:
        return antialias.resize(array, *_resized_size(array, self.size), self._modes[self.resample])
