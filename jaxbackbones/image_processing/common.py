"""What every processor shares: the statistics and option names, `BatchFeature`, turning inputs into (H, W, C)
arrays, the pixel operations (each giving the numbers of the library it stands in for), and option checking."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp
import numpy as np
from PIL import Image



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


def _padded_batch(pixels: list[np.ndarray], pad_size: dict[str, int] | None, data_format: str,
                  return_tensors: str) -> BatchFeature:
    """(H, W, C) arrays padded with zeros at the bottom and right to `pad_size` ({"height", "width"}), or to the
    largest height and width among them when None, as a `BatchFeature` with `pixel_values` and `pixel_mask`
    ((N, H, W) int64: 1 on image pixels, 0 on padding), as transformers' DETR and MaskFormer processors pad."""
    if pad_size is not None:
        height, width = pad_size["height"], pad_size["width"]
    else:
        height, width = max(p.shape[0] for p in pixels), max(p.shape[1] for p in pixels)
    masks = np.zeros((len(pixels), height, width), dtype=np.int64)
    for mask, image in zip(masks, pixels):
        if image.shape[0] > height or image.shape[1] > width:
            raise ValueError(f"pad_size={pad_size} is smaller than an image of size {image.shape[:2]}")
        mask[: image.shape[0], : image.shape[1]] = 1
    out = _batch([_window(image, 0, 0, height, width) for image in pixels], data_format, return_tensors)
    out["pixel_mask"] = jnp.asarray(masks) if return_tensors == "jax" else masks
    return out


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
    _, pixels = _processed_images(processor, images, overrides, input_data_format)
    return _batch(pixels, data_format, return_tensors)


def _processed_images(processor: Any, images: Any, overrides: dict,
                      input_data_format: str | None) -> tuple[Any, list[np.ndarray]]:
    """The processor with the call's overrides, and each image run through its `_process` as an (H, W, C) array."""
    options = _with_overrides(processor, overrides)
    convert_rgb = getattr(options, "do_convert_rgb", True)  # timm's transform has no switch: always RGB
    array_to_rgb = getattr(options, "_array_to_rgb", None)  # a processor with its own rule for arrays
    pixels = [options._process(_to_array(image, convert_rgb=convert_rgb, input_data_format=input_data_format,
                                         array_to_rgb=array_to_rgb))
              for image in _flatten_images(images)]
    return options, pixels


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
