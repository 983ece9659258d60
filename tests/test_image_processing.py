"""Image processors: pixel parity with transformers' PIL backend and timm's eval transform, loading, errors.

The references (transformers, timm, torchvision) run here only; `jaxbackbones.image_processing` must not need them.
"""

import ast
import json
from pathlib import Path

import jax
import numpy as np
import pytest
import timm
import transformers
from PIL import Image
from timm.data import create_transform, resolve_data_config
from timm.models._hub import save_config_for_hf

from helpers import write_to_hub_cache

from jaxbackbones import image_processing
from jaxbackbones.image_processing import (
    AutoImageProcessor,
    BatchFeature,
    BitImageProcessor,
    ConvNextImageProcessor,
    DINOv3ViTImageProcessor,
    TimmImageProcessor,
    ViTImageProcessor,
    antialias,
)

TOLERANCE = 1e-5
# (height, width): tiny, square, portrait, landscape, extreme aspect ratios, around and above 384.
SIZES = [(5, 7), (7, 5), (1, 1), (224, 224), (256, 256), (300, 200), (200, 300), (97, 311), (30, 1000), (385, 401),
         (480, 640), (640, 480)]
TIMM_MODELS = ["resnet50.a1_in1k", "swin_tiny_patch4_window7_224.ms_in1k"]
# timm's ViT, DINOv2, DINOv3 and ConvNeXt pretrained configs: crop_pct 0.875 / 0.9 / 0.95 / 1.0, 'center' and 'squash'
# crops, 518 inputs, ImageNet, CLIP and 0.5 mean and std.
TIMM_VIT_CONVNEXT_MODELS = [
    "vit_small_patch14_dinov2.lvd142m", "vit_small_patch14_reg4_dinov2.lvd142m", "vit_small_patch16_dinov3.lvd1689m",
    "vit_base_patch16_224.augreg2_in21k_ft_in1k", "vit_base_patch16_clip_224.openai", "convnext_tiny.fb_in22k",
    "convnext_tiny.in12k_ft_in1k", "convnext_tiny.dinov3_lvd1689m", "convnextv2_nano.fcmae_ft_in22k_in1k",
    "convnextv2_nano.fcmae_ft_in22k_in1k_384",
]
# The preprocessor_config.json of facebook/dinov2-* (BitImageProcessor) and of facebook/dinov3-vit*-pretrain-* and
# facebook/dinov3-convnext-*-pretrain-lvd1689m: transformers' conversion scripts (convert_dinov3_vit_to_hf.py,
# convert_dinov3_convnext_to_hf.py) save DINOv3ViTImageProcessorFast(size={"height": 224, "width": 224},
# resample=2) with transformers 4.56, which writes this.
DINOV2_PREPROCESSOR = {
    "crop_size": {"height": 224, "width": 224}, "do_center_crop": True, "do_convert_rgb": True, "do_normalize": True,
    "do_rescale": True, "do_resize": True, "image_mean": [0.485, 0.456, 0.406], "image_processor_type":
    "BitImageProcessor", "image_std": [0.229, 0.224, 0.225], "resample": 3, "rescale_factor": 0.00392156862745098,
    "size": {"shortest_edge": 256},
}
DINOV3_PREPROCESSOR = {
    "crop_size": None, "data_format": "channels_first", "default_to_square": True, "device": None,
    "disable_grouping": None, "do_center_crop": None, "do_convert_rgb": None, "do_normalize": True, "do_rescale": True,
    "do_resize": True, "image_mean": [0.485, 0.456, 0.406], "image_processor_type": "DINOv3ViTImageProcessorFast",
    "image_std": [0.229, 0.224, 0.225], "input_data_format": None, "resample": 2,
    "rescale_factor": 0.00392156862745098, "return_tensors": None, "size": {"height": 224, "width": 224},
}
# DINOv3's processor resizes float pixels with torch's antialiased interpolation, whose compiled kernel fuses some
# multiply-adds: 2.4e-7 on [0, 1] pixels at most (jaxbackbones.image_processing.antialias), over a std of 0.225 after normalising.
DINOV3_TOLERANCE = 2e-6


def random_pixels(height, width, channels=3, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, channels), dtype=np.uint8)


def random_images(sizes=SIZES, seed=0):
    return [Image.fromarray(random_pixels(h, w, seed=seed + i)) for i, (h, w) in enumerate(sizes)]


def assert_matches(processor, images, reference_nchw, **call_kwargs):
    """`processor(images, **call_kwargs)` gives `reference_nchw` in both layouts, as float32."""
    reference_nchw = np.asarray(reference_nchw)
    channels_first = processor(images, data_format="channels_first", **call_kwargs).pixel_values
    channels_last = processor(images, **call_kwargs).pixel_values
    assert channels_first.dtype == channels_last.dtype == np.float32
    assert channels_first.shape == reference_nchw.shape
    assert channels_last.shape == reference_nchw.transpose(0, 2, 3, 1).shape
    np.testing.assert_allclose(channels_first, reference_nchw, rtol=0, atol=TOLERANCE)
    np.testing.assert_allclose(channels_last, reference_nchw.transpose(0, 2, 3, 1), rtol=0, atol=TOLERANCE)


