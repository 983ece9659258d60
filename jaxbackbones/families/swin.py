"""Swin: transformers' Swin (microsoft/swin-*) and timm's Swins (`models/swin.py`, `models/timm/swin.py`,
`convert/hf_swin.py`, `convert/timm_swin.py`, tests/test_swin.py, test_timm.py).

The head rows (Mask2Former, MaskFormer, OneFormer, UperNet, Grounding DINO) are the Swin each head's `config.json`
holds as `backbone_config`, as loading the head gives it (`heads.py`): the head's stages (1-4; Grounding DINO's 2-4)
and its training options (drop path), with the head's own processor.
"""

from ..registry import Family, KnownCheckpoint, ModelType, TimmLayout
from .preprocessing import IMAGENET, SEGFORMER_DEFAULTS

# The preprocessor_config.json of microsoft/swin-* (size 384 for the window12-384 ones).
SWIN_PREPROCESSING = {"feature_extractor_type": "ViTFeatureExtractor", "do_normalize": True, "do_resize": True,
                      "resample": 3, "size": 224, **IMAGENET}
_SWIN_BASE = dict(embed_dim=128, depths=[2, 2, 18, 2], num_heads=[4, 8, 16, 32])
_SWIN_LARGE = dict(embed_dim=192, depths=[2, 2, 18, 2], num_heads=[6, 12, 24, 48])
_AT_384 = dict(window_size=12, image_size=384)
_SWIN_PREPROCESSING_384 = {**SWIN_PREPROCESSING, "size": 384}
_STAGES_1_4 = dict(out_features=["stage1", "stage2", "stage3", "stage4"])
# The Swin configs the head conversion scripts start from: microsoft/swin-tiny-patch4-window7-224's (the defaults),
# microsoft/swin-large-patch4-window12-384's, or SwinConfig(embed_dim=128, window_size=12, ...) at the default
# image_size of 224 (Mask2Former's base, as its script builds it).
_TINY, _SMALL = {}, dict(depths=[2, 2, 18, 2])
_BASE_224 = dict(_SWIN_BASE, window_size=12)
_LARGE_384 = dict(_SWIN_LARGE, **_AT_384)

# Mask2Former (convert_mask2former_original_pytorch_checkpoint_to_pytorch.py): the Swin config by embed dim (96 ->
# swin-tiny's, 128 -> base at 224 with window 12, 192 -> swin-large-384's), the original config's depths and
# DROP_PATH_RATE (0.3 in every Swin config of Mask2Former's); its repos mask2former-swin-{size}-{dataset}-{task}.
_MASK2FORMER_SIZES = {"tiny": _TINY, "small": _SMALL, "base": _BASE_224, "base-IN21k": _BASE_224,
                      "large": _LARGE_384}
# Mask2FormerImageProcessor as the script builds it: detectron2's PIXEL_MEAN / PIXEL_STD over 255 in float32,
# size 384 x 384, size divisibility 32, the dataset's number of labels and ignore value (255).
_DETECTRON2_MEAN = [0.48500001430511475, 0.4560000002384186, 0.4059999883174896]
_DETECTRON2_STD = [0.2290000021457672, 0.2239999920129776, 0.22499999403953552]
_MASK2FORMER_LABELS = {"coco-instance": 80, "coco-panoptic": 133, "ade-semantic": 150, "cityscapes-semantic": 19,
                       "cityscapes-instance": 8, "cityscapes-panoptic": 19}
_MASK2FORMER_REPOS = [f"{size}-{task}" for task in ("coco-instance", "coco-panoptic", "ade-semantic")
                      for size in _MASK2FORMER_SIZES] + [
    "tiny-cityscapes-semantic", "small-cityscapes-semantic", "base-IN21k-cityscapes-semantic",
    "large-cityscapes-semantic", "tiny-cityscapes-instance", "small-cityscapes-instance",
    "large-cityscapes-instance", "large-cityscapes-panoptic"]


def _mask2former_preprocessing(num_labels: int) -> dict:
    return {"image_processor_type": "Mask2FormerImageProcessor", "do_normalize": True, "do_reduce_labels": False,
            "do_rescale": True, "do_resize": True, "ignore_index": 255, "image_mean": _DETECTRON2_MEAN,
            "image_std": _DETECTRON2_STD, "num_labels": num_labels, "resample": 2, "rescale_factor": 1 / 255,
            "size": {"height": 384, "width": 384}, "size_divisor": 32}


