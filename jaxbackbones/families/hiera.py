"""Hiera (facebook/hiera-*-224-hf, transformers' layout; timm's `hiera_*`) and SAM2's HieraDet image encoder (timm's
`sam2_hiera_*`; transformers' `sam2` and `sam2_video` checkpoints, with the FPN neck) (`models/hiera.py`,
`models/hieradet.py`, `models/timm/hiera.py`, `convert/hf_hiera.py`, `convert/timm_hiera.py`, `convert/hf_sam2.py`,
`image_processing/sam2.py`, tests/test_hiera.py)."""

from ..registry import Family, KnownCheckpoint, ModelType, TimmLayout
from .preprocessing import IMAGENET

# facebook/hiera-*-224-hf (and the -mae-hf repos): BitImageProcessor(size={"shortest_edge": 256}, bicubic, ImageNet
# mean and std; its default centre crop of 224), as convert_hiera_to_hf.py saves it.
HIERA_PREPROCESSING = {"image_processor_type": "BitImageProcessor", "crop_size": {"height": 224, "width": 224},
                       "do_center_crop": True, "do_convert_rgb": True, "do_normalize": True, "do_rescale": True,
                       "do_resize": True, "resample": 3, "rescale_factor": 1 / 255, "size": {"shortest_edge": 256},
                       **IMAGENET}
# Hiera sizes, as convert_hiera_to_hf.py states them (the paper's Table 2).
_HIERA_SIZES = {
    "tiny": dict(depths=[1, 2, 7, 2]),
    "small": dict(depths=[1, 2, 11, 2]),
    "base": {},
    "base-plus": dict(embed_dim=112, num_heads=[2, 4, 8, 16]),
    "large": dict(embed_dim=144, num_heads=[2, 4, 8, 16], depths=[2, 6, 36, 4]),
    "huge": dict(embed_dim=256, num_heads=[4, 8, 16, 32], depths=[2, 6, 36, 4]),
}
_MAE = dict(num_query_pool=2, decoder_hidden_size=512, decoder_depth=8, decoder_num_heads=16)

# facebook/sam2.1-hiera-*: Sam2ImageProcessorFast (a 1024x1024 bilinear resize, rescale, ImageNet normalisation), as
# convert_sam2_to_hf.py saves it.
SAM2_PREPROCESSING = {"image_processor_type": "Sam2ImageProcessorFast", "do_convert_rgb": True, "do_normalize": True,
                      "do_rescale": True, "do_resize": True, "mask_size": {"height": 256, "width": 256},
                      "resample": 2, "rescale_factor": 1 / 255, "size": {"height": 1024, "width": 1024}, **IMAGENET}
# SAM2 trunks, as convert_sam2_to_hf.py states them (the vision configs' other fields at their defaults but the neck's
# input widths, `backbone_channel_list`).
_SAM2_SIZES = {
    "tiny": {},
    "small": dict(blocks_per_stage=[1, 2, 11, 2], global_attention_blocks=[7, 10, 13]),
    "base-plus": dict(hidden_size=112, embed_dim_per_stage=[112, 224, 448, 896],
                      num_attention_heads_per_stage=[2, 4, 8, 16], blocks_per_stage=[2, 3, 16, 3],
                      global_attention_blocks=[12, 16, 20], window_positional_embedding_background_size=[14, 14]),
    "large": dict(hidden_size=144, embed_dim_per_stage=[144, 288, 576, 1152],
                  num_attention_heads_per_stage=[2, 4, 8, 16], blocks_per_stage=[2, 6, 36, 4],
                  global_attention_blocks=[23, 33, 43], window_size_per_stage=[8, 4, 16, 8]),
}


def _sam2(size: str) -> dict:
    trunk = _SAM2_SIZES[size]
    vision = dict(backbone_config=dict(model_type="sam2_hiera_det_model", **trunk))
    if "embed_dim_per_stage" in trunk:
        vision["backbone_channel_list"] = trunk["embed_dim_per_stage"][::-1]
    return dict(vision_config=vision)


CHECKPOINTS = {
    **{f"facebook/hiera-{size}-224-hf": KnownCheckpoint("hiera", config, HIERA_PREPROCESSING)
       for size, config in _HIERA_SIZES.items()},
    # The MAE pre-training checkpoints: HieraForPreTraining (the backbone under `hiera.`, its decoder ignored), whose
    # config convert_hiera_to_hf.py (--mae-model) sets: query pooling in two stages, the MAE decoder's sizes.
    **{f"facebook/hiera-{size}-224-mae-hf": KnownCheckpoint("hiera", {**config, **_MAE}, HIERA_PREPROCESSING)
       for size, config in _HIERA_SIZES.items()},
    **{f"facebook/sam2.1-hiera-{size}": KnownCheckpoint("sam2_video", _sam2(size), SAM2_PREPROCESSING)
       for size in _SAM2_SIZES},
    # Sam2Model's own layout (SAM2, not 2.1); the repo has no preprocessor_config.json: SAM2's processor stated.
    "facebook/sam2-hiera-tiny-hf": KnownCheckpoint("sam2", _sam2("tiny"), SAM2_PREPROCESSING),
}