def hf_pixels(processor, images, **kwargs):
    return processor(images, return_tensors="np", **kwargs).pixel_values


# ---------------------------------------------------------------------------------------------------------------------
# transformers parity


@pytest.mark.parametrize("shortest_edge", [224, 384, 160])
@pytest.mark.parametrize("size", SIZES, ids=str)
def test_convnext_matches_transformers(size, shortest_edge):
    pixels = random_pixels(*size)
    kwargs = {"size": {"shortest_edge": shortest_edge}, "crop_pct": 0.875}
    theirs, ours = transformers.ConvNextImageProcessorPil(**kwargs), ConvNextImageProcessor(**kwargs)
    reference = hf_pixels(theirs, Image.fromarray(pixels))
    assert reference.shape[-2:] == (shortest_edge, shortest_edge)
    assert_matches(ours, Image.fromarray(pixels), reference)
    # The same pixels as arrays, channels last and channels first (given explicitly where the shape is ambiguous).
    assert_matches(ours, pixels, reference, input_data_format="channels_last")
    assert_matches(ours, pixels.transpose(2, 0, 1), reference, input_data_format="channels_first")


@pytest.mark.parametrize(
    "size", [{"height": 224, "width": 224}, {"height": 384, "width": 384}, (200, 320), 96, {"shortest_edge": 160}],
    ids=str,
)
def test_vit_matches_transformers(size):
    images = random_images()
    theirs, ours = transformers.ViTImageProcessorPil(size=size), ViTImageProcessor(size=size)
    if isinstance(size, dict) and "shortest_edge" in size:
        # Aspect-preserving sizes differ per image, so they cannot share a batch: compare one at a time.
        for image in images:
            assert_matches(ours, image, hf_pixels(theirs, image))
    else:
        assert_matches(ours, images, hf_pixels(theirs, images))


