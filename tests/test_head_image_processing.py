"""The processors of the head checkpoints whose backbones we load (DPT, Depth Anything; MaskFormer, Mask2Former,
OneFormer) against transformers' PIL backend, bit for bit: pixel values and pixel masks, padded batches of different
sizes, and the preprocessor_config.json the hub checkpoints carry, read through AutoImageProcessor.

The hub configs below are what transformers' conversion scripts save (convert_depth_anything_to_hf.py,
convert_dinov2_depth_to_hf.py, convert_mask2former_original_pytorch_checkpoint_to_pytorch.py,
convert_maskformer_original_pytorch_checkpoint_to_pytorch.py, convert_to_hf_oneformer.py), written out as the
processors of their time serialised them: mean and std divided by 255 in float32, old key names (`max_size`,
`size_divisibility`, `reduce_labels`, `_max_size`, "MaskFormerFeatureExtractor").
"""

import json

import numpy as np
import pytest
import transformers
from PIL import Image
from transformers.image_utils import SizeDict
from helpers import assert_same_pixels
from test_image_processing import random_images

from jaxbackbones import image_processing
from jaxbackbones.image_processing import AutoImageProcessor

# Portrait, landscape, tiny, square, a panorama (its long side hits longest_edge first), and odd sizes whose
# DPT sizes round to a multiple of 14 both ways.
SIZES = [(97, 311), (480, 640), (5, 7), (512, 512), (120, 900), (333, 211)]
MASK_NAMES = ["MaskFormer", "Mask2Former", "OneFormer"]
# (123.675, 116.28, 103.53) / 255 and (58.395, 57.12, 57.375) / 255 in float32, as the conversion scripts save them.
FLOAT32_IMAGENET_MEAN = [0.48500001430511475, 0.4560000002384186, 0.4059999883174896]
FLOAT32_IMAGENET_STD = [0.2290000021457672, 0.2239999920129776, 0.22499999403953552]


def assert_same_one_by_one(ours, theirs, images):
    """Sizes that depend on the aspect ratio give one shape per image: compare them one at a time."""
    for image in images:
        assert_same_pixels(ours, theirs, [image])


def from_hub_config(tmp_path, config, theirs_config=None):
    """Ours and transformers' processors from a preprocessor_config.json (transformers' may need another one)."""
    ours_dir, theirs_dir = tmp_path / "ours", tmp_path / "theirs"
    for folder, contents in ((ours_dir, config), (theirs_dir, theirs_config or config)):
        folder.mkdir()
        (folder / "preprocessor_config.json").write_text(json.dumps(contents))
    return (AutoImageProcessor.from_pretrained(ours_dir),
            transformers.AutoImageProcessor.from_pretrained(theirs_dir, backend="pil"))


# ---------------------------------------------------------------------------------------------------------------------
# DPT


@pytest.mark.parametrize("options", [
    {},
    {"size": 518, "keep_aspect_ratio": True, "ensure_multiple_of": 14},
    {"size": {"height": 384, "width": 512}, "keep_aspect_ratio": True, "ensure_multiple_of": 32, "resample": 2},
    {"size": {"height": 100, "width": 70}, "ensure_multiple_of": 14},
    {"size": 64, "do_pad": True, "size_divisor": 24, "do_normalize": False},
    {"do_resize": False, "do_pad": True, "size_divisor": 14},
    {"size": 64, "do_pad": True},  # no size_divisor: no padding
], ids=["defaults", "depth_anything", "aspect_32", "multiple_14", "pad_after_resize", "pad_only", "pad_no_divisor"])
def test_dpt_matches_transformers(options):
    theirs = transformers.DPTImageProcessorPil(**options)
    ours = image_processing.DPTImageProcessor(**options)
    images = random_images(SIZES, seed=31)
    if options.get("keep_aspect_ratio") or not options.get("do_resize", True) or options.get("size_divisor"):
        assert_same_one_by_one(ours, theirs, images)
    else:
        assert_same_pixels(ours, theirs, images)  # one size: one batch


