"""Image preprocessing in numpy and PIL: images -> `pixel_values`, with no torch.

These processors reproduce the evaluation preprocessing of the checkpoints we load:

* `ConvNextImageProcessor`, `ViTImageProcessor` and `BitImageProcessor` match transformers' PIL backend
  (`ConvNextImageProcessorPil`, `ViTImageProcessorPil`, `BitImageProcessorPil`); the HF ResNet, Swin and DINOv2
  checkpoints name these in their `preprocessor_config.json`.
* `DINOv3ViTImageProcessor` matches transformers' `DINOv3ViTImageProcessor`, which exists only in its torchvision
  backend: it resizes float pixels with torch's antialiased interpolation (`jaxbackbones.antialias`).
* `TimmImageProcessor` matches timm's eval transform, `create_transform(**resolve_data_config(pretrained_cfg=...))`:
  torchvision's PIL resize and centre crop, then `ToTensor` and `Normalize`.

`AutoImageProcessor.from_pretrained` picks and builds one from a local folder or hub repo.

Every processor takes one image or a list of them (PIL images, or uint8 / float numpy arrays of shape (H, W),
(H, W, C) or (C, H, W), or a batch (N, H, W, C) / (N, C, H, W)) and returns a `BatchFeature` whose `pixel_values`
is a float32 batch, (N, H, W, 3) by default, the layout of our modules, or (N, 3, H, W) with
`data_format="channels_first"`.

Except DINOv3's, the sources resize with PIL on uint8 pixels, so we do too: that is what makes the numbers agree to
float32 rounding, and it is also why float inputs are quantised to uint8 before a resize.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence
from typing import Any, ClassVar

import jax.numpy as jnp
import numpy as np
from PIL import Image

from . import antialias
from .hub import load_config_dict, read_json, resolve_file

PREPROCESSOR_CONFIG_NAME = "preprocessor_config.json"

# transformers' defaults for its processors, and timm's (ImageNet statistics).
IMAGENET_STANDARD_MEAN = (0.5, 0.5, 0.5)
IMAGENET_STANDARD_STD = (0.5, 0.5, 0.5)
IMAGENET_DEFAULT_MEAN = (0.485, 0.456, 0.406)
IMAGENET_DEFAULT_STD = (0.229, 0.224, 0.225)
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# timm names its interpolation modes; transformers stores PIL's filter ids, the values of these members.
TIMM_INTERPOLATIONS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
    "lanczos": Image.Resampling.LANCZOS,
}
TIMM_CROP_MODES = ("center", "squash", "border")
DATA_FORMATS = ("channels_last", "channels_first")
RETURN_TENSORS = ("np", "jax")
# An array axis of this length can hold the channels: grayscale, RGB, RGBA.
CHANNEL_COUNTS = (1, 3, 4)


class BatchFeature(dict):
    """What a processor returns: a dict that also reads as attributes, `out["pixel_values"]` or `out.pixel_values`.

    `pixel_values` is a float32 batch of shape (N, H, W, C) (`data_format="channels_last"`, the default) or
    (N, C, H, W) (`"channels_first"`), a numpy array (`return_tensors="np"`) or a jax array (`"jax"`).
    """

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"{type(self).__name__} has no field {name!r}; it has {sorted(self)}") from None


# ---------------------------------------------------------------------------------------------------------------------
# Inputs: anything we accept -> a list of (H, W, C) arrays.


def _flatten_images(images: Any) -> list:
    """One image, a list or tuple of images, or a 4-D batch array -> a flat list of single images."""
    items = list(images) if isinstance(images, (list, tuple)) else [images]
    flat = []
    for item in items:
        if isinstance(item, np.ndarray) and item.ndim == 4:
            flat.extend(item)
        else:
            flat.append(item)
    if not flat:
        raise ValueError(
            f"got no images ({images!r}): expected a PIL image, a numpy array, or a non-empty list of them"
        )
    return flat


def _to_array(image: Any, *, convert_rgb: bool, input_data_format: str | None, array_to_rgb=None) -> np.ndarray:
    """One PIL image or numpy array -> an (H, W, C) array, uint8 or float, with C == 3 when `convert_rgb`
    (arrays converted by `array_to_rgb`, default `_array_to_rgb`)."""
    if isinstance(image, Image.Image):
        # Converting before leaving PIL keeps the mode's meaning (palette, transparency), as transformers does.
        array = np.asarray(_pil_to_rgb(image) if convert_rgb else image)
        array = array[:, :, None] if array.ndim == 2 else array
    elif isinstance(image, np.ndarray):
        array = _channels_last(image, input_data_format)
    else:
        raise ValueError(
            f"got an image of type {type(image).__module__}.{type(image).__qualname__}: expected a PIL image or a "
            "numpy array (convert other arrays with np.asarray)"
        )

    if array.dtype != np.uint8 and not np.issubdtype(array.dtype, np.floating):
        raise ValueError(
            f"got an image of dtype {array.dtype}: expected uint8 (0..255) or a floating point dtype"
            + (f" (PIL mode {image.mode!r}; convert it with .convert('RGB'))" if isinstance(image, Image.Image) else "")
        )
    if array.shape[-1] not in CHANNEL_COUNTS:
        raise ValueError(
            f"got an image with {array.shape[-1]} channels (shape {array.shape} as (H, W, C)): expected 1 (grayscale), "
            "3 (RGB) or 4 (RGBA)"
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"got an empty image of shape {array.shape} as (H, W, C): expected at least one pixel")
    return (array_to_rgb or _array_to_rgb)(array) if convert_rgb else array


def _channels_last(array: np.ndarray, input_data_format: str | None) -> np.ndarray:
    """A (H, W), (H, W, C) or (C, H, W) array as (H, W, C).

    The channel axis of a 3-D array is `input_data_format` if given; otherwise transformers' rule: channels first
    if the first axis has 1, 3 or 4 entries, else channels last if the last one does. So an ambiguous (3, H, 3)
    array reads as channels first, as it does in transformers.
    """
    if array.ndim == 2:
        return array[:, :, None]
    if array.ndim != 3:
        raise ValueError(
            f"got a {array.ndim}-D array of shape {array.shape}: expected one image of shape (H, W), (H, W, C) or "
            "(C, H, W), or a batch of shape (N, H, W, C) or (N, C, H, W)"
        )
    if input_data_format is not None:
        channels_first = input_data_format == "channels_first"
    elif array.shape[0] in CHANNEL_COUNTS or array.shape[-1] in CHANNEL_COUNTS:
        channels_first = array.shape[0] in CHANNEL_COUNTS
    else:
        raise ValueError(
            f"cannot find the channel axis of an image of shape {array.shape}: expected 1 (grayscale), 3 (RGB) or "
            "4 (RGBA) channels on the first or last axis"
        )
    return np.moveaxis(array, 0, -1) if channels_first else array


def _pil_to_rgb(image: Image.Image) -> Image.Image:
    """transformers' `convert_to_rgb` for PIL: transparent pixels are composited onto white.

    Plain `convert("RGB")` would drop alpha and show whatever colour transparent pixels happen to store.
    """
    if "A" in image.getbands() or image.info.get("transparency") is not None:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def _array_to_rgb(array: np.ndarray) -> np.ndarray:
    """transformers' `convert_to_rgb` for (H, W, C) arrays: gray is repeated, RGBA is composited onto white."""
    channels = array.shape[-1]
    if channels == 1:
        return np.repeat(array, 3, axis=-1)
    if channels == 3:
        return array
    if array.dtype == np.uint8:
        alpha = array[..., 3:] / 255
        return np.round(alpha * array[..., :3] + (1 - alpha) * 255).astype(np.uint8)
    if array.min() < 0 or array.max() > 1:
        raise ValueError(
            f"got a float RGBA image with values in [{array.min()}, {array.max()}]: expected [0, 1] to composite it "
            "onto white"
        )
    alpha = array[..., 3:]
    return (alpha * array[..., :3] + (1 - alpha)).astype(array.dtype)


