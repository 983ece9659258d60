"""Swin: transformers' Swin (microsoft/swin-*) and timm's Swins (`models/swin.py`, `models/timm/swin.py`,
`convert/hf_swin.py`, `convert/timm_swin.py`, tests/test_swin.py, test_timm.py)."""

from ..registry import Family, KnownCheckpoint, ModelType, TimmLayout
from .preprocessing import IMAGENET

# The preprocessor_config.json of microsoft/swin-* (size 384 for the window12-384 ones).
SWIN_PREPROCESSING = {"feature_extractor_type": "ViTFeatureExtractor", "do_normalize": True, "do_resize": True,
                      "resample": 3, "size": 224, **IMAGENET}
_SWIN_BASE = dict(embed_dim=128, depths=[2, 2, 18, 2], num_heads=[4, 8, 16, 32])
_SWIN_LARGE = dict(embed_dim=192, depths=[2, 2, 18, 2], num_heads=[6, 12, 24, 48])
_AT_384 = dict(window_size=12, image_size=384)
_SWIN_PREPROCESSING_384 = {**SWIN_PREPROCESSING, "size": 384}

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