def _mask2former(repo: str) -> KnownCheckpoint:
    size = next(size for size in sorted(_MASK2FORMER_SIZES, key=len, reverse=True) if repo.startswith(size + "-"))
    config = {**_MASK2FORMER_SIZES[size], "drop_path_rate": 0.3, **_STAGES_1_4}
    return KnownCheckpoint("swin", config, _mask2former_preprocessing(_MASK2FORMER_LABELS[repo[len(size) + 1:]]))


# MaskFormer: convert_maskformer_swin_to_pytorch.py builds swin-tiny's config for maskformer-swin-tiny-ade (its only
# model); the other sizes are MaskFormer's Swin-S/B/L (its paper's, as Mask2Former's rows: window 12 at 384 for B and
# L). MaskFormer selects stages 1-4 itself (`heads._maskformer_swin`). Its processor: MaskFormerImageProcessor's
# defaults (shortest edge 800, longest 1333, divisor 32) with ADE's reduced labels, as the script builds it.
_MASKFORMER_SIZES = {"tiny": _TINY, "small": _SMALL, "base": dict(_SWIN_BASE, **_AT_384),
                     "large": _LARGE_384}


def _maskformer_preprocessing(dataset: str) -> dict:
    return {"image_processor_type": "MaskFormerImageProcessor", "do_normalize": True,
            "do_reduce_labels": dataset == "ade", "do_rescale": True, "do_resize": True, "ignore_index": 255,
            "resample": 2, "rescale_factor": 1 / 255, "size": {"shortest_edge": 800, "longest_edge": 1333},
            "size_divisor": 32, **IMAGENET}


# OneFormer (convert_to_hf_oneformer.py): swin-tiny's or swin-large-384's config with the original DROP_PATH_RATE
# (0.3), stages 1-4. OneFormerImageProcessor as the script builds it: detectron2's mean and std, the test sizes of
# OneFormer's configs (MIN_SIZE_TEST / MAX_SIZE_TEST: ADE20K 512 / 2048, 640 / 2560 for Swin-L; COCO 800 / 1333;
# Cityscapes 1024 / 2048), the dataset's labels; without `class_info_file` (label names for post-processing, which
# transformers downloads from the hub when it is set; the pixels do not depend on it).
_ONEFORMER_DATASETS = {"ade20k": (150, (512, 2048)), "coco": (133, (800, 1333)), "cityscapes": (19, (1024, 2048))}


def _oneformer(dataset: str, size: str) -> KnownCheckpoint:
    num_labels, (shortest, longest) = _ONEFORMER_DATASETS[dataset]
    if (dataset, size) == ("ade20k", "large"):
        shortest, longest = 640, 2560
    preprocessing = {"image_processor_type": "OneFormerImageProcessor", "do_convert_rgb": True, "do_normalize": True,
                     "do_reduce_labels": False, "do_rescale": True, "do_resize": True, "ignore_index": 255,
                     "image_mean": _DETECTRON2_MEAN, "image_std": _DETECTRON2_STD, "num_labels": num_labels,
                     "repo_path": "shi-labs/oneformer_demo", "resample": 2, "rescale_factor": 1 / 255,
                     "size": {"shortest_edge": shortest, "longest_edge": longest}}
    config = {**(_TINY if size == "tiny" else _LARGE_384), "drop_path_rate": 0.3, **_STAGES_1_4}
    return KnownCheckpoint("swin", config, preprocessing)


# UperNet (convert_swin_upernet_to_pytorch.py): SwinConfig(embed_dim, depths, num_heads, window_size) at the default
# image_size, stages 1-4; SegformerImageProcessor() (512 x 512).
_UPERNET_SIZES = {"tiny": _TINY, "small": _SMALL, "base": _BASE_224, "large": dict(_SWIN_LARGE, window_size=12)}
# Grounding DINO (convert_grounding_dino_to_hf.py): SwinConfig(window_size, image_size, embed_dim, depths, num_heads,
# out_indices=[2, 3, 4]); GroundingDinoImageProcessor() (shortest edge 800, longest 1333, padding).
_GROUNDING_DINO_SIZES = {"tiny": _TINY, "base": dict(_SWIN_BASE, **_AT_384)}
GROUNDING_DINO_PREPROCESSING = {"image_processor_type": "GroundingDinoImageProcessor", "do_convert_annotations": True,
                                "do_normalize": True, "do_pad": True, "do_rescale": True, "do_resize": True,
                                "format": "coco_detection", "resample": 2, "rescale_factor": 1 / 255,
                                "size": {"shortest_edge": 800, "longest_edge": 1333}, **IMAGENET}