# ---------------------------------------------------------------------------------------------------------------------
# Pixel operations, each written to give the same numbers as the library it stands in for.


def _to_uint8(array: np.ndarray) -> tuple[np.ndarray, bool]:
    """Pixels as uint8 for PIL, and whether they were scaled up from [0, 1] (transformers' `to_pil_image` rule).

    Floats that are whole numbers in [0, 255] are taken as 0..255; other floats must lie in [0, 1] and are scaled
    by 255 and truncated.
    """
    if array.dtype == np.uint8:
        return array, False
    low, high = array.min(), array.max()
    if not np.isfinite([low, high]).all():
        raise ValueError(f"got a float image with non-finite values (min {low}, max {high}): expected [0, 1]")
    if np.allclose(array, array.astype(int)):
        if low >= 0 and high <= 255:
            return array.astype(np.uint8), False
        raise ValueError(f"got a float image of whole numbers in [{low}, {high}]: expected [0, 255]")
    if low >= 0 and high <= 1:
        return _rescale(array, 255).astype(np.uint8), True
    raise ValueError(
        f"got a float image with values in [{low}, {high}]: expected [0, 1], or whole numbers in [0, 255]"
    )


def _rescale(array: np.ndarray, factor: float) -> np.ndarray:
    """`array * factor` as transformers' `rescale` computes it: in float64, then rounded to float32."""
    return (array.astype(np.float64) * factor).astype(np.float32)