def test_dpt_rounds_half_to_even_as_python_does():
    # The resized sides are exactly 35 and 21 for both images: 35 / 14 = 2.5 rounds to 2 (half to even; half up
    # would give 42) and 21 / 14 = 1.5 to 2, so 28 x 28.
    options = {"size": {"height": 35, "width": 21}, "ensure_multiple_of": 14}
    ours, theirs = image_processing.DPTImageProcessor(**options), transformers.DPTImageProcessorPil(**options)
    images = random_images([(35, 21), (70, 42)], seed=32)
    assert ours(images).pixel_values.shape == (2, 28, 28, 3)
    assert_same_pixels(ours, theirs, images)


def test_depth_anything_configs_read_as_transformers_reads_them(tmp_path):
    # LiheYoung/depth-anything-small-hf and depth-anything/Depth-Anything-V2-Small-hf (convert_depth_anything_to_hf.py
    # writes the same processor for V1 and V2).
    ours, theirs = from_hub_config(tmp_path, {
        "do_normalize": True, "do_pad": False, "do_rescale": True, "do_resize": True, "ensure_multiple_of": 14,
        "image_mean": [0.485, 0.456, 0.406], "image_processor_type": "DPTImageProcessor",
        "image_std": [0.229, 0.224, 0.225], "keep_aspect_ratio": True, "resample": 3,
        "rescale_factor": 0.00392156862745098, "size": {"height": 518, "width": 518}, "size_divisor": None})
    assert type(ours).__name__ == "DPTImageProcessor" and type(theirs).__name__ == "DPTImageProcessorPil"
    assert ours(random_images([(480, 640)])).pixel_values.shape == (1, 518, 686, 3)
    assert_same_one_by_one(ours, theirs, random_images(SIZES, seed=33))


@pytest.mark.parametrize("divisor_key", ["size_divisor", "size_divisibility"])
def test_dpt_dinov2_config_reads_as_transformers_reads_it(tmp_path, divisor_key):
    # facebook/dpt-dinov2-small-nyu (convert_dinov2_depth_to_hf.py): no resize, no rescale, normalisation on the
    # 0..255 scale, centre padding to multiples of 14. The script passes `size_divisibility=14`, which transformers
    # 5 keeps as a plain attribute and does not pad with; with `size_divisor` it pads.
    ours, theirs = from_hub_config(tmp_path, {
        "do_normalize": True, "do_pad": True, "do_rescale": False, "do_resize": False, "ensure_multiple_of": 1,
        "image_mean": [123.675, 116.28, 103.53], "image_processor_type": "DPTImageProcessor",
        "image_std": [58.395, 57.12, 57.375], "keep_aspect_ratio": False, "resample": 3,
        "rescale_factor": 0.00392156862745098, "size": {"height": 384, "width": 384}, divisor_key: 14})
    padded = divisor_key == "size_divisor"
    assert ours(random_images([(97, 311)])).pixel_values.shape == ((1, 98, 322, 3) if padded else (1, 97, 311, 3))
    assert_same_one_by_one(ours, theirs, random_images(SIZES, seed=34))


# ---------------------------------------------------------------------------------------------------------------------
# MaskFormer, Mask2Former, OneFormer


@pytest.mark.parametrize("name", MASK_NAMES)
def test_mask_processor_defaults_match_transformers(name):
    theirs = getattr(transformers, f"{name}ImageProcessorPil")()
    ours = getattr(image_processing, f"{name}ImageProcessor")()
    images = random_images(SIZES[:3], seed=41)
    assert_same_one_by_one(ours, theirs, images)  # one image: padded to itself, mask all ones
    assert_same_pixels(ours, theirs, images)  # a padded batch of three sizes


@pytest.mark.parametrize("options", [
    {"size": {"shortest_edge": 64, "longest_edge": 100}},
    {"size": {"shortest_edge": 48, "longest_edge": 96}, "size_divisor": 14, "resample": 3},
    {"size": {"shortest_edge": 48, "longest_edge": 96}, "size_divisor": 0},
    {"size": {"max_height": 80, "max_width": 120}},
    {"size": {"height": 70, "width": 90}, "do_normalize": False},
    {"size": 40, "max_size": 64, "pad_size": {"height": 100, "width": 100}},
    {"max_size": 900},
    {"size": {"shortest_edge": 48, "longest_edge": 64}, "do_rescale": False, "do_normalize": False},
], ids=["edges", "divisor_14", "divisor_0", "max_hw", "fixed", "int_size_pad_size", "max_size_only", "raw"])
@pytest.mark.parametrize("name", ["MaskFormer", "Mask2Former"])
def test_mask_former_options_match_transformers(name, options):
    theirs = getattr(transformers, f"{name}ImageProcessorPil")(**options)
    ours = getattr(image_processing, f"{name}ImageProcessor")(**options)
    assert_same_pixels(ours, theirs, random_images(SIZES, seed=42))


