"""timm's eval transform (`create_transform(**resolve_data_config(...))`) on numpy and PIL: `TimmImageProcessor`."""

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
    TIMM_CROP_MODES,
    TIMM_INTERPOLATIONS,
    BatchFeature,
    _center_crop_torchvision,
    _check_option_names,
    _floats,
    _positive,
    _preprocess,
    _shortest_edge_size,
    _to_uint8,
)


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