def _pil_resize(array: np.ndarray, height: int, width: int, resample: int) -> np.ndarray:
    """transformers' PIL `resize` of an (H, W, C) array to (height, width, C).

    uint8 stays uint8; float pixels go through uint8 (see `_to_uint8`) and come back as float32 on their scale.
    """
    pixels, scaled_up = _to_uint8(array)
    image = Image.fromarray(pixels[:, :, 0] if pixels.shape[-1] == 1 else pixels)
    resized = np.asarray(image.resize((width, height), resample=resample))
    if resized.ndim == 2:
        resized = resized[:, :, None]
    return _rescale(resized, 1 / 255) if scaled_up else resized


def _shortest_edge_size(height: int, width: int, shortest_edge: int) -> tuple[int, int]:
    """(height, width) with the shorter side at `shortest_edge` and the aspect ratio kept, the long side truncated.

    The rule of torchvision's `Resize(int)` and of transformers' `get_resize_output_image_size`.
    """
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(shortest_edge * long / short)
    return (new_long, shortest_edge) if width <= height else (shortest_edge, new_long)


def _resized_size(array: np.ndarray, size: dict[str, int]) -> tuple[int, int]:
    """The (height, width) an (H, W, C) image is resized to: `size`'s height and width, or its shortest edge."""
    if "shortest_edge" in size:
        return _shortest_edge_size(array.shape[0], array.shape[1], size["shortest_edge"])
    return size["height"], size["width"]


def _window(array: np.ndarray, top: int, left: int, height: int, width: int, fill: Any = 0) -> np.ndarray:
    """The (height, width) window of an (H, W, C) array whose corner is at (top, left); outside the image is `fill`."""
    out = np.empty((height, width, array.shape[-1]), dtype=array.dtype)
    out[...] = fill
    inside = array[max(top, 0) : top + height, max(left, 0) : left + width]
    out[max(-top, 0) : max(-top, 0) + inside.shape[0], max(-left, 0) : max(-left, 0) + inside.shape[1]] = inside
    return out


