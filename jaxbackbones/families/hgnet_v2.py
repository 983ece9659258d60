"""HGNetV2: transformers' HGNetV2 (ustc-community/hgnet-v2, and the backbone of D-FINE / DEIM checkpoints) and timm's
HGNet / HGNetV2 (`models/hgnet_v2.py`, `models/timm/hgnet.py`, `convert/hf_hgnet_v2.py`, `convert/timm_hgnet.py`,
tests/test_hgnet_v2.py)."""

from ..registry import Family, KnownCheckpoint, ModelType, TimmLayout
from .preprocessing import RESNET_PREPROCESSING, RT_DETR_PREPROCESSING

# D-FINE's HGNetV2 backbones, as transformers' convert_d_fine_original_pytorch_checkpoint_to_hf.py sets them from
# DFineConfig's (stages 2-4) for dfine_{n,s,m,l,x}_*; the light ones stage the learnable affine blocks. The fields
# the modules never read (hidden_sizes, embedding_size) are stated as the config.json holds them: transformers
# reports `channels` from them.
_D_FINE_LIGHT = dict(hidden_sizes=[128, 256, 512, 1024], stem_channels=[3, 16, 16], stage_in_channels=[16, 64, 256, 512],
                     stage_mid_channels=[16, 32, 64, 128], stage_out_channels=[64, 256, 512, 1024],
                     stage_num_blocks=[1, 1, 2, 1], stage_numb_of_layers=[3, 3, 3, 3], use_learnable_affine_block=True)
_D_FINE = {
    "nano": dict(_D_FINE_LIGHT, out_indices=[3, 4]),
    "small": _D_FINE_LIGHT,
    "medium": dict(hidden_sizes=[192, 384, 768, 1536], stem_channels=[3, 24, 32], stage_in_channels=[32, 96, 384, 768],
                   stage_mid_channels=[32, 64, 128, 256], stage_out_channels=[96, 384, 768, 1536],
                   stage_num_blocks=[1, 1, 3, 1], stage_numb_of_layers=[4, 4, 4, 4], use_learnable_affine_block=True),
    "large": {},  # HGNetV2Config's defaults: B4
    "xlarge": dict(stem_channels=[3, 32, 64], stage_in_channels=[64, 128, 512, 1024],
                   stage_mid_channels=[64, 128, 256, 512], stage_out_channels=[128, 512, 1024, 2048],
                   stage_num_blocks=[1, 2, 5, 2]),
}


def _d_fine(size: str) -> dict:
    return {"embedding_size": 32, "out_indices": [2, 3, 4], "freeze_batch_norm": True, **_D_FINE[size]}


CHECKPOINTS = {
    # HGNetV2Config's defaults are this repo's B4 layout. Its preprocessor_config.json is not stated in transformers'
    # sources; the ImageNet classifier default (as microsoft/resnet-*) is assumed.
    "ustc-community/hgnet-v2": KnownCheckpoint("hgnet_v2", {}, RESNET_PREPROCESSING),
    # The detectors' backbones, as loading the detector gives them (BatchNorm frozen), with its RTDetrImageProcessor.
    **{f"ustc-community/dfine-{size}-coco": KnownCheckpoint("hgnet_v2", _d_fine(size), RT_DETR_PREPROCESSING)
       for size in _D_FINE},
    "ustc-community/dfine-small-obj365": KnownCheckpoint("hgnet_v2", _d_fine("small"), RT_DETR_PREPROCESSING),
    "ustc-community/dfine-medium-obj2coco": KnownCheckpoint("hgnet_v2", _d_fine("medium"), RT_DETR_PREPROCESSING),
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
