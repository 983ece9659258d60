"""PVTv2 (OpenGVLab/pvt_v2_b*), SegFormer's Mix Transformer encoders (nvidia/mit-b*) and timm's PVTv2s: one
implementation (`models/pvt_v2.py`, `models/timm/pvt_v2.py`, `convert/hf_pvt_v2.py`, `convert/hf_segformer.py`,
`convert/timm_pvt_v2.py`, tests/test_pvt_v2.py)."""

from ..registry import Family, KnownCheckpoint, ModelType, TimmLayout
from .preprocessing import IMAGENET

# nvidia/mit-b*: SegformerFeatureExtractor(size 512, bilinear, ImageNet mean and std), as
# convert_segformer_original_to_pytorch.py saves it for the ImageNet-pretrained encoders.
SEGFORMER_PREPROCESSING = {"feature_extractor_type": "SegformerFeatureExtractor", "do_normalize": True,
                           "do_resize": True, "reduce_labels": False, "resample": 2, "size": 512, **IMAGENET}
# OpenGVLab/pvt_v2_b*: PvtImageProcessor(size=224): a 224x224 bilinear resize, rescale, ImageNet normalisation, as
# convert_pvt_v2_to_pytorch.py saves it.
PVT_V2_PREPROCESSING = {"image_processor_type": "PvtImageProcessor", "do_normalize": True, "do_rescale": True,
                        "do_resize": True, "resample": 2, "rescale_factor": 1 / 255,
                        "size": {"height": 224, "width": 224}, **IMAGENET}

# (depths, hidden_sizes) of b0..b5, shared by MiT and PVTv2 (both papers' tables; num_attention_heads [1, 2, 5, 8],
# sr_ratios [8, 4, 2, 1] throughout); PVTv2-b5 alone has MLP ratios [4, 4, 4, 4] where PVTv2 has [8, 8, 4, 4].
_WIDE = [64, 128, 320, 512]
_SIZES = {
    "b0": ([2, 2, 2, 2], [32, 64, 160, 256]),
    "b1": ([2, 2, 2, 2], _WIDE),
    "b2": ([3, 4, 6, 3], _WIDE),
    "b3": ([3, 4, 18, 3], _WIDE),
    "b4": ([3, 8, 27, 3], _WIDE),
    "b5": ([3, 6, 40, 3], _WIDE),
}


def _mit(size: str) -> dict:
    depths, hidden_sizes = _SIZES[size]
    return dict(depths=depths, hidden_sizes=hidden_sizes, decoder_hidden_size=256 if size in ("b0", "b1") else 768)


def _pvt_v2(size: str) -> dict:
    depths, hidden_sizes = _SIZES[size]
    return dict(depths=depths, hidden_sizes=hidden_sizes, **({"mlp_ratios": [4, 4, 4, 4]} if size == "b5" else {}))


CHECKPOINTS = {
    **{f"nvidia/mit-{size}": KnownCheckpoint("segformer", _mit(size), SEGFORMER_PREPROCESSING) for size in _SIZES},
    **{f"OpenGVLab/pvt_v2_{size}": KnownCheckpoint("pvt_v2", _pvt_v2(size), PVT_V2_PREPROCESSING) for size in _SIZES},
    # SegFormer's semantic segmentation models: the same encoder (SegformerForSemanticSegmentation's `segformer.`,
    # as SegformerModel's), at the resolution convert_segformer_original_to_pytorch.py names (ADE20K: 512, b5 640;
    # Cityscapes: 1024), with nvidia/mit-b*'s preprocessor fields at that size (ADE20K's with reduced labels).
    **{f"nvidia/segformer-{size}-finetuned-ade-{pixels}-{pixels}": KnownCheckpoint(
        "segformer", _mit(size), {**SEGFORMER_PREPROCESSING, "size": pixels, "reduce_labels": True})
       for size in _SIZES for pixels in [640 if size == "b5" else 512]},
    **{f"nvidia/segformer-{size}-finetuned-cityscapes-1024-1024": KnownCheckpoint(
        "segformer", _mit(size), {**SEGFORMER_PREPROCESSING, "size": 1024}) for size in _SIZES},
}

_MODULE = "models.pvt_v2:PvtV2Backbone"
_B2 = dict(depths=[3, 4, 6, 3], hidden_sizes=_WIDE)

FAMILY = Family(
    model_types={
        # transformers has no SegFormer backbone: export writes SegformerModel's checkpoint.
        "segformer": ModelType("models.pvt_v2:SegformerConfig", _MODULE, "convert.hf_segformer:TABLE",
                               "SegformerModel"),
        "pvt_v2": ModelType("models.pvt_v2:PvtV2Config", _MODULE, "convert.hf_pvt_v2:TABLE", "PvtV2Backbone"),
    },
    timm={"pvt_v2": TimmLayout("models.timm.pvt_v2:PvtV2Spec", "models.timm.pvt_v2:ARCHITECTURES",
                               "convert.timm_pvt_v2:table_for")},
    checkpoints=CHECKPOINTS,
    examples={
        # spatial reduction in the first stage, none in the second; drop path; the last stage as tokens
        "segformer": dict(model_type="segformer", num_encoder_blocks=2, depths=[2, 1], hidden_sizes=[8, 16],
                          num_attention_heads=[1, 2], sr_ratios=[2, 1], patch_sizes=[7, 3], strides=[4, 2],
                          mlp_ratios=[2, 2], drop_path_rate=0.2, reshape_last_stage=False, out_indices=[0, 1]),
        # linear attention (7x7 pooling, the MLP's ReLU), no q/k/v biases
        "pvt_v2": dict(model_type="pvt_v2", num_encoder_blocks=2, depths=[1, 1], hidden_sizes=[8, 16],
                       num_attention_heads=[1, 2], sr_ratios=[2, 1], patch_sizes=[7, 3], strides=[4, 2],
                       mlp_ratios=[2, 2], linear_attention=True, qkv_bias=False, out_indices=[0, 1]),
        # timm's layout: its epsilons, the first stage's patch embedding outside the stages
        "timm_pvt_v2": dict(model_type="timm_backbone", backbone="pvt_v2_b0", out_indices=[0, 1, 2, 3],
                            model_args={"depths": [1, 0, 1, 0], "embed_dims": [8, 16, 16, 24],
                                        "num_heads": [1, 2, 2, 3], "mlp_ratios": [2, 2, 2, 2],
                                        "drop_path_rate": 0.1}),
    },
    benchmarks={
        # timm has no MiT: its PVTv2-b2 with MiT's MLP ratios is the same computation (LayerNorm eps aside).
        "mit_b2": dict(model_type="segformer", config=dict(**_B2, drop_path_rate=0.0, out_indices=[0, 1, 2, 3]),
                       transformers=None, timm="pvt_v2_b2", timm_out_indices=(0, 1, 2, 3),
                       timm_kwargs=dict(mlp_ratios=(4, 4, 4, 4)), size=(512, 512)),
        "pvt_v2_b2": dict(model_type="pvt_v2", config=dict(**_B2, out_indices=[0, 1, 2, 3]),
                          transformers=("PvtV2Config", "PvtV2Backbone", _B2), timm="pvt_v2_b2",
                          timm_out_indices=(0, 1, 2, 3)),
    },
)