def _center_crop_transformers(array: np.ndarray, height: int, width: int) -> np.ndarray:
    """transformers' `center_crop`: the window starts at floor((size - crop) / 2); a side shorter than the crop is
    padded with zeros, the odd pixel going before it."""
    return _window(array, (array.shape[0] - height) // 2, (array.shape[1] - width) // 2, height, width)


def _center_crop_torchvision(array: np.ndarray, height: int, width: int, fill: Any = 0) -> np.ndarray:
    """torchvision's `center_crop` (and timm's `center_crop_or_pad`, which adds `fill`).

    A side shorter than the crop is padded with `fill`, the odd pixel going after it; otherwise the window starts at
    round((size - crop) / 2), with Python's round-half-to-even.
    """

    def start(size: int, crop: int) -> int:
        return -((crop - size) // 2) if size < crop else round((size - crop) / 2.0)

    return _window(array, start(array.shape[0], height), start(array.shape[1], width), height, width, fill)


def _normalize(array: np.ndarray, mean: float | tuple[float, ...], std: float | tuple[float, ...]) -> np.ndarray:
    """transformers' `normalize` of an (H, W, C) array: in the image's float dtype (float32 for integer pixels)."""
    if not np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float32)
    channels = array.shape[-1]
    for name, value in (("image_mean", mean), ("image_std", std)):
        if isinstance(value, tuple) and len(value) != channels:
            raise ValueError(f"{name}={value} has {len(value)} values but the images have {channels} channels")
    return (array - np.asarray(mean, dtype=array.dtype)) / np.asarray(std, dtype=array.dtype)


def _batch(pixels: list[np.ndarray], data_format: str, return_tensors: str) -> BatchFeature:
    """(H, W, C) arrays -> a `BatchFeature` with the float32 batch in the asked layout and array type."""
    shapes = sorted({p.shape for p in pixels})
    if len(shapes) > 1:
        raise ValueError(
            f"the processed images have different shapes {shapes} (as H, W, C) and cannot form one batch: "
            "expected one size; resize them to it (do_resize=True with a fixed size)"
        )
    batch = np.stack(pixels).astype(np.float32, copy=False)
    if data_format == "channels_first":
        batch = np.ascontiguousarray(batch.transpose(0, 3, 1, 2))
    return BatchFeature(pixel_values=jnp.asarray(batch) if return_tensors == "jax" else batch)


def _check_call_args(data_format: str, return_tensors: str, input_data_format: str | None) -> None:
    if data_format not in DATA_FORMATS:
        raise ValueError(f"data_format={data_format!r}: expected one of {DATA_FORMATS}")
    if return_tensors not in RETURN_TENSORS:
        raise ValueError(f"return_tensors={return_tensors!r}: expected one of {RETURN_TENSORS}")
    if input_data_format not in (None, *DATA_FORMATS):
        raise ValueError(f"input_data_format={input_data_format!r}: expected None (infer it) or one of {DATA_FORMATS}")


# ---------------------------------------------------------------------------------------------------------------------
# Option checking, shared by the constructors and the per-call overrides.


def _preprocess(processor: Any, images: Any, overrides: dict, data_format: str, return_tensors: str,
                input_data_format: str | None) -> BatchFeature:
    """What every processor's `__call__` does: check the call, apply per-call overrides, run `_process` on each
    image as an (H, W, C) array, batch."""
    _check_call_args(data_format, return_tensors, input_data_format)
    options = _with_overrides(processor, overrides)
    convert_rgb = getattr(options, "do_convert_rgb", True)  # timm's transform has no switch: always RGB
    array_to_rgb = getattr(options, "_array_to_rgb", None)  # a processor with its own rule for arrays
    pixels = [options._process(_to_array(image, convert_rgb=convert_rgb, input_data_format=input_data_format,
                                         array_to_rgb=array_to_rgb))
              for image in _flatten_images(images)]
    return _batch(pixels, data_format, return_tensors)


def _option_names(cls: type) -> list[str]:
    return [field.name for field in dataclasses.fields(cls) if field.init]


def _with_overrides(processor: Any, overrides: dict) -> Any:
    """A copy of `processor` with the options in `overrides` replaced (None keeps the processor's value)."""
    _check_option_names(type(processor), overrides)
    overrides = {name: value for name, value in overrides.items() if value is not None}
    return dataclasses.replace(processor, **overrides) if overrides else processor


def _check_option_names(cls: type, names: Any) -> None:
    valid = _option_names(cls)
    unknown = sorted(set(names) - set(valid))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for {cls.__name__}: expected some of {valid}")


def _size_dict(size: Any, name: str, *, int_is_square: bool, allowed: tuple[frozenset, ...]) -> dict[str, int]:
    """transformers' `get_size_dict`: an int is a square or the shortest edge, a pair is (height, width)."""
    if isinstance(size, int) and not isinstance(size, bool):
        size_dict = {"height": size, "width": size} if int_is_square else {"shortest_edge": size}
    elif isinstance(size, (tuple, list)) and len(size) == 2:
        size_dict = {"height": size[0], "width": size[1]}
    elif isinstance(size, dict):
        size_dict = dict(size)
    else:
        size_dict = None
    keys = " or ".join(str(sorted(keys)) for keys in allowed)
    if size_dict is None or frozenset(size_dict) not in allowed:
        raise ValueError(f"{name}={size!r}: expected an int, a (height, width) pair, or a dict with keys {keys}")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size_dict.values()):
        raise ValueError(f"{name}={size!r}: expected positive int sizes")
    return size_dict


def _height_width(size: Any, name: str, *, needed: bool, flag: str) -> dict[str, int] | None:
    """An optional {"height", "width"} size (an int is a square), which the step behind `flag` needs when on."""
    if size is None:
        if needed:
            raise ValueError(f"{flag}=True needs a {name}, got None")
        return None
    return _size_dict(size, name, int_is_square=True, allowed=(frozenset({"height", "width"}),))


