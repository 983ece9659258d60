"""ConvNeXt, ConvNeXt V2 and DINOv3's ConvNeXt (facebook/convnext-*, convnextv2-*, dinov3-convnext-*) and timm's
ConvNeXts (`models/convnext.py`, `models/timm/convnext.py`, `convert/hf_convnext.py`, `convert/timm_convnext.py`,
tests/test_convnext.py, test_timm_vit.py)."""

from ..registry import Family, KnownCheckpoint, ModelType, TimmLayout
from .preprocessing import DINOV3_PREPROCESSING, IMAGENET, RESNET_PREPROCESSING, SEGFORMER_DEFAULTS

# facebook/convnextv2-*: ConvNextImageProcessor(size=224 or 384, crop_pct=224 / 256 (None, the same, at 384),
# ImageNet mean and std, bicubic), as convert_convnextv2_to_pytorch.py saves it.
CONVNEXTV2_PREPROCESSING = {"image_processor_type": "ConvNextImageProcessor", "crop_pct": 0.875, "do_normalize": True,
                            "do_rescale": True, "do_resize": True, "resample": 3, "rescale_factor": 1 / 255,
                            "size": {"shortest_edge": 224}, **IMAGENET}
# ConvNeXt sizes (depths, hidden_sizes), as transformers' ConvNeXt, V2 and DINOv3-ConvNeXt conversion scripts
# state them.
_CONVNEXT_SIZES = {
    "atto": ([2, 2, 6, 2], [40, 80, 160, 320]),
    "femto": ([2, 2, 6, 2], [48, 96, 192, 384]),
    "pico": ([2, 2, 6, 2], [64, 128, 256, 512]),
    "nano": ([2, 2, 8, 2], [80, 160, 320, 640]),
    "tiny": ([3, 3, 9, 3], [96, 192, 384, 768]),
    "small": ([3, 3, 27, 3], [96, 192, 384, 768]),
    "base": ([3, 3, 27, 3], [128, 256, 512, 1024]),
    "large": ([3, 3, 27, 3], [192, 384, 768, 1536]),
    "xlarge": ([3, 3, 27, 3], [256, 512, 1024, 2048]),
    "huge": ([3, 3, 27, 3], [352, 704, 1408, 2816]),
}


def _convnext(size: str) -> dict:
    depths, hidden_sizes = _CONVNEXT_SIZES[size]
    return dict(depths=depths, hidden_sizes=hidden_sizes)


def _resolution(name: str) -> int:
    """The input size a ConvNeXt repo name states ("base-384-22k-1k" -> 384)."""
    return next(int(part) for part in name.split("-") if part in ("224", "384"))


CHECKPOINTS = {
    # size-resolution[-data] as convert_convnext_to_pytorch.py and convert_convnextv2_to_pytorch.py name them
    **{f"facebook/convnext-{name}": KnownCheckpoint(
        "convnext", _convnext(name.split("-")[0]), {**RESNET_PREPROCESSING, "size": _resolution(name)})
       for name in ("tiny-224", "small-224", "base-224", "large-224", "base-384", "large-384", "base-224-22k-1k",
                    "base-384-22k-1k", "large-224-22k-1k", "large-384-22k-1k", "xlarge-224-22k-1k",
                    "xlarge-384-22k-1k")},
    **{f"facebook/convnextv2-{name}": KnownCheckpoint(
        "convnextv2", _convnext(name.split("-")[0]),
        {**CONVNEXTV2_PREPROCESSING, "size": {"shortest_edge": _resolution(name)}})
       for name in ("atto-1k-224", "femto-1k-224", "pico-1k-224", "nano-1k-224", "tiny-1k-224", "base-1k-224",
                    "large-1k-224", "huge-1k-224", "nano-22k-384", "tiny-22k-224", "tiny-22k-384", "base-22k-224",
                    "base-22k-384", "large-22k-224", "large-22k-384")},
    **{f"facebook/dinov3-convnext-{size}-pretrain-lvd1689m": KnownCheckpoint(
        "dinov3_convnext", _convnext(size), DINOV3_PREPROCESSING) for size in ("tiny", "small", "base", "large")},
    # UperNet's ConvNeXt backbone_config, as loading the head gives it: stages 1-4. convert_convnext_upernet_to_pytorch.py
    # builds ConvNextConfig(out_features=stages 1-4) for tiny (its one converted model); the other sizes are ConvNeXt's
    # (mmsegmentation's UperNet-ConvNeXt configs). The script saves no processor; the UperNet repos' is
    # SegformerImageProcessor()'s, as convert_swin_upernet_to_pytorch.py saves it.
    **{f"openmmlab/upernet-convnext-{size}": KnownCheckpoint(
        "convnext", {**_convnext(size), "out_features": ["stage1", "stage2", "stage3", "stage4"]},
        SEGFORMER_DEFAULTS) for size in ("tiny", "small", "base", "large", "xlarge")},
}

_MODULE = "models.convnext:ConvNextBackbone"
# transformers' ConvNextBackbone needs hidden_sizes as a list (its own default, a tuple, fails)
_CONVNEXT_TINY = dict(hidden_sizes=[96, 192, 384, 768], depths=[3, 3, 9, 3])

FAMILY = Family(
    model_types={
        "convnext": ModelType("models.convnext:ConvNextConfig", _MODULE, "convert.hf_convnext:TABLE",
                              "ConvNextBackbone"),
        "convnextv2": ModelType("models.convnext:ConvNextV2Config", _MODULE, "convert.hf_convnext:TABLE",
                                "ConvNextV2Backbone"),
        "dinov3_convnext": ModelType("models.convnext:DINOv3ConvNextConfig", _MODULE,
                                     "convert.hf_convnext:DINOV3_TABLE", "DINOv3ConvNextBackbone"),
    },
    timm={"convnext": TimmLayout("models.timm.convnext:ConvNeXtSpec", "models.timm.convnext:ARCHITECTURES",
                                 "convert.timm_convnext:table_for")},
    checkpoints=CHECKPOINTS,
    examples={
        # XLA:CPU compiles the backward pass of each depthwise convolution slowly (~3 s a block), so one row has the
        # two blocks that stochastic depth needs (its rate rises from 0 at the first block), the others one.
        "convnext": dict(model_type="convnext", hidden_sizes=[8, 16], depths=[2, 0], num_stages=2, drop_path_rate=0.2,
                         layer_scale_init_value=0.5, out_indices=[0, 1, 2]),  # layer scale
        "convnextv2": dict(model_type="convnextv2", hidden_sizes=[8, 16], depths=[0, 1], num_stages=2,
                           out_indices=[0, 1, 2]),  # GRN
        "dinov3_convnext": dict(model_type="dinov3_convnext", hidden_sizes=[8, 16], depths=[0, 1],
                                out_indices=[0, 1, 2]),  # the input as stem, no output norms
        "timm_convnext": dict(model_type="timm_backbone", backbone="convnext_atto", out_indices=[0, 1, 2, 3],
                              model_args={"depths": [0, 1, 0, 0], "dims": [8, 16, 16, 24]}),
    },
    benchmarks={
        "convnext_tiny": dict(model_type="convnext", config=dict(out_indices=[1, 2, 3, 4]),
                              transformers=("ConvNextConfig", "ConvNextBackbone", _CONVNEXT_TINY),
                              timm="convnext_tiny", timm_out_indices=(0, 1, 2, 3), channels_last=True),
    },
)
