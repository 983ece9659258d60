"""Windowed ViTs: ViTDet (transformers' `vitdet`, ViTMatte's backbone), SAM's image encoder (`sam`, facebook/sam-vit-*;
`sam_vision_model`) and timm's `samvit_*` (`models/vitdet.py`, `models/vitdet_configs.py`, `models/timm/vitdet.py`,
`convert/hf_vitdet.py`, `convert/hf_sam.py`, `convert/timm_vitdet.py`, tests/test_vitdet.py)."""

from ..registry import Family, ModelType, TimmLayout

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
        # timm's layout: its LayerNorm eps, antialiased position resampling, no neck; drop path, dropout
        "timm_samvit": dict(model_type="timm_backbone", backbone="samvit_base_patch16", out_indices=[0, 2],
                            model_args=dict(embed_dim=16, depth=3, num_heads=2, img_size=64, patch_size=8,
                                            window_size=3, global_attn_indexes=[1], drop_path_rate=0.1,
                                            proj_drop_rate=0.1)),
    },
)
