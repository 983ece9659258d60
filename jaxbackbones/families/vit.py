"""ViTs: DINOv2 (with and without registers) and DINOv3's ViT (facebook/dinov2-*, dinov3-vit*) and timm's ViTs and
EVAs (`models/vit.py`, `models/vit_configs.py`, `models/timm/vit.py`, `convert/hf_vit.py`, `convert/timm_vit.py`,
tests/test_vit.py, test_timm_vit.py); and the DINOv2 of DPT and Depth Anything checkpoints, as loading the head gives
it."""

from ..registry import Family, KnownCheckpoint, ModelType, TimmLayout
from .preprocessing import DINOV3_PREPROCESSING, IMAGENET

# facebook/dinov2-* and facebook/dinov2-with-registers-*: BitImageProcessor(size={"shortest_edge": 256}, bicubic,
# ImageNet mean and std; its default centre crop of 224), as convert_dinov2_to_hf.py and
# convert_dinov2_with_registers_to_hf.py save it.
DINOV2_PREPROCESSING = {"image_processor_type": "BitImageProcessor", "crop_size": {"height": 224, "width": 224},
                        "do_center_crop": True, "do_convert_rgb": True, "do_normalize": True, "do_rescale": True,
                        "do_resize": True, "resample": 3, "rescale_factor": 1 / 255, "size": {"shortest_edge": 256},
                        **IMAGENET}
# DINOv2 sizes: convert_dinov2_to_hf.py (and the registers one) start from image_size=518, patch_size=14.
_DINOV2_SIZES = {
    "small": dict(hidden_size=384, num_attention_heads=6),
    "base": {},
    "large": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16),
    "giant": dict(hidden_size=1536, num_hidden_layers=40, num_attention_heads=24, use_swiglu_ffn=True),
}
_AT_518 = dict(image_size=518, patch_size=14)
# DPT over DINOv2 (convert_dinov2_depth_to_hf.py) and Depth Anything V2 (convert_depth_anything_to_hf.py): the
# facebook/dinov2-* config with these layers; Depth Anything V1 its last four.
_DPT_LAYERS = {"small": [3, 6, 9, 12], "base": [3, 6, 9, 12], "large": [5, 12, 18, 24], "giant": [10, 20, 30, 40]}
_DEPTH_ANYTHING_V1_LAYERS = {"small": [9, 10, 11, 12], "base": [9, 10, 11, 12], "large": [21, 22, 23, 24]}
_DPT_DINOV2 = dict(apply_layernorm=False, reshape_hidden_states=False)
_DEPTH_ANYTHING = dict(apply_layernorm=True, reshape_hidden_states=False)
# facebook/dpt-dinov2-*: DPTImageProcessor(do_resize=False, do_rescale=False, do_pad=True, size_divisor=14,
# do_normalize=True, mean and std in 0-255 units), as convert_dinov2_depth_to_hf.py saves it.
DPT_DINOV2_PREPROCESSING = {"image_processor_type": "DPTImageProcessor", "do_normalize": True, "do_pad": True,
                            "do_rescale": False, "do_resize": False, "ensure_multiple_of": 1,
                            "image_mean": [123.675, 116.28, 103.53], "image_std": [58.395, 57.12, 57.375],
                            "keep_aspect_ratio": False, "resample": 3, "rescale_factor": 1 / 255,
                            "size": {"height": 384, "width": 384}, "size_divisor": 14}
# Depth Anything (V1 and V2): DPTImageProcessor(518 x 518 keeping the aspect ratio, a multiple of 14, bicubic,
# rescale, ImageNet normalisation), as convert_depth_anything_to_hf.py saves it.
DEPTH_ANYTHING_PREPROCESSING = {"image_processor_type": "DPTImageProcessor", "do_normalize": True, "do_pad": False,
                                "do_rescale": True, "do_resize": True, "ensure_multiple_of": 14,
                                "keep_aspect_ratio": True, "resample": 3, "rescale_factor": 1 / 255,
                                "size": {"height": 518, "width": 518}, **IMAGENET}
# DINOv3 ViT sizes, as convert_dinov3_vit_to_hf.py states them (all with 4 register tokens).
_GATED = dict(use_gated_mlp=True, hidden_act="silu")
_DINOV3_VIT_SIZES = {
    "vits16": {},
    "vits16plus": _GATED,
    "vitb16": dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12),
    "vitl16": dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16),
    "vith16plus": dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
                       **_GATED),
    "vit7b16": dict(hidden_size=4096, intermediate_size=8192, num_hidden_layers=40, num_attention_heads=32,
                    query_bias=False, value_bias=False, **_GATED),
}