def _floats(value: Any, name: str, length: int | None = None) -> float | tuple[float, ...]:
    """A number as a float, or a sequence of numbers as a tuple of floats (of `length` values, when given)."""
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        array = None
    if array is not None and array.ndim == 0 and length is None:
        return float(array)
    if array is not None and array.ndim == 1 and length in (None, array.size):
        return tuple(array.tolist())
    expected = f"{length} numbers" if length else "a number or a list of numbers, one per channel"
    raise ValueError(f"{name}={value!r}: expected {expected}")


def _positive(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name}={value!r}: expected a positive number")
    return float(value)


def _resampling(value: Any) -> Image.Resampling:
    try:
        return Image.Resampling(value)
    except ValueError:
        choices = ", ".join(f"{int(member)} ({member.name})" for member in Image.Resampling)
        raise ValueError(f"resample={value!r}: expected a PIL resampling filter, one of {choices}") from None


# ---------------------------------------------------------------------------------------------------------------------
# transformers' processors.


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
    resize the float image with torch's antialiased interpolation (`jaxbackbones.antialias`), then centre crop
    (off by default; a side shorter than the crop is padded with zeros, the odd pixel after it), then normalise.
    The defaults are the checkpoints' `preprocessor_config.json`: 224 x 224 (the image is warped, not cropped),
    bilinear, ImageNet's mean and std. The resize matches torch's to within 2.4e-7 on [0, 1] pixels (its compiled
    kernel fuses some multiply-adds; see `jaxbackbones.antialias`), so `pixel_values` match to about 1e-6.

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


# ---------------------------------------------------------------------------------------------------------------------
# timm's eval transform.