FAMILY = Family(
    model_types={
        "hiera": ModelType("models.hiera:HieraConfig", "models.hiera:HieraBackbone", "convert.hf_hiera:table_for",
                           "HieraBackbone"),
        # export writes Sam2Model's checkpoint, the vision encoder only (transformers initialises the rest).
        "sam2": ModelType("models.hieradet:Sam2VisionConfig", "models.hieradet:Sam2VisionBackbone",
                          "convert.hf_sam2:TABLE", "Sam2Model"),
        # the hub's SAM2 repos: Sam2VideoModel's checkpoints, the same vision encoder under the same names
        "sam2_video": ModelType("models.hieradet:Sam2VideoVisionConfig", "models.hieradet:Sam2VisionBackbone",
                                "convert.hf_sam2:TABLE", "Sam2VideoModel"),
    },
    timm={"hiera": TimmLayout("models.timm.hiera:HieraSpec", "models.timm.hiera:HIERA_ARCHITECTURES",
                              "convert.timm_hiera:table_for"),
          "hieradet": TimmLayout("models.timm.hiera:HieraDetSpec", "models.timm.hiera:HIERADET_ARCHITECTURES",
                                 "convert.timm_hiera:table_for")},
    checkpoints=CHECKPOINTS,
    examples={
        # mask units on in stage 2 only, a stage without pooling (num_query_pool=2), drop path; 32x32 input only
        "hiera": dict(model_type="hiera", embed_dim=8, depths=[1, 2, 1, 1], num_heads=[1, 2, 2, 4],
                      image_size=[32, 32], masked_unit_attention=[False, True, False, False], num_query_pool=2,
                      drop_path_rate=0.1, out_indices=[0, 1, 2, 3, 4]),
        # per-stage windows (one that pads), a global block; the trunk's stages and the neck's levels
        "sam2": dict(model_type="sam2", out_features=["stage2", "stage4", "fpn1", "fpn2", "fpn3"], vision_config=dict(
            backbone_config=dict(hidden_size=8, blocks_per_stage=[1, 2, 2, 1], embed_dim_per_stage=[8, 16, 32, 64],
                                 num_attention_heads_per_stage=[1, 1, 2, 2], window_size_per_stage=[4, 2, 6, 3],
                                 global_attention_blocks=[4], window_positional_embedding_background_size=[5, 3]),
            backbone_channel_list=[64, 32, 16, 8], fpn_hidden_size=16)),
        # abswin position embedding, layer scale, max+mean widening, drop path
        "sam2_video": dict(model_type="sam2_video", vision_config=dict(
            backbone_config=dict(hidden_size=8, blocks_per_stage=[1, 1, 1, 1], embed_dim_per_stage=[8, 16, 32, 64],
                                 num_attention_heads_per_stage=[1, 1, 2, 2], window_size_per_stage=[4, 2, 2, 1],
                                 global_attention_blocks=[3], window_positional_embedding_background_size=[3, 3]),
            backbone_channel_list=[64, 32, 16, 8], fpn_hidden_size=8, num_feature_levels=2)),
        "timm_hiera": dict(model_type="timm_backbone", backbone="hiera_small_abswin_256", out_indices=[0, 1, 2, 3],
                           model_args={"embed_dim": 8, "stages": [1, 1, 2, 1], "img_size": [32, 32],
                                       "global_pos_size": [5, 7], "drop_path_rate": 0.1}),
        "timm_hieradet": dict(model_type="timm_backbone", backbone="sam2_hiera_tiny", out_indices=[0, 1, 2, 3],
                              model_args={"embed_dim": 8, "stages": [1, 2, 2, 1], "global_att_blocks": [4],
                                          "window_spec": [4, 2, 6, 3], "global_pos_size": [5, 3],
                                          "init_values": 0.1, "drop_path_rate": 0.1}),
    },
    benchmarks={
        # SAM2's Hiera-B+ trunk at SAM2's input size, against timm's HieraDet (transformers' Sam2VisionModel returns no
        # `feature_maps`; its neck adds four 1x1 convolutions to the same trunk).
        "sam2_hiera_base_plus": dict(model_type="timm_backbone",
                                     config=dict(backbone="sam2_hiera_base_plus", out_indices=[0, 1, 2, 3]),
                                     transformers=None, timm="sam2_hiera_base_plus", timm_out_indices=(0, 1, 2, 3),
                                     size=(1024, 1024)),
    },
)
