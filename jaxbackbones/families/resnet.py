"""ResNet: transformers' ResNet (microsoft/resnet-*) and timm's ResNets (`models/resnet.py`,
`models/timm/resnet.py`, `convert/hf_resnet.py`, `convert/timm_resnet.py`, tests/test_resnet.py, test_timm.py)."""

from ..registry import Family, KnownCheckpoint, ModelType, TimmLayout
from .preprocessing import RESNET_PREPROCESSING

_BASIC = dict(layer_type="basic", hidden_sizes=[64, 128, 256, 512])
_RESNET18 = dict(**_BASIC, depths=[2, 2, 2, 2])

CHECKPOINTS = {
    "microsoft/resnet-18": KnownCheckpoint("resnet", _RESNET18, RESNET_PREPROCESSING),
    "microsoft/resnet-34": KnownCheckpoint("resnet", dict(**_BASIC, depths=[3, 4, 6, 3]), RESNET_PREPROCESSING),
    "microsoft/resnet-50": KnownCheckpoint("resnet", {}, RESNET_PREPROCESSING),
    "microsoft/resnet-101": KnownCheckpoint("resnet", dict(depths=[3, 4, 23, 3]), RESNET_PREPROCESSING),
    "microsoft/resnet-152": KnownCheckpoint("resnet", dict(depths=[3, 8, 36, 3]), RESNET_PREPROCESSING),
}

FAMILY = Family(
    model_types={"resnet": ModelType("models.resnet:ResNetConfig", "models.resnet:ResNetBackbone",
                                     "convert.hf_resnet:TABLE", "ResNetBackbone")},
    timm={"resnet": TimmLayout("models.timm.resnet:ResNetSpec", "models.timm.resnet:ARCHITECTURES",
                               "convert.timm_resnet:table_for")},
    checkpoints=CHECKPOINTS,
    examples={
        "resnet": dict(model_type="resnet", embedding_size=8, hidden_sizes=[16, 24], depths=[1, 2],
                       out_indices=[0, 1, 2]),
        "timm_resnet": dict(model_type="timm_backbone", backbone="resnet26d", out_indices=[0, 1, 2],
                            model_args={"layers": [1, 1], "channels": [8, 16], "stem_width": 8}),
    },
    benchmarks={
        "resnet50": dict(model_type="resnet", config=dict(out_indices=[1, 2, 3, 4]),
                         transformers=("ResNetConfig", "ResNetBackbone", {}), timm="resnet50",
                         timm_out_indices=(1, 2, 3, 4), channels_last=True),
        "resnet18": dict(model_type="resnet", config=dict(**_RESNET18, out_indices=[1, 2, 3, 4]),
                         transformers=("ResNetConfig", "ResNetBackbone", _RESNET18), timm="resnet18",
                         timm_out_indices=(1, 2, 3, 4), channels_last=True, accelerator=False),
    },
)