CHECKPOINTS = {
    "microsoft/swin-tiny-patch4-window7-224": KnownCheckpoint("swin", {}, SWIN_PREPROCESSING),
    "microsoft/swin-small-patch4-window7-224": KnownCheckpoint("swin", dict(depths=[2, 2, 18, 2]),
                                                               SWIN_PREPROCESSING),
    "microsoft/swin-base-patch4-window7-224": KnownCheckpoint("swin", _SWIN_BASE, SWIN_PREPROCESSING),
    "microsoft/swin-base-patch4-window12-384": KnownCheckpoint("swin", {**_SWIN_BASE, **_AT_384},
                                                               _SWIN_PREPROCESSING_384),
    "microsoft/swin-large-patch4-window7-224": KnownCheckpoint("swin", _SWIN_LARGE, SWIN_PREPROCESSING),
    "microsoft/swin-large-patch4-window12-384": KnownCheckpoint("swin", {**_SWIN_LARGE, **_AT_384},
                                                                _SWIN_PREPROCESSING_384),
    **{f"facebook/mask2former-swin-{repo}": _mask2former(repo) for repo in _MASK2FORMER_REPOS},
    **{f"facebook/maskformer-swin-{size}-{dataset}": KnownCheckpoint(
        "swin", {**config, **_STAGES_1_4}, _maskformer_preprocessing(dataset))
       for size, config in _MASKFORMER_SIZES.items() for dataset in ("ade", "coco")},
    **{f"shi-labs/oneformer_{dataset}_swin_{size}": _oneformer(dataset, size)
       for dataset in _ONEFORMER_DATASETS for size in ("tiny", "large")},
    **{f"openmmlab/upernet-swin-{size}": KnownCheckpoint("swin", {**config, **_STAGES_1_4}, SEGFORMER_DEFAULTS)
       for size, config in _UPERNET_SIZES.items()},
    **{f"IDEA-Research/grounding-dino-{size}": KnownCheckpoint("swin", {**config, "out_indices": [2, 3, 4]},
                                                               GROUNDING_DINO_PREPROCESSING)
       for size, config in _GROUNDING_DINO_SIZES.items()},
}

FAMILY = Family(
    model_types={"swin": ModelType("models.swin:SwinConfig", "models.swin:SwinBackbone", "convert.hf_swin:TABLE",
                                   "SwinBackbone")},
    timm={"swin": TimmLayout("models.timm.swin:SwinSpec", "models.timm.swin:ARCHITECTURES",
                             "convert.timm_swin:table_for")},
    checkpoints=CHECKPOINTS,
    examples={
        "swin": dict(model_type="swin", embed_dim=16, depths=[2, 1], num_heads=[1, 2], window_size=4,
                     drop_path_rate=0.2, hidden_dropout_prob=0.1, out_indices=[0, 1, 2]),
        "timm_swin": dict(model_type="timm_backbone", backbone="swin_tiny_patch4_window7_224", out_indices=[0, 1],
                          model_args={"embed_dim": 16, "depths": [2, 1], "num_heads": [1, 2], "window_size": 4,
                                      "img_size": 32, "drop_path_rate": 0.2}),
    },
    benchmarks={
        "swin_tiny": dict(model_type="swin", config=dict(drop_path_rate=0.0, out_indices=[1, 2, 3, 4]),
                          transformers=("SwinConfig", "SwinBackbone", dict(drop_path_rate=0.0)),
                          timm="swin_tiny_patch4_window7_224", timm_out_indices=(0, 1, 2, 3),
                          timm_resize_kwargs=dict(dynamic_img_size=True), timm_size_multiple=4),
    },
)
