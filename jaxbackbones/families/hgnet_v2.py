"""HGNetV2: transformers' HGNetV2 (ustc-community/hgnet-v2, and the backbone of D-FINE / DEIM checkpoints) and timm's
HGNet / HGNetV2 (`models/hgnet_v2.py`, `models/timm/hgnet.py`, `convert/hf_hgnet_v2.py`, `convert/timm_hgnet.py`,
tests/test_hgnet_v2.py)."""

from ..registry import Family, KnownCheckpoint, ModelType, TimmLayout
from .preprocessing import RESNET_PREPROCESSING

CHECKPOINTS = {
    # HGNetV2Config's defaults are this repo's B4 layout. Its preprocessor_config.json is not stated in transformers'
    # sources; the ImageNet classifier default (as microsoft/resnet-*) is assumed.
    "ustc-community/hgnet-v2": KnownCheckpoint("hgnet_v2", {}, RESNET_PREPROCESSING),
}

FAMILY = Family(
    model_types={"hgnet_v2": ModelType("models.hgnet_v2:HGNetV2Config", "models.hgnet_v2:HGNetV2Backbone",
                                       "convert.hf_hgnet_v2:TABLE", "HGNetV2Backbone")},
    timm={"hgnet": TimmLayout("models.timm.hgnet:HGNetSpec", "models.timm.hgnet:ARCHITECTURES",
                              "convert.timm_hgnet:table_for")},
    checkpoints=CHECKPOINTS,
    examples={
        # light and plain blocks, a residual block, the learnable affine blocks, a stage without downsampling
        "hgnet_v2": dict(model_type="hgnet_v2", depths=[1, 1], hidden_sizes=[16, 24], stem_channels=[3, 8, 12],
                         stage_in_channels=[12, 16], stage_mid_channels=[8, 8], stage_out_channels=[16, 24],
                         stage_num_blocks=[2, 1], stage_downsample=[False, True], stage_downsample_strides=[2, 2],
                         stage_light_block=[False, True], stage_kernel_size=[3, 5], stage_numb_of_layers=[1, 1],
                         use_learnable_affine_block=True, out_indices=[0, 1, 2]),
        # timm takes the stage layout only through its model_cfgs; jaxbackbones reads `stem_chs` / `stages` from
        # model_args too, which keeps this example (compiled by the every-family tests) small.
        "timm_hgnet": dict(model_type="timm_backbone", backbone="hgnetv2_b0", out_indices=[0, 1, 2, 3],
                           model_args={"stem_chs": [8, 8], "stages": [[8, 8, 16, 1, False, False, 3, 1],
                                                                      [16, 8, 16, 1, True, False, 3, 1],
                                                                      [16, 8, 16, 1, True, True, 3, 1],
                                                                      [16, 8, 16, 1, True, False, 3, 1]]}),
    },
    benchmarks={
        "hgnetv2_b4": dict(model_type="hgnet_v2", config=dict(out_indices=[2, 3, 4]),
                           transformers=("HGNetV2Config", "HGNetV2Backbone", {}), timm="hgnetv2_b4",
                           timm_out_indices=(1, 2, 3), channels_last=True, size=(640, 640)),
    },
)