@pytest.mark.parametrize("options", [
    {"size": {"shortest_edge": 64, "longest_edge": 100}, "resample": 3},
    {"size": 64},  # the shorter side at 64, no limit on the longer
    {"size": {"max_height": 80, "max_width": 120}},
    {"size": {"height": 70, "width": 90}, "do_normalize": False},
], ids=["edges", "shortest_edge", "max_hw", "fixed"])
def test_one_former_options_match_transformers(options):
    theirs = transformers.OneFormerImageProcessorPil(**options)
    ours = image_processing.OneFormerImageProcessor(**options)
    assert_same_pixels(ours, theirs, random_images(SIZES, seed=43))


def test_per_call_options_match_transformers():
    theirs, ours = transformers.Mask2FormerImageProcessorPil(), image_processing.Mask2FormerImageProcessor()
    options = {"size": {"shortest_edge": 40, "longest_edge": 80}, "size_divisor": 8}
    # transformers takes a per-call pad_size as a SizeDict only.
    assert_same_pixels(ours, theirs, random_images(SIZES[:3], seed=44), pad_size={"height": 96, "width": 96}, **options,
                theirs_kwargs={**options, "pad_size": SizeDict(height=96, width=96)})


def test_mask2former_config_reads_as_transformers_reads_it(tmp_path):
    # facebook/mask2former-swin-tiny-coco-instance: COCO's MIN_SIZE_TEST 800, MAX_SIZE_TEST 1333, size_divisibility 32.
    ours, theirs = from_hub_config(tmp_path, {
        "do_normalize": True, "do_rescale": True, "do_resize": True, "ignore_index": 255,
        "image_mean": FLOAT32_IMAGENET_MEAN, "image_processor_type": "Mask2FormerImageProcessor",
        "image_std": FLOAT32_IMAGENET_STD, "num_labels": 80, "reduce_labels": False, "resample": 2,
        "rescale_factor": 0.00392156862745098, "size": {"longest_edge": 1333, "shortest_edge": 800},
        "size_divisor": 32})
    assert type(ours).__name__ == "Mask2FormerImageProcessor"
    assert type(theirs).__name__ == "Mask2FormerImageProcessorPil"
    assert ours.ignore_index == 255 and ours.extra_config["reduce_labels"] is False
    assert_same_pixels(ours, theirs, random_images(SIZES[:3], seed=45))


def test_maskformer_feature_extractor_config_reads_as_transformers_reads_it(tmp_path):
    # facebook/maskformer-swin-base-ade: the FeatureExtractor name, an int size with max_size (ADE20k's 512, 2048),
    # and `size_divisibility`, which transformers 5 ignores (its size_divisor stays at 32, the same value).
    ours, theirs = from_hub_config(tmp_path, {
        "do_normalize": True, "do_resize": True, "feature_extractor_type": "MaskFormerFeatureExtractor",
        "ignore_index": 255, "image_mean": FLOAT32_IMAGENET_MEAN, "image_std": FLOAT32_IMAGENET_STD,
        "max_size": 2048, "num_labels": 150, "reduce_labels": False, "size": 512, "size_divisibility": 32})
    assert type(ours).__name__ == "MaskFormerImageProcessor" and type(theirs).__name__ == "MaskFormerImageProcessorPil"
    assert ours.size == {"shortest_edge": 512, "longest_edge": 2048} and ours.size_divisor == 32
    assert_same_pixels(ours, theirs, random_images(SIZES[:3], seed=46))


