"""transformers' `SegformerImageProcessor` (nvidia/mit-b*, nvidia/segformer-b*: "SegformerFeatureExtractor") and
`PvtImageProcessor` (OpenGVLab/pvt_v2_b*), PIL backend (`SegformerImageProcessorPil`, `PvtImageProcessorPil` in
transformers' models/segformer/image_processing_pil_segformer.py and models/pvt/image_processing_pil_pvt.py).

Both run the plain PIL pipeline of `ViTImageProcessor` (resize to {"height", "width"}, rescale, normalise) with their
own defaults; only images are processed (SegFormer's segmentation-map options, `do_reduce_labels`, act on label maps
and not on `pixel_values`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from PIL import Image

from .common import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from .hf_processors import ViTImageProcessor


@dataclasses.dataclass(kw_only=True)
class SegformerImageProcessor(ViTImageProcessor):
    """transformers' `SegformerImageProcessor` (PIL backend): resize to 512 x 512 (an int `size` s means s x s),
    bilinear, rescale by 1/255, normalise with ImageNet's mean and std. Options as `ViTImageProcessor`'s, plus
    `do_reduce_labels` (segmentation maps only: no effect on images).

    Call it on images to get a `BatchFeature` (see `__call__`).
    """

    size: int | tuple[int, int] | dict[str, int] = dataclasses.field(
        default_factory=lambda: {"height": 512, "width": 512})
    resample: int = Image.Resampling.BILINEAR
    image_mean: float | Sequence[float] = IMAGENET_DEFAULT_MEAN
    image_std: float | Sequence[float] = IMAGENET_DEFAULT_STD
    do_reduce_labels: bool = False


@dataclasses.dataclass(kw_only=True)
class PvtImageProcessor(ViTImageProcessor):
    """transformers' `PvtImageProcessor` (PIL backend): resize to 224 x 224, bicubic by default (the PVTv2
    checkpoints' `preprocessor_config.json` say bilinear), rescale by 1/255, normalise with ImageNet's mean and std.
    Options as `ViTImageProcessor`'s.

    Call it on images to get a `BatchFeature` (see `__call__`).
    """

    resample: int = Image.Resampling.BICUBIC
    image_mean: float | Sequence[float] = IMAGENET_DEFAULT_MEAN
    image_std: float | Sequence[float] = IMAGENET_DEFAULT_STD