@dataclasses.dataclass(kw_only=True)
class TimmImageProcessor:
    """timm's eval transform, `create_transform(**resolve_data_config(...))`, on numpy and PIL.

    Images become RGB (gray repeated, alpha composited onto white) uint8 PIL images, then, with the target
    (height, width) from `input_size` and scale = floor(target / crop_pct):
      crop_mode "center": resize the shorter side to the scale (each side to its own scale, keeping the aspect ratio,
          for a non-square target), then centre crop to the target;
      "squash": resize to the scale ignoring the aspect ratio, then centre crop;
      "border": resize so the longer side fits the scale, then centre crop or pad with the mean colour.
    Then pixels / 255, minus `mean`, over `std`, in float32 as torchvision's `ToTensor` and `Normalize` compute it.

    Args (all keyword, as in timm's data config; every one can also be given per call):
        input_size: (3, height, width), (height, width) or an int (default 224).
        interpolation: "bicubic" (default), "bilinear", "nearest", "box", "hamming" or "lanczos".
        crop_pct: the fraction of the resized image kept by the crop (default 0.875).
        crop_mode: "center" (default), "squash" or "border".
        mean, std: three floats each (default ImageNet's).

    Call it on images to get a `BatchFeature` (see `__call__`).
    """

    input_size: int | tuple[int, ...] = (3, 224, 224)
    interpolation: str = "bicubic"
    crop_pct: float = 0.875
    crop_mode: str = "center"
    mean: Sequence[float] = IMAGENET_DEFAULT_MEAN
    std: Sequence[float] = IMAGENET_DEFAULT_STD
    # The pretrained_cfg keys this was read from that are not options here (num_classes, test_input_size, ...).
    extra_config: dict = dataclasses.field(default_factory=dict, init=False, repr=False, compare=False)

    # The pretrained_cfg keys that resolve_data_config reads.
    _data_config_keys: ClassVar[tuple[str, ...]] = (
        "input_size", "interpolation", "crop_pct", "crop_mode", "mean", "std"
    )

    def __post_init__(self) -> None:
        size = self.input_size
        if isinstance(size, int) and not isinstance(size, bool):
            size = (3, size, size)
        elif isinstance(size, (tuple, list)) and len(size) == 2:
            size = (3, *size)
        if not (
            isinstance(size, (tuple, list))
            and len(size) == 3
            and size[0] == 3
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)
        ):
            raise ValueError(
                f"input_size={self.input_size!r}: expected (3, height, width), (height, width) or an int, with "
                "positive sizes (only RGB input is supported)"
            )
        self.input_size = tuple(size)
        if self.interpolation not in TIMM_INTERPOLATIONS:
            raise ValueError(f"interpolation={self.interpolation!r}: expected one of {sorted(TIMM_INTERPOLATIONS)}")
        if self.crop_mode not in TIMM_CROP_MODES:
            raise ValueError(f"crop_mode={self.crop_mode!r}: expected one of {TIMM_CROP_MODES}")
        self.crop_pct = _positive(self.crop_pct, "crop_pct")
        self.mean = _floats(self.mean, "mean", length=3)
        self.std = _floats(self.std, "std", length=3)

    @classmethod
    def from_pretrained_cfg(cls, pretrained_cfg: dict, **overrides: Any) -> TimmImageProcessor:
        """A processor from a timm `pretrained_cfg` dict, resolved as `resolve_data_config(pretrained_cfg=...)` does.

        Missing or empty values take timm's defaults; `overrides` replace values; the other keys are kept in
        `extra_config`. `test_input_size` and `test_crop_pct` are not applied, as resolve_data_config does not
        apply them by default.
        """
        _check_option_names(cls, overrides)
        # resolve_data_config treats a missing, None, 0 or "" value alike: the default.
        options = {key: pretrained_cfg[key] for key in cls._data_config_keys if pretrained_cfg.get(key)}
        options.update({name: value for name, value in overrides.items() if value is not None})
        processor = cls(**options)
        processor.extra_config = {k: v for k, v in pretrained_cfg.items() if k not in cls._data_config_keys}
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
            images: a PIL image, a numpy array (uint8, or float in [0, 1], or whole floats in [0, 255]; (H, W),
                (H, W, C) or (C, H, W); or a batch (N, H, W, C) / (N, C, H, W)), or a list of them.
            data_format: "channels_last" for (N, H, W, 3) output, "channels_first" for (N, 3, H, W).
            return_tensors: "np" for a numpy array, "jax" for a jax array.
            input_data_format: the channel axis of 3-D arrays, "channels_first" or "channels_last"; None infers it.
            **overrides: any option of the processor (`input_size=`, `crop_pct=`, ...) for this call.

        Returns:
            A `BatchFeature` with `pixel_values`, float32, (N, H, W, 3) or (N, 3, H, W).
        """
        return _preprocess(self, images, overrides, data_format, return_tensors, input_data_format)

    def _process(self, array: np.ndarray) -> np.ndarray:
        """One (H, W, 3) image through the eval transform -> (height, width, 3) float32."""
        _, height, width = self.input_size
        scale_height, scale_width = math.floor(height / self.crop_pct), math.floor(width / self.crop_pct)
        image = Image.fromarray(_to_uint8(array)[0])
        fill = 0
        if self.crop_mode == "squash":
            size = (scale_height, scale_width)
        elif self.crop_mode == "border":
            size = _keep_ratio_size(image.height, image.width, scale_height, scale_width, longest=True)
            fill = tuple(round(255 * m) for m in self.mean)
        elif scale_height == scale_width:
            size = _shortest_edge_size(image.height, image.width, scale_height)
        else:
            size = _keep_ratio_size(image.height, image.width, scale_height, scale_width, longest=False)
        resized = np.asarray(image.resize((size[1], size[0]), resample=TIMM_INTERPOLATIONS[self.interpolation]))
        pixels = _center_crop_torchvision(resized, height, width, fill)
        return (pixels.astype(np.float32) / 255 - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)


def _keep_ratio_size(height: int, width: int, target_height: int, target_width: int, *, longest: bool) -> tuple:
    """timm's `ResizeKeepRatio` size: scale both sides by one ratio so the longer (`longest`) or the shorter side
    meets its target, rounding half to even."""
    ratio_height, ratio_width = height / target_height, width / target_width
    ratio = max(ratio_height, ratio_width) if longest else min(ratio_height, ratio_width)
    return round(height / ratio), round(width / ratio)


# ---------------------------------------------------------------------------------------------------------------------
# Choosing a processor for a checkpoint.

PROCESSOR_CLASSES = {
    "ConvNextImageProcessor": ConvNextImageProcessor,
    "ViTImageProcessor": ViTImageProcessor,
    "BitImageProcessor": BitImageProcessor,
    "DINOv3ViTImageProcessor": DINOv3ViTImageProcessor,
}


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
    return PROCESSOR_CLASSES[base_name]
