"""Windowed ViTs: ViTDet (transformers' `vitdet`, ViTMatte's backbone), SAM's image encoder (`sam`, facebook/sam-vit-*;
`sam_vision_model`) and timm's `samvit_*` (`models/vitdet.py`, `models/vitdet_configs.py`, `models/timm/vitdet.py`,
`convert/hf_vitdet.py`, `convert/hf_sam.py`, `convert/timm_vitdet.py`, tests/test_vitdet.py).

The SAM rows are facebook/sam-vit-{base,large,huge}'s `vision_config` (SamModel checkpoints; transformers'
convert_sam_to_hf.py sizes) with their SamImageProcessor. The ViTDet rows are the `backbone_config` of the ViTMatte
matting checkpoints hustvl/vitmatte-* (a `vitmatte` head holding it under `backbone.`; convert_vitmatte_to_hf.py
sizes): 4 input channels, the image and its trimap; their VitMatteImageProcessor (which jaxbackbones does not
implement) rescales and normalises the image with mean = std = 0.5, concatenates the trimap and pads to a multiple of
32: stated as the ViTImageProcessor that does the image part (no resize).
"""

from ..registry import Family, KnownCheckpoint, ModelType, TimmLayout
from .preprocessing import IMAGENET

SAM_PREPROCESSING = {"image_processor_type": "SamImageProcessor", "processor_class": "SamProcessor",
                     "do_convert_rgb": True, "do_normalize": True, "do_pad": True, "do_rescale": True,
                     "do_resize": True, "pad_size": {"height": 1024, "width": 1024}, "resample": 2,
                     "rescale_factor": 1 / 255, "size": {"longest_edge": 1024}, **IMAGENET}
VITMATTE_PREPROCESSING = {"image_processor_type": "ViTImageProcessor", "do_resize": False, "do_rescale": True,
                          "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": [0.5, 0.5, 0.5],
                          "image_std": [0.5, 0.5, 0.5]}
_SAM_SIZES = {
    "base": {},
    "large": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, global_attn_indexes=[5, 11, 17, 23]),
    "huge": dict(hidden_size=1280, num_hidden_layers=32, num_attention_heads=16, global_attn_indexes=[7, 15, 23, 31]),
}
_VITMATTE = dict(num_channels=4, image_size=512, pretrain_image_size=224, use_relative_position_embeddings=True,
                 window_size=14, window_block_indices=[0, 1, 3, 4, 6, 7, 9, 10], residual_block_indices=[2, 5, 8, 11],
                 out_features=["stage12"])
_VITMATTE_SIZES = {"small": dict(hidden_size=384, num_attention_heads=6), "base": {}}

CHECKPOINTS = {
    **{f"facebook/sam-vit-{size}": KnownCheckpoint("sam", config, SAM_PREPROCESSING)
       for size, config in _SAM_SIZES.items()},
    **{f"hustvl/vitmatte-{size}-{data}": KnownCheckpoint("vitdet", {**_VITMATTE, **config}, VITMATTE_PREPROCESSING)
       for size, config in _VITMATTE_SIZES.items() for data in ("composition-1k", "distinctions-646")},
}

_CONFIGS = "models.vitdet_configs"
_SAM_SMALL = dict(hidden_size=16, output_channels=8, num_hidden_layers=3, num_attention_heads=2, image_size=64,
                  patch_size=8, window_size=3, global_attn_indexes=[1], mlp_dim=24)

FAMILY = Family(
    model_types={
        "vitdet": ModelType(f"{_CONFIGS}:VitDetConfig", "models.vitdet:VitDetBackbone", "convert.hf_vitdet:TABLE",
                            "VitDetBackbone"),
        "sam": ModelType(f"{_CONFIGS}:SamConfig", "models.vitdet:SamVisionBackbone", "convert.hf_sam:TABLE",
                         "SamModel"),
        "sam_vision_model": ModelType(f"{_CONFIGS}:SamVisionConfig", "models.vitdet:SamVisionBackbone",
                                      "convert.hf_sam:TABLE", "SamVisionModel"),
    },
    checkpoints=CHECKPOINTS,
    timm={"samvit": TimmLayout("models.timm.vitdet:SamViTSpec", "models.timm.vitdet:ARCHITECTURES",
                               "convert.timm_vitdet:table_for")},
    examples={
        # windows that leave padding, a global block, relative positions, a residual block, drop path, dropout
        "vitdet": dict(model_type="vitdet", hidden_size=16, num_hidden_layers=3, num_attention_heads=2, patch_size=8,
                       image_size=40, pretrain_image_size=32, window_size=3, window_block_indices=[0, 2],
                       residual_block_indices=[1], use_relative_position_embeddings=True, drop_path_rate=0.2,
                       dropout_prob=0.1, out_indices=[0, 2, 3]),
        # SAM with its neck; interpolate_pos_encoding so that every input size runs
        "sam": dict(model_type="sam", **_SAM_SMALL, interpolate_pos_encoding=True, out_features=["stage2", "neck"]),
        "sam_vision_model": dict(model_type="sam_vision_model", **_SAM_SMALL, attention_dropout=0.1,
                                 interpolate_pos_encoding=True),
        # timm's layout: its LayerNorm eps, antialiased position resampling, no neck; drop path, dropout. Patch 1:
        # timm refuses inputs that are not a multiple of the patch, and the every-family tests run odd sizes
        "timm_samvit": dict(model_type="timm_backbone", backbone="samvit_base_patch16", out_indices=[0, 2],
                            model_args=dict(embed_dim=16, depth=3, num_heads=2, img_size=12, patch_size=1,
                                            window_size=5, global_attn_indexes=[1], drop_path_rate=0.1,
                                            proj_drop_rate=0.1)),
    },
    benchmarks={
        # SAM ViT-B's image encoder at its only size, the image embedding (transformers: SamVisionModel, eager; timm:
        # the last block, features_only has no neck)
        "sam_vit_b": dict(model_type="sam_vision_model", config=dict(out_features=["neck"]),
                          transformers=("SamVisionConfig", "SamVisionModel", {}), timm="samvit_base_patch16",
                          timm_out_indices=(11,), size=(1024, 1024), timm_size_multiple=16),
    },
)