CHECKPOINTS = {
    **{f"facebook/dinov2-{size}": KnownCheckpoint("dinov2", {**_AT_518, **config}, DINOV2_PREPROCESSING)
       for size, config in _DINOV2_SIZES.items()},
    **{f"facebook/dinov2-with-registers-{size}": KnownCheckpoint(
        "dinov2_with_registers", {**_AT_518, **config}, DINOV2_PREPROCESSING)
       for size, config in _DINOV2_SIZES.items()},
    **{f"facebook/dinov3-{size}-pretrain-lvd1689m": KnownCheckpoint(
        "dinov3_vit", {**config, "num_register_tokens": 4}, DINOV3_PREPROCESSING)
       for size, config in _DINOV3_VIT_SIZES.items()},
    # The DINOv2 backbone_config of DPT and Depth Anything, as loading the head gives it: tokens, not maps
    # (reshape_hidden_states=False), the head's layers.
    **{f"facebook/dpt-dinov2-{size}-{dataset}": KnownCheckpoint(
        "dinov2", {**_AT_518, **_DINOV2_SIZES[size], "out_indices": _DPT_LAYERS[size], **_DPT_DINOV2},
        DPT_DINOV2_PREPROCESSING) for size in _DINOV2_SIZES for dataset in ("nyu", "kitti")},
    **{repo: KnownCheckpoint("dinov2", {**_AT_518, **_DINOV2_SIZES[size], "out_indices": layers, **_DEPTH_ANYTHING},
                             DEPTH_ANYTHING_PREPROCESSING)
       for size in ("small", "base", "large")
       for repo, layers in ((f"LiheYoung/depth-anything-{size}-hf", _DEPTH_ANYTHING_V1_LAYERS[size]),
                            (f"depth-anything/Depth-Anything-V2-{size.capitalize()}-hf", _DPT_LAYERS[size]))},
}

_CONFIGS = "models.vit_configs"
_SMALL = dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, patch_size=8, image_size=32,
              drop_path_rate=0.2, out_indices=[0, 1, 2])
_TIMM_SMALL = dict(embed_dim=16, depth=2, num_heads=2, patch_size=8, img_size=32, drop_path_rate=0.2,
                   dynamic_img_pad=True)
_DINOV2_SMALL = dict(hidden_size=384, num_attention_heads=6, image_size=518, patch_size=14)

FAMILY = Family(
    model_types={
        "dinov2": ModelType(f"{_CONFIGS}:Dinov2Config", "models.vit:Dinov2Backbone", "convert.hf_vit:dinov2_table_for",
                            "Dinov2Backbone"),
        "dinov2_with_registers": ModelType(f"{_CONFIGS}:Dinov2WithRegistersConfig",
                                           "models.vit:Dinov2WithRegistersBackbone",
                                           "convert.hf_vit:dinov2_table_for", "Dinov2WithRegistersBackbone"),
        "dinov3_vit": ModelType(f"{_CONFIGS}:DINOv3ViTConfig", "models.vit:DINOv3ViTBackbone",
                                "convert.hf_vit:dinov3_table_for", "DINOv3ViTBackbone"),
    },
    timm={
        "vit": TimmLayout("models.timm.vit:ViTSpec", "models.timm.vit:VIT_ARCHITECTURES", "convert.timm_vit:table_for"),
        "eva": TimmLayout("models.timm.vit:EvaSpec", "models.timm.vit:EVA_ARCHITECTURES", "convert.timm_vit:table_for"),
    },
    checkpoints=CHECKPOINTS,
    examples={
        # layer scale, stochastic depth, dropout, the position embedding resampled at other sizes
        "dinov2": dict(model_type="dinov2", **_SMALL, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1),
        "dinov2_with_registers": dict(model_type="dinov2_with_registers", **_SMALL, num_register_tokens=2),
        # RoPE with every train-mode coordinate augmentation, registers, gated MLP
        "dinov3_vit": dict(model_type="dinov3_vit", **_SMALL, intermediate_size=24, num_register_tokens=2,
                           use_gated_mlp=True, hidden_act="silu", pos_embed_shift=0.1, pos_embed_jitter=1.2,
                           return_class_token=True),
        "timm_vit": dict(model_type="timm_backbone", backbone="vit_small_patch16_224", out_indices=[0, 1],
                         model_args=_TIMM_SMALL),
        "timm_eva": dict(model_type="timm_backbone", backbone="vit_small_patch16_dinov3", out_indices=[0, 1],
                         model_args={**_TIMM_SMALL, "rope_rescale_coords": 2.0}),
    },
    benchmarks={
        "vit_small_dinov2": dict(model_type="dinov2", config=dict(**_DINOV2_SMALL, out_indices=[3, 6, 9, 12]),
                                 transformers=("Dinov2Config", "Dinov2Backbone", _DINOV2_SMALL),
                                 timm="vit_small_patch14_dinov2", timm_out_indices=(2, 5, 8, 11), size=(518, 518),
                                 timm_kwargs=dict(img_size=518), timm_resize_kwargs=dict(dynamic_img_size=True),
                                 timm_size_multiple=14),
        "vit_base_patch16_224": dict(model_type="timm_backbone",
                                     config=dict(backbone="vit_base_patch16_224", out_indices=[2, 5, 8, 11]),
                                     transformers=None, timm="vit_base_patch16_224", timm_out_indices=(2, 5, 8, 11),
                                     timm_resize_kwargs=dict(dynamic_img_size=True), timm_size_multiple=16),
    },
)