@pytest.mark.parametrize("legacy_size", [False, True], ids=["size_dict", "int_size_max_size"])
def test_oneformer_config_reads_as_transformers_reads_it(tmp_path, legacy_size):
    # shi-labs/oneformer_ade20k_swin_tiny (convert_to_hf_oneformer.py): ADE20k's 512 / 2048, the class metadata
    # (trimmed here to two classes). transformers reads class_info_file from repo_path when it constructs the
    # processor; its copy points at a local file so that the test needs no network. Ours does not read it.
    class_info = {"0": {"isthing": 0, "name": "wall"}, "1": {"isthing": 1, "name": "person"}}
    (tmp_path / "ade20k_panoptic.json").write_text(json.dumps(class_info))
    config = {
        "_max_size": 2048, "class_info_file": "ade20k_panoptic.json", "do_normalize": True,
        "do_reduce_labels": False, "do_rescale": True, "do_resize": True, "ignore_index": 255,
        "image_mean": FLOAT32_IMAGENET_MEAN, "image_processor_type": "OneFormerImageProcessor",
        "image_std": FLOAT32_IMAGENET_STD,
        "metadata": {"0": "wall", "1": "person", "class_names": ["wall", "person"], "thing_ids": [1]},
        "num_labels": 150, "num_text": 134, "processor_class": "OneFormerProcessor",
        "repo_path": "shi-labs/oneformer_demo",
        "resample": 2, "rescale_factor": 0.00392156862745098, "size": {"longest_edge": 2048, "shortest_edge": 512}}
    if legacy_size:  # as the processor of its time took it: read by transformers 5 as the shortest edge alone
        config.update(size=512, max_size=2048)
    ours, theirs = from_hub_config(tmp_path, config, {**config, "repo_path": str(tmp_path)})
    assert type(ours).__name__ == "OneFormerImageProcessor" and type(theirs).__name__ == "OneFormerImageProcessorPil"
    assert ours.size == ({"shortest_edge": 512} if legacy_size else {"shortest_edge": 512, "longest_edge": 2048})
    # The panorama's long side passes 2048 only without the longest edge.
    panorama = random_images([(120, 900)], seed=47)
    assert ours(panorama).pixel_values.shape == ((1, 512, 3840, 3) if legacy_size else (1, 273, 2048, 3))
    assert_same_pixels(ours, theirs, random_images(SIZES[:3], seed=48) + panorama)


@pytest.mark.parametrize("name", ["DPT", "Mask2Former", "OneFormer"])
def test_gray_and_transparent_images_match_transformers(name):
    # transformers converts them only when asked (do_convert_rgb=True); ours always does, by default.
    theirs = getattr(transformers, f"{name}ImageProcessorPil")(do_convert_rgb=True)
    ours = getattr(image_processing, f"{name}ImageProcessor")()
    rgba, gray = random_images([(61, 83), (61, 83)], seed=49)
    rgba.putalpha(Image.fromarray(np.tile(np.arange(83, dtype=np.uint8) * 3, (61, 1))))
    assert_same_pixels(ours, theirs, [rgba, gray.convert("L"), gray.convert("P")])


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="size=512 needs max_size"):
        image_processing.MaskFormerImageProcessor(size=512)
    with pytest.raises(ValueError, match="pad_size=.* is smaller than an image of size"):
        processor = image_processing.Mask2FormerImageProcessor(size={"height": 64, "width": 64}, pad_size=32)
        processor(random_images([(9, 9)]))
    with pytest.raises(ValueError, match="size_divisor=-1"):
        image_processing.Mask2FormerImageProcessor(size_divisor=-1)
    with pytest.raises(ValueError, match="ensure_multiple_of=0"):
        image_processing.DPTImageProcessor(ensure_multiple_of=0)
    with pytest.raises(ValueError, match="size=.*expected .*height"):
        image_processing.DPTImageProcessor(size={"shortest_edge": 384})
    with pytest.raises(ValueError, match=r"resizes to \(0, 14\)"):
        processor = image_processing.DPTImageProcessor(size={"height": 5, "width": 14}, ensure_multiple_of=14)
        processor(random_images([(9, 9)]))
    with pytest.raises(ValueError, match="different shapes"):  # keep_aspect_ratio: one size per aspect ratio
        image_processing.DPTImageProcessor(keep_aspect_ratio=True, ensure_multiple_of=14)(random_images(SIZES[:2]))