@pytest.mark.parametrize(
    "options",
    [
        {"resample": Image.Resampling.NEAREST},
        {"resample": 2},
        {"resample": Image.Resampling.LANCZOS},
        {"crop_pct": 0.95},
        {"crop_pct": 1.15},  # the resized image is smaller than the crop: zero padding
        {"size": 224},  # an int is the shortest edge for ConvNext
        {"size": 288, "crop_pct": 1.0},
        {"do_normalize": False},
        {"do_rescale": False},
        {"do_rescale": False, "do_normalize": False},
        {"rescale_factor": 1 / 127.5, "image_mean": 1.0, "image_std": 1.0},
        {"image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]},
        {"do_center_crop": True, "crop_size": {"height": 150, "width": 100}},
        {"do_center_crop": True, "crop_size": 300},  # larger than the image: zero padding
    ],
    ids=str,
)
def test_convnext_options_match_transformers(options):
    images = random_images([(97, 311), (300, 200), (5, 7)], seed=1)
    base = {"size": {"shortest_edge": 224}}
    reference = hf_pixels(transformers.ConvNextImageProcessorPil(**{**base, **options}), images)
    # As constructor options, and as per-call overrides of a default processor.
    assert_matches(ConvNextImageProcessor(**{**base, **options}), images, reference)
    assert_matches(ConvNextImageProcessor(**base), images, reference, **options)
    # transformers takes them per call too.
    per_call = hf_pixels(transformers.ConvNextImageProcessorPil(**base), images, **options)
    assert_matches(ConvNextImageProcessor(**base), images, per_call, **options)


@pytest.mark.parametrize(
    "options",
    [
        {"resample": Image.Resampling.BICUBIC},
        {"do_resize": False},
        {"do_resize": False, "do_rescale": False},
        {"do_normalize": False, "image_mean": 0.2},
        {"do_center_crop": True, "crop_size": (11, 13)},
        {"do_pad": True, "pad_size": {"height": 50, "width": 30}},
    ],
    ids=str,
)
def test_vit_options_match_transformers(options):
    images = random_images([(31, 29), (31, 29)], seed=2)  # one size, so that do_resize=False still batches
    reference = hf_pixels(transformers.ViTImageProcessorPil(size=(40, 24), **options), images)
    assert_matches(ViTImageProcessor(size=(40, 24), **options), images, reference)
    assert_matches(ViTImageProcessor(), images, reference, size=(40, 24), **options)


@pytest.mark.parametrize(
    "options",
    [{}, DINOV2_PREPROCESSOR, {**DINOV2_PREPROCESSOR, "size": 224, "crop_size": 300},
     {"size": {"height": 200, "width": 320}, "do_center_crop": False}, {"resample": 2, "crop_size": (96, 160)}],
    ids=["defaults", "dinov2", "int size, crop larger than the image", "height-width", "bilinear"],
)
def test_bit_matches_transformers_exactly(options):
    options = {key: value for key, value in options.items() if key != "image_processor_type"}
    images = random_images()
    reference = hf_pixels(transformers.BitImageProcessorPil(**options), images)
    ours = BitImageProcessor(**options)
    np.testing.assert_array_equal(ours(images, data_format="channels_first").pixel_values, reference)
    np.testing.assert_array_equal(ours(images).pixel_values, reference.transpose(0, 2, 3, 1))


def torchvision_dinov3(options, images):
    return np.stack([transformers.DINOv3ViTImageProcessor(**options)(image, return_tensors="np").pixel_values[0]
                     for image in images])


@pytest.mark.parametrize(
    "options",
    [{}, {"size": {"shortest_edge": 256}, "do_center_crop": True, "crop_size": {"height": 224, "width": 224}},
     {"size": (300, 150)}, {"size": 518, "resample": 3}, {"do_center_crop": True, "crop_size": (400, 101)},
     {"image_mean": 0.5, "image_std": 0.25, "rescale_factor": 1 / 127.5}],
    ids=["defaults", "shortest edge and crop", "non-square", "518 bicubic", "crop larger", "options"],
)
def test_dinov3_matches_transformers_torchvision(options):
    images = random_images()
    reference = torchvision_dinov3(options, images)
    ours = DINOv3ViTImageProcessor(**options)(images, data_format="channels_first").pixel_values
    assert ours.shape == reference.shape and ours.dtype == np.float32
    np.testing.assert_allclose(ours, reference, rtol=0, atol=DINOV3_TOLERANCE)
    assert np.mean(ours == reference) > 0.5  # most values bit for bit; the rest off in their last bits


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
def test_antialiased_resize_matches_torch(mode):
    torch = pytest.importorskip("torch")
    # The weights are torch's to the bit: interpolate one-hot rows, which sums nothing but a single weight.
    for in_size, out_size in [(300, 224), (97, 224), (640, 256), (1000, 33), (7, 224), (311, 518), (5, 5)]:
        eye = np.eye(in_size, dtype=np.float32)
        reference = torch.nn.functional.interpolate(torch.from_numpy(eye).reshape(in_size, 1, 1, in_size),
                                                    size=(1, out_size), mode=mode, antialias=True)
        ours = antialias.resize(eye.reshape(in_size, 1, in_size).transpose(1, 2, 0), 1, out_size, mode)
        np.testing.assert_array_equal(ours[0], reference[:, 0, 0, :].numpy().T, err_msg=f"{in_size}->{out_size}")
    # Whole images: within a few ulps of torch's fused multiply-adds (2.4e-7 on [0, 1]; bicubic overshoots above 1).
    for (height, width), size in [((5, 7), (224, 224)), ((300, 200), (224, 224)), ((97, 311), (518, 518)),
                                  ((480, 640), (20, 33)), ((1, 1), (7, 5))]:
        pixels = random_pixels(height, width, seed=height).astype(np.float32) / np.float32(255)
        reference = torch.nn.functional.interpolate(torch.from_numpy(pixels.transpose(2, 0, 1).copy())[None],
                                                    size=size, mode=mode, antialias=True)[0].numpy()
        ours = antialias.resize(pixels, *size, mode)
        np.testing.assert_allclose(ours.transpose(2, 0, 1), reference, rtol=2.4e-7, atol=2.4e-7)
    with pytest.raises(ValueError, match="mode='nearest'"):
        antialias.resize(pixels, 2, 2, "nearest")


def _float_inputs():
    pixels = random_pixels(33, 47, seed=3)
    rgba = random_pixels(33, 47, channels=4, seed=4)
    return {
        "float32 in [0, 1]": pixels.astype(np.float32) / 255,
        "float64 in [0, 1]": pixels / 255.0,
        "float32 whole numbers in [0, 255]": pixels.astype(np.float32),
        "gray PIL": Image.fromarray(pixels[..., 0]),
        "gray (H, W, 1)": pixels[..., :1],
        "gray (1, H, W)": pixels[None, ..., 0],
        "RGBA PIL": Image.fromarray(rgba),
        "LA PIL": Image.fromarray(rgba).convert("LA"),
        "RGBA uint8 (H, W, 4)": rgba,
        "RGBA float (4, H, W)": (rgba / 255.0).astype(np.float32).transpose(2, 0, 1),
        "batch NHWC": np.stack([pixels, pixels[::-1]]),
        "batch NCHW": np.stack([pixels, pixels[::-1]]).transpose(0, 3, 1, 2),
    }


@pytest.mark.parametrize("kind", list(_float_inputs()))
@pytest.mark.parametrize("options", [{}, {"do_rescale": False}, {"do_resize": False}], ids=str)
def test_input_kinds_match_transformers(kind, options):
    # Floats in [0, 1] with do_rescale on are rescaled a second time, by both: the same (odd) numbers.
    image = _float_inputs()[kind]
    # transformers leaves do_convert_rgb off by default (then gray and RGBA fail to normalise); ours is on.
    for theirs, ours in [
        (transformers.ConvNextImageProcessorPil(size=64), ConvNextImageProcessor(size=64)),
        (transformers.ViTImageProcessorPil(size=64), ViTImageProcessor(size=64)),
        (transformers.BitImageProcessorPil(size=64, crop_size=48), BitImageProcessor(size=64, crop_size=48)),
    ]:
        reference = hf_pixels(theirs, image, do_convert_rgb=True, **options)
        assert_matches(ours, image, reference, **options)
    if options == {"do_rescale": False} and not np.issubdtype(np.asarray(image).dtype, np.floating):
        return  # transformers' DINOv3 refuses to normalise uint8 pixels it has not rescaled
    theirs = transformers.DINOv3ViTImageProcessor(size=64)
    reference = hf_pixels(theirs, image, do_convert_rgb=True, **options).astype(np.float32)
    ours = DINOv3ViTImageProcessor(size=64)(image, data_format="channels_first", **options).pixel_values
    np.testing.assert_allclose(ours, reference, rtol=0, atol=DINOV3_TOLERANCE)


def test_grayscale_2d_array_equals_one_channel():
    pixels = random_pixels(20, 30, channels=1, seed=5)
    processor = ViTImageProcessor(size=16)
    np.testing.assert_array_equal(processor(pixels[..., 0]).pixel_values, processor(pixels).pixel_values)
    assert processor(pixels[..., 0]).pixel_values.shape == (1, 16, 16, 3)


def test_ambiguous_channel_axis_follows_transformers():
    # (3, 5, 3) reads as channels first in transformers, unless told otherwise.
    pixels = random_pixels(3, 5, seed=6)
    theirs, ours = transformers.ViTImageProcessorPil(size=8), ViTImageProcessor(size=8)
    assert_matches(ours, pixels, hf_pixels(theirs, pixels))
    channels_last = hf_pixels(theirs, pixels, input_data_format="channels_last")
    assert_matches(ours, pixels, channels_last, input_data_format="channels_last")


def test_do_convert_rgb_off_keeps_channels():
    gray = random_pixels(9, 10, channels=1, seed=7)
    out = ViTImageProcessor(size=4, do_convert_rgb=False, image_mean=0.5, image_std=0.5)(gray).pixel_values
    assert out.shape == (1, 4, 4, 1)


# ---------------------------------------------------------------------------------------------------------------------
# timm parity


def timm_reference(pretrained_cfg, images):
    transform = create_transform(**resolve_data_config(pretrained_cfg=pretrained_cfg))
    return np.stack([transform(image).numpy() for image in images])


@pytest.mark.parametrize("model_name", TIMM_MODELS)
def test_timm_matches_eval_transform(model_name):
    pretrained_cfg = timm.models.get_pretrained_cfg(model_name).to_dict()
    images = random_images(seed=8)
    processor = TimmImageProcessor.from_pretrained_cfg(pretrained_cfg)
    assert processor.input_size == tuple(pretrained_cfg["input_size"])
    assert processor.crop_pct == pretrained_cfg["crop_pct"] and processor.interpolation == "bicubic"
    reference = timm_reference(pretrained_cfg, images)
    assert_matches(processor, images, reference)
    # The same pixels as arrays.
    arrays = [np.asarray(image) for image in images]
    assert_matches(processor, arrays, reference, input_data_format="channels_last")


@pytest.mark.parametrize("model_name", TIMM_MODELS)
@pytest.mark.parametrize(
    "changes",
    [
        {"crop_mode": "squash"},
        {"crop_mode": "border"},
        {"input_size": (3, 224, 256)},  # non-square target: ResizeKeepRatio
        {"input_size": (3, 256, 192), "crop_mode": "border"},
        {"input_size": (3, 160, 160), "crop_mode": "squash"},
        {"crop_pct": 1.1},  # the resize is smaller than the crop: padding
        {"interpolation": "bilinear", "crop_pct": 1.0},
        {"interpolation": "nearest", "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)},
    ],
    ids=str,
)
def test_timm_options_match_eval_transform(model_name, changes):
    pretrained_cfg = {**timm.models.get_pretrained_cfg(model_name).to_dict(), **changes}
    images = random_images([(5, 7), (300, 200), (200, 300), (97, 311), (480, 640)], seed=9)
    reference = timm_reference(pretrained_cfg, images)
    assert_matches(TimmImageProcessor.from_pretrained_cfg(pretrained_cfg), images, reference)
    # The same as per-call overrides of the unchanged config.
    base = TimmImageProcessor.from_pretrained_cfg(timm.models.get_pretrained_cfg(model_name).to_dict())
    assert_matches(base, images, reference, **changes)


@pytest.mark.parametrize("model_name", TIMM_VIT_CONVNEXT_MODELS)
def test_timm_vit_and_convnext_configs_match_exactly(model_name):
    pretrained_cfg = timm.models.get_pretrained_cfg(model_name).to_dict()
    images = random_images([(5, 7), (224, 224), (300, 200), (97, 311), (518, 518), (600, 519), (480, 640)], seed=15)
    processor = TimmImageProcessor.from_pretrained_cfg(pretrained_cfg)
    reference = timm_reference(pretrained_cfg, images)
    np.testing.assert_array_equal(processor(images, data_format="channels_first").pixel_values, reference)


@pytest.mark.parametrize("crop_mode", ["squash", "border"])
def test_timm_dinov2_crop_modes_match_exactly(crop_mode):
    pretrained_cfg = {**timm.models.get_pretrained_cfg("vit_small_patch14_dinov2.lvd142m").to_dict(),
                      "crop_mode": crop_mode}
    images = random_images([(5, 7), (300, 200), (97, 311), (600, 519)], seed=16)
    processor = TimmImageProcessor.from_pretrained_cfg(pretrained_cfg)
    np.testing.assert_array_equal(processor(images, data_format="channels_first").pixel_values,
                                  timm_reference(pretrained_cfg, images))


def test_timm_defaults_follow_resolve_data_config():
    # Missing or empty values take resolve_data_config's defaults.
    processor = TimmImageProcessor.from_pretrained_cfg({"crop_pct": None, "interpolation": "", "num_classes": 10})
    resolved = resolve_data_config(pretrained_cfg={"crop_pct": None, "interpolation": ""})
    assert processor.input_size == resolved["input_size"]
    assert processor.interpolation == resolved["interpolation"]
    assert processor.crop_pct == resolved["crop_pct"] and processor.crop_mode == resolved["crop_mode"]
    assert processor.mean == resolved["mean"] and processor.std == resolved["std"]
    assert processor.extra_config == {"num_classes": 10}
    assert processor == TimmImageProcessor()


# ---------------------------------------------------------------------------------------------------------------------
# from_pretrained


def write_json(folder, name, content):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(json.dumps(content))
    return folder


def assert_same_as_transformers(folder, expected_class, **overrides):
    ours = AutoImageProcessor.from_pretrained(folder, **overrides)
    theirs = transformers.AutoImageProcessor.from_pretrained(folder, backend="pil", **overrides)
    assert type(ours) is expected_class
    images = random_images([(97, 311), (480, 640)], seed=10)
    assert_matches(ours, images, hf_pixels(theirs, images))
    return ours


def test_from_pretrained_convnext_save_pretrained(tmp_path):
    transformers.ConvNextImageProcessorPil(size={"shortest_edge": 224}, crop_pct=0.95).save_pretrained(tmp_path)
    processor = assert_same_as_transformers(tmp_path, ConvNextImageProcessor)
    assert processor.size == {"shortest_edge": 224} and processor.crop_pct == 0.95
    assert processor.extra_config == {"image_processor_type": "ConvNextImageProcessor"}
    # Overrides replace the file's values.
    assert_same_as_transformers(tmp_path, ConvNextImageProcessor, crop_pct=1.0, resample=2)


def test_from_pretrained_vit_save_pretrained(tmp_path):
    transformers.ViTImageProcessorPil(size={"height": 192, "width": 256}, resample=3).save_pretrained(tmp_path)
    processor = assert_same_as_transformers(tmp_path, ViTImageProcessor)
    assert processor.size == {"height": 192, "width": 256} and processor.resample == Image.Resampling.BICUBIC


# The preprocessor_config.json of microsoft/resnet-50 and microsoft/swin-tiny-patch4-window7-224, which predate
# image processors, plus a key no processor knows.
LEGACY_CONVNEXT = {
    "crop_pct": 0.875, "do_normalize": True, "do_resize": True, "feature_extractor_type": "ConvNextFeatureExtractor",
    "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225], "resample": 3, "size": 224,
    "some_future_option": {"kept": True},
}
LEGACY_VIT = {
    "do_normalize": True, "do_resize": True, "feature_extractor_type": "ViTFeatureExtractor",
    "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225], "resample": 3, "size": 224,
}


def test_from_pretrained_legacy_feature_extractor(tmp_path):
    folder = write_json(tmp_path / "resnet", "preprocessor_config.json", LEGACY_CONVNEXT)
    processor = assert_same_as_transformers(folder, ConvNextImageProcessor)
    assert processor.size == {"shortest_edge": 224}
    assert processor.extra_config == {
        "feature_extractor_type": "ConvNextFeatureExtractor", "some_future_option": {"kept": True}
    }
    folder = write_json(tmp_path / "swin", "preprocessor_config.json", LEGACY_VIT)
    assert assert_same_as_transformers(folder, ViTImageProcessor).size == {"height": 224, "width": 224}


def test_from_pretrained_dinov2_and_dinov3_repos(tmp_path):
    write_json(tmp_path / "dinov2", "preprocessor_config.json", DINOV2_PREPROCESSOR)
    write_json(tmp_path / "dinov2", "config.json", {"model_type": "dinov2"})
    write_to_hub_cache(tmp_path / "dinov2", "test-org/dinov2-base")
    processor = AutoImageProcessor.from_pretrained("test-org/dinov2-base")
    theirs = transformers.AutoImageProcessor.from_pretrained("test-org/dinov2-base", backend="pil")
    assert type(processor) is BitImageProcessor and type(theirs).__name__ == "BitImageProcessorPil"
    assert processor.size == {"shortest_edge": 256} and processor.crop_size == {"height": 224, "width": 224}
    images = random_images([(97, 311), (480, 640), (5, 7)], seed=17)
    np.testing.assert_array_equal(processor(images, data_format="channels_first").pixel_values,
                                  hf_pixels(theirs, images))

    for repo, model_type in [("test-org/dinov3-vits16", "dinov3_vit"), ("test-org/dinov3-convnext-tiny",
                                                                         "dinov3_convnext")]:
        folder = write_json(tmp_path / model_type, "preprocessor_config.json", DINOV3_PREPROCESSOR)
        write_json(folder, "config.json", {"model_type": model_type})
        write_to_hub_cache(folder, repo)
        processor = AutoImageProcessor.from_pretrained(repo)
        theirs = transformers.AutoImageProcessor.from_pretrained(repo)
        assert type(processor) is DINOv3ViTImageProcessor and type(theirs).__name__ == "DINOv3ViTImageProcessor"
        assert processor.size == {"height": 224, "width": 224} and not processor.do_center_crop
        assert processor.extra_config["image_processor_type"] == "DINOv3ViTImageProcessorFast"
        reference = np.concatenate([hf_pixels(theirs, image) for image in images])
        np.testing.assert_allclose(processor(images, data_format="channels_first").pixel_values, reference,
                                   rtol=0, atol=DINOV3_TOLERANCE)


def test_from_pretrained_timm_dinov2_repo(tmp_path):
    pretrained_cfg = timm.models.get_pretrained_cfg("vit_small_patch14_dinov2.lvd142m").to_dict()
    folder = write_json(tmp_path, "config.json", {"architecture": "vit_small_patch14_dinov2", "num_classes": 0,
                                                  "pretrained_cfg": pretrained_cfg})
    write_to_hub_cache(folder, "timm/vit_small_patch14_dinov2.lvd142m")
    processor = AutoImageProcessor.from_pretrained("timm/vit_small_patch14_dinov2.lvd142m")
    assert type(processor) is TimmImageProcessor and processor.input_size == (3, 518, 518)
    images = random_images([(97, 311), (600, 519)], seed=18)
    np.testing.assert_array_equal(processor(images, data_format="channels_first").pixel_values,
                                  timm_reference(pretrained_cfg, images))
# The preprocessor_config.json forms of the ConvNeXt repos: facebook/convnext-* (a feature extractor; size 224, or 384 for
# the -384 repos, which are resized without a crop) and facebook/convnextv2-* (an image processor, size as a dict).
CONVNEXT_REPOS = {
    "convnext-224": LEGACY_CONVNEXT,
    "convnext-384": {**LEGACY_CONVNEXT, "size": 384},
    "convnextv2-224": {
        "crop_pct": 0.875, "do_normalize": True, "do_rescale": True, "do_resize": True,
        "image_mean": [0.485, 0.456, 0.406], "image_processor_type": "ConvNextImageProcessor",
        "image_std": [0.229, 0.224, 0.225], "resample": 3, "rescale_factor": 1 / 255, "size": {"shortest_edge": 224},
    },
}
CONVNEXT_REPOS["convnextv2-384"] = {**CONVNEXT_REPOS["convnextv2-224"], "size": {"shortest_edge": 384}}


@pytest.mark.parametrize("repo", sorted(CONVNEXT_REPOS))
def test_from_pretrained_convnext_repos(tmp_path, repo):
    folder = write_json(tmp_path / repo, "preprocessor_config.json", CONVNEXT_REPOS[repo])
    processor = assert_same_as_transformers(folder, ConvNextImageProcessor)
    assert processor.size == {"shortest_edge": int(repo[-3:])}


@pytest.mark.parametrize(
    "type_key, type_name, expected_class",
    [
        ("image_processor_type", "BitImageProcessor", BitImageProcessor),
        ("image_processor_type", "BitImageProcessorPil", BitImageProcessor),
        ("image_processor_type", "BitImageProcessorFast", BitImageProcessor),
        ("image_processor_type", "DINOv3ViTImageProcessor", DINOv3ViTImageProcessor),
        ("image_processor_type", "DINOv3ViTImageProcessorFast", DINOv3ViTImageProcessor),
        ("image_processor_type", "ConvNextImageProcessorPil", ConvNextImageProcessor),
        ("image_processor_type", "ConvNextImageProcessorFast", ConvNextImageProcessor),
        ("image_processor_type", "ViTImageProcessorPil", ViTImageProcessor),
        ("image_processor_type", "ViTImageProcessorFast", ViTImageProcessor),
        ("feature_extractor_type", "ViTFeatureExtractor", ViTImageProcessor),
    ],
)
def test_from_pretrained_type_names(tmp_path, type_key, type_name, expected_class):
    folder = write_json(tmp_path, "preprocessor_config.json", {type_key: type_name, "size": 64, "crop_pct": None})
    assert type(AutoImageProcessor.from_pretrained(folder)) is expected_class


@pytest.mark.parametrize("model_name", TIMM_MODELS)
def test_from_pretrained_timm_folder(tmp_path, model_name):
    model = timm.create_model(model_name, pretrained=False)
    save_config_for_hf(model, tmp_path / "config.json")  # what timm's save_for_hf and push_to_hf_hub write
    assert not (tmp_path / "preprocessor_config.json").exists()
    processor = AutoImageProcessor.from_pretrained(tmp_path)
    assert type(processor) is TimmImageProcessor
    assert "num_classes" in processor.extra_config
    images = random_images([(97, 311), (480, 640), (5, 7)], seed=11)
    transform = create_transform(**resolve_data_config({}, model=model))
    reference = np.stack([transform(image).numpy() for image in images])
    assert_matches(processor, images, reference)
    assert AutoImageProcessor.from_pretrained(tmp_path, crop_pct=1.0).crop_pct == 1.0


def test_from_pretrained_legacy_timm_folder(tmp_path):
    # Older timm exports: config.json is the pretrained_cfg itself.
    folder = write_json(tmp_path, "config.json", {"architecture": "resnet50", "num_classes": 1000,
                                                  "input_size": [3, 160, 160], "crop_pct": 0.95})
    processor = AutoImageProcessor.from_pretrained(folder)
    assert processor.input_size == (3, 160, 160) and processor.crop_pct == 0.95


# ---------------------------------------------------------------------------------------------------------------------
# Output


def test_output_is_batch_feature():
    images = random_images([(20, 30), (30, 20)], seed=12)
    out = ViTImageProcessor(size=(8, 12))(images)
    assert isinstance(out, BatchFeature) and isinstance(out, dict)
    assert out.pixel_values is out["pixel_values"] and list(out) == ["pixel_values"]
    assert isinstance(out.pixel_values, np.ndarray) and out.pixel_values.shape == (2, 8, 12, 3)
    first = ViTImageProcessor(size=(8, 12))(images, data_format="channels_first").pixel_values
    assert first.shape == (2, 3, 8, 12) and first.flags.c_contiguous
    with pytest.raises(AttributeError, match="labels"):
        _ = out.labels


@pytest.mark.parametrize("processor", [ViTImageProcessor(size=8), ConvNextImageProcessor(size=8), TimmImageProcessor(),
                                       BitImageProcessor(size=8, crop_size=8), DINOv3ViTImageProcessor(size=8)],
                         ids=lambda p: type(p).__name__)
def test_return_tensors_jax(processor):
    image = random_images([(20, 30)], seed=13)[0]
    out = processor(image, return_tensors="jax", data_format="channels_first")
    assert isinstance(out.pixel_values, jax.Array) and out.pixel_values.dtype == np.float32
    expected = processor(image, data_format="channels_first").pixel_values
    np.testing.assert_array_equal(np.asarray(out.pixel_values), expected)


@pytest.mark.parametrize("module", sorted(p.name for p in Path(image_processing.__file__).parent.glob("*.py")))
def test_module_does_not_import_torch(module):
    tree = ast.parse((Path(image_processing.__file__).parent / module).read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    heavy = {name for name in imported if name.split(".")[0] in ("torch", "torchvision", "transformers", "timm")}
    assert not heavy


# ---------------------------------------------------------------------------------------------------------------------
# Errors


@pytest.mark.parametrize(
    "images, message",
    [
        ([], "got no images"),
        ((), "got no images"),
        (np.zeros((0, 8, 8, 3), np.uint8), "got no images"),
        (np.zeros((1, 2, 8, 8, 3), np.uint8), "5-D array of shape"),
        (np.zeros((8,), np.uint8), "1-D array"),
        (np.zeros((8, 9, 2), np.uint8), r"shape \(8, 9, 2\).*1 \(grayscale\), 3 \(RGB\) or 4 \(RGBA\)"),
        (np.zeros((8, 9, 3), np.int32), "dtype int32: expected uint8"),
        (np.zeros((8, 9, 3), bool), "dtype bool"),
        (np.full((8, 9, 3), 1.5, np.float32), r"values in \[1.5, 1.5\]: expected \[0, 1\]"),
        (np.full((8, 9, 3), 300.0, np.float32), r"whole numbers in \[300.0, 300.0\]: expected \[0, 255\]"),
        (np.full((8, 9, 3), np.nan, np.float32), "non-finite"),
        (np.zeros((0, 9, 3), np.uint8), "empty image"),
        ("cat.jpg", "type builtins.str: expected a PIL image or a numpy array"),
        ([np.zeros((8, 9, 3), np.uint8), [np.zeros((8, 9, 3), np.uint8)]], "type builtins.list"),
        (Image.new("I;16", (8, 9)), "PIL mode 'I;16'"),
    ],
    ids=lambda value: str(getattr(value, "shape", value))[:30],
)
def test_bad_images(images, message):
    processor = ViTImageProcessor(size=4, do_convert_rgb=isinstance(images, np.ndarray))
    with pytest.raises(ValueError, match=message):
        processor(images)


def test_different_output_sizes_cannot_batch():
    images = random_images([(8, 9), (9, 8)], seed=14)
    with pytest.raises(ValueError, match=r"different shapes \[\(8, 9, 3\), \(9, 8, 3\)\]"):
        ViTImageProcessor(do_resize=False)(images)
    with pytest.raises(ValueError, match="smaller than an image"):
        ViTImageProcessor(size=16, do_pad=True, pad_size=8)(images)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: ConvNextImageProcessor(size={"height": 224, "width": 224}), r"expected .*\['shortest_edge'\]"),
        (lambda: ViTImageProcessor(size={"longest_edge": 224}), "longest_edge"),
        (lambda: ViTImageProcessor(size=(224, 0)), "positive int"),
        (lambda: ViTImageProcessor(resample=42), r"resample=42: expected a PIL resampling filter, .*3 \(BICUBIC\)"),
        (lambda: ViTImageProcessor(do_center_crop=True), "do_center_crop=True needs a crop_size"),
        (lambda: ViTImageProcessor(do_pad=True), "do_pad=True needs a pad_size"),
        (lambda: ViTImageProcessor(image_mean="red"), "image_mean='red'"),
        (lambda: ConvNextImageProcessor(crop_pct=0), "crop_pct=0: expected a positive number"),
        (lambda: TimmImageProcessor(crop_mode="random"), r"crop_mode='random': expected one of \('center'"),
        (lambda: TimmImageProcessor(interpolation="random"), "interpolation='random'"),
        (lambda: TimmImageProcessor(input_size=(1, 224, 224)), r"input_size=\(1, 224, 224\)"),
        (lambda: TimmImageProcessor(mean=(0.5, 0.5)), r"mean=\(0.5, 0.5\): expected 3 numbers"),
        (lambda: TimmImageProcessor.from_pretrained_cfg({}, crop_size=3), r"unknown option\(s\) \['crop_size'\]"),
        (lambda: ViTImageProcessor.from_dict({}, crop_pct=0.9), r"unknown option\(s\) \['crop_pct'\] for ViT"),
        (lambda: DINOv3ViTImageProcessor(resample=0), r"resample=<Resampling.NEAREST: 0>: expected 2 \(BILINEAR\)"),
        (lambda: BitImageProcessor(size={"longest_edge": 9}), "longest_edge"),
    ],
)
def test_bad_options(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"data_format": "NHWC"}, "data_format='NHWC': expected one of"),
        ({"return_tensors": "pt"}, "return_tensors='pt': expected one of"),
        ({"input_data_format": "first"}, "input_data_format='first'"),
        ({"do_resizee": False}, r"unknown option\(s\) \['do_resizee'\] for ConvNextImageProcessor: expected some of"),
        ({"image_mean": (0.5, 0.5)}, r"image_mean=\(0.5, 0.5\) has 2 values but the images have 3 channels"),
        ({"size": {"height": 8, "width": 8}}, "shortest_edge"),
        # transformers' ConvNext pipeline ignores do_pad; we refuse it rather than ignore it.
        ({"do_pad": True}, r"unknown option\(s\) \['do_pad'\]"),
    ],
)
def test_bad_call_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ConvNextImageProcessor(size=8)(random_pixels(9, 10), **kwargs)


def test_unknown_processor_type(tmp_path):
    write_json(tmp_path, "preprocessor_config.json", {"image_processor_type": "CLIPImageProcessor"})
    supported = "'CLIPImageProcessor': supported are ConvNextImageProcessor, ViTImageProcessor"
    with pytest.raises(ValueError, match=supported):
        AutoImageProcessor.from_pretrained(tmp_path)
    write_json(tmp_path, "preprocessor_config.json", {"size": 224})
    with pytest.raises(ValueError, match="None: supported are"):
        AutoImageProcessor.from_pretrained(tmp_path)


def test_folder_without_processor_config(tmp_path):
    with pytest.raises(OSError, match=r"no file named config\.json"):
        AutoImageProcessor.from_pretrained(tmp_path)
    write_json(tmp_path, "config.json", {"model_type": "resnet"})
    with pytest.raises(OSError, match=r"has no preprocessor_config\.json, and its config\.json is not a timm config"):
        AutoImageProcessor.from_pretrained(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="must hold a JSON object"):
        AutoImageProcessor.from_pretrained(tmp_path)
