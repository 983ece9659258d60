"""The DETR family's processors (DETR, Conditional / Deformable DETR, Grounding DINO, RT-DETR) against transformers'
PIL backend, bit for bit: pixel values and pixel masks, padded batches of different sizes, old-style configs."""

import json

import numpy as np
import pytest
import transformers
from helpers import assert_same_pixels
from test_image_processing import random_images

from jaxbackbones import image_processing
from jaxbackbones.image_processing import AutoImageProcessor

# Portrait, landscape, tiny, square, and a panorama whose long side hits longest_edge before the short side reaches
# shortest_edge (the rounded-size branch).
SIZES = [(97, 311), (480, 640), (5, 7), (512, 512), (120, 900)]
NAMES = ["Detr", "ConditionalDetr", "DeformableDetr", "GroundingDino", "RTDetr"]


@pytest.mark.parametrize("name", NAMES)
def test_defaults_match_transformers(name):
    theirs = getattr(transformers, f"{name}ImageProcessorPil")()
    ours = getattr(image_processing, f"{name}ImageProcessor")()
    images = random_images(SIZES[:3], seed=21)
    if name == "RTDetr":
        assert_same_pixels(ours, theirs, images)  # one size, no padding
    else:
        for image in images:  # one image: padded to itself, mask all ones
            assert_same_pixels(ours, theirs, [image])
        assert_same_pixels(ours, theirs, images)  # a padded batch of three sizes


@pytest.mark.parametrize("options", [
    {"size": {"shortest_edge": 64, "longest_edge": 100}},
    {"size": {"max_height": 80, "max_width": 120}, "resample": 3},
    {"size": {"height": 70, "width": 90}, "do_normalize": False},
    {"size": {"shortest_edge": 48, "longest_edge": 96}, "do_pad": True, "pad_size": {"height": 100, "width": 100}},
    {"size": {"shortest_edge": 48, "longest_edge": 64}, "do_pad": False, "do_rescale": False},
], ids=["edges", "max_hw", "fixed", "pad_size", "no_pad"])
@pytest.mark.parametrize("name", ["Detr", "RTDetr"])
def test_options_match_transformers(name, options):
    theirs = getattr(transformers, f"{name}ImageProcessorPil")(**options)
    ours = getattr(image_processing, f"{name}ImageProcessor")(**options)
    sizes = SIZES if options.get("do_pad", name != "RTDetr") else [(97, 311)]  # unpadded: one shape per batch
    assert_same_pixels(ours, theirs, random_images(sizes, seed=22))


def test_old_detr_configs_read_as_transformers_reads_them(tmp_path):
    # facebook/detr-resnet-50's preprocessor_config.json: an int size with max_size, the FeatureExtractor name.
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({
        "do_normalize": True, "do_resize": True, "feature_extractor_type": "DetrFeatureExtractor",
        "format": "coco_detection", "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225],
        "max_size": 200, "size": 96, "pad_and_return_pixel_mask": True}))
    ours = AutoImageProcessor.from_pretrained(tmp_path)
    theirs = transformers.AutoImageProcessor.from_pretrained(tmp_path, backend="pil")
    assert type(ours).__name__ == "DetrImageProcessor" and type(theirs).__name__ == "DetrImageProcessorPil"
    assert ours.size == {"shortest_edge": 96, "longest_edge": 200} and ours.do_pad
    assert_same_pixels(ours, theirs, random_images(SIZES, seed=23))


def test_rt_detr_config_reads_as_transformers_reads_it(tmp_path):
    # PekingU/rtdetr_r50vd's and ustc-community/dfine-*'s preprocessor_config.json.
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({
        "do_normalize": False, "do_pad": False, "do_rescale": True, "do_resize": True, "format": "coco_detection",
        "image_mean": [0.485, 0.456, 0.406], "image_processor_type": "RTDetrImageProcessor",
        "image_std": [0.229, 0.224, 0.225], "resample": 2, "rescale_factor": 0.00392156862745098,
        "size": {"height": 640, "width": 640}}))
    ours = AutoImageProcessor.from_pretrained(tmp_path)
    theirs = transformers.AutoImageProcessor.from_pretrained(tmp_path, backend="pil")
    assert type(ours).__name__ == "RTDetrImageProcessor"
    assert_same_pixels(ours, theirs, random_images([(480, 640), (333, 211)], seed=24))


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="pad_size=.* is smaller than an image of size"):
        image_processing.DetrImageProcessor(size={"height": 64, "width": 64}, pad_size=32)(random_images([(9, 9)]))
    with pytest.raises(ValueError, match="size=.*expected .*shortest_edge"):
        image_processing.DetrImageProcessor(size={"shortest_edge": 64})
