"""ResNet: transformers' ResNet (microsoft/resnet-*), RT-DETR's ResNet-vd (`rt_detr_resnet`) and timm's ResNets
(`models/resnet.py`, `models/timm/resnet.py`, `convert/hf_resnet.py`, `convert/hf_rt_detr_resnet.py`,
`convert/timm_resnet.py`, tests/test_resnet.py, test_rt_detr_resnet.py, test_timm.py).

The RT-DETR rows are the `backbone_config` of the detectors PekingU/rtdetr_r{18,34,50,101}vd (their `config.json` is
an `rt_detr` model holding it; the weights sit under the detector's `model.backbone.model.` prefix), with the
detector's resize to 640x640 and rescale to [0, 1] (RTDetrImageProcessor, no normalisation) stated as the
ViTImageProcessor that does the same to an image.
"""

from ..registry import Family, KnownCheckpoint, ModelType, TimmLayout
from .preprocessing import RESNET_PREPROCESSING

_BASIC = dict(layer_type="basic", hidden_sizes=[64, 128, 256, 512])
_RESNET18 = dict(**_BASIC, depths=[2, 2, 2, 2])

_RT_DETR_BASIC = dict(layer_type="basic", hidden_sizes=[64, 128, 256, 512])
RT_DETR_PREPROCESSING = {"image_processor_type": "ViTImageProcessor", "do_resize": True,
                         "size": {"height": 640, "width": 640}, "resample": 2, "do_rescale": True,
                         "rescale_factor": 1 / 255, "do_normalize": False, "image_mean": [0.485, 0.456, 0.406],
                         "image_std": [0.229, 0.224, 0.225]}

CHECKPOINTS = {
    "microsoft/resnet-18": KnownCheckpoint("resnet", _RESNET18, RESNET_PREPROCESSING),
    "microsoft/resnet-34": KnownCheckpoint("resnet", dict(**_BASIC, depths=[3, 4, 6, 3]), RESNET_PREPROCESSING),
    "microsoft/resnet-50": KnownCheckpoint("resnet", {}, RESNET_PREPROCESSING),
    "microsoft/resnet-101": KnownCheckpoint("resnet", dict(depths=[3, 4, 23, 3]), RESNET_PREPROCESSING),
    "microsoft/resnet-152": KnownCheckpoint("resnet", dict(depths=[3, 8, 36, 3]), RESNET_PREPROCESSING),
    "PekingU/rtdetr_r18vd": KnownCheckpoint("rt_detr_resnet", dict(**_RT_DETR_BASIC, depths=[2, 2, 2, 2]),
                                            RT_DETR_PREPROCESSING),
    "PekingU/rtdetr_r34vd": KnownCheckpoint("rt_detr_resnet", dict(**_RT_DETR_BASIC, depths=[3, 4, 6, 3]),
                                            RT_DETR_PREPROCESSING),
    "PekingU/rtdetr_r50vd": KnownCheckpoint("rt_detr_resnet", {}, RT_DETR_PREPROCESSING),
    "PekingU/rtdetr_r101vd": KnownCheckpoint("rt_detr_resnet", dict(depths=[3, 4, 23, 3]), RT_DETR_PREPROCESSING),
}

FAMILY = Family(
    model_types={"resnet": ModelType("models.resnet:ResNetConfig", "models.resnet:ResNetBackbone",
                                     "convert.hf_resnet:TABLE", "ResNetBackbone"),
                 "rt_detr_resnet": ModelType("models.resnet:RTDetrResNetConfig", "models.resnet:ResNetBackbone",
                                             "convert.hf_rt_detr_resnet:table_for", "RTDetrResNetBackbone")},
    timm={"resnet": TimmLayout("models.timm.resnet:ResNetSpec", "models.timm.resnet:ARCHITECTURES",
                               "convert.timm_resnet:table_for")},
    checkpoints=CHECKPOINTS,
    examples={
        "resnet": dict(model_type="resnet", embedding_size=8, hidden_sizes=[16, 24], depths=[1, 2],
                       out_indices=[0, 1, 2]),
        "rt_detr_resnet": dict(model_type="rt_detr_resnet", embedding_size=8, hidden_sizes=[16, 24],
                               depths=[1, 2], out_indices=[0, 1, 2]),
        "rt_detr_resnet_basic": dict(model_type="rt_detr_resnet", layer_type="basic", embedding_size=8,
                                     hidden_sizes=[8, 16], depths=[2, 1], out_indices=[0, 1, 2]),
        "timm_resnet": dict(model_type="timm_backbone", backbone="resnet26d", out_indices=[0, 1, 2],
                            model_args={"layers": [1, 1], "channels": [8, 16], "stem_width": 8}),
    },
    benchmarks={
        # RT-DETR's R50-vd at the detector's 640x640; timm's resnet50d is the same network (PaddleClas' ResNet-vd).
        "rt_detr_r50vd": dict(model_type="rt_detr_resnet", config=dict(out_indices=[2, 3, 4]),
                              transformers=("RTDetrResNetConfig", "RTDetrResNetBackbone", {}), timm="resnet50d",
                              timm_out_indices=(2, 3, 4), size=(640, 640), channels_last=True),
        "resnet50": dict(model_type="resnet", config=dict(out_indices=[1, 2, 3, 4]),
                         transformers=("ResNetConfig", "ResNetBackbone", {}), timm="resnet50",
                         timm_out_indices=(1, 2, 3, 4), channels_last=True),
        "resnet18": dict(model_type="resnet", config=dict(**_RESNET18, out_indices=[1, 2, 3, 4]),
                         transformers=("ResNetConfig", "ResNetBackbone", _RESNET18), timm="resnet18",
                         timm_out_indices=(1, 2, 3, 4), channels_last=True, accelerator=False),
    },
)
