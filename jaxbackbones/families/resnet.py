"""ResNet: transformers' ResNet (microsoft/resnet-*), RT-DETR's ResNet-vd (`rt_detr_resnet`) and timm's ResNets
(`models/resnet.py`, `models/timm/resnet.py`, `convert/hf_resnet.py`, `convert/hf_rt_detr_resnet.py`,
`convert/timm_resnet.py`, tests/test_resnet.py, test_rt_detr_resnet.py, test_timm.py).

The RT-DETR rows are the `backbone_config` of the detectors PekingU/rtdetr_r{18,34,50,101}vd and
PekingU/rtdetr_v2_r{18,34,50,101}vd (their `config.json` is an `rt_detr` / `rt_detr_v2` model holding it; the weights
sit under the detector's `model.backbone.model.` prefix; transformers' conversion scripts state the sizes), as loading
the detector gives it: stages 2-4, BatchNorm frozen; with the detector's RTDetrImageProcessor.

The DETR rows (and Table Transformer's) are the timm ResNets DETR-style detectors build from `use_timm_backbone` +
`backbone` (`timm_backbone` configs, as `heads.py` derives them: DETR's stages 1-4, Deformable DETR's 2-4, DC5's
output stride 16), BatchNorm frozen, with the detector's processor.
"""

from ..registry import Family, KnownCheckpoint, ModelType, TimmLayout
from .preprocessing import DETR_PREPROCESSING, RESNET_PREPROCESSING, RT_DETR_PREPROCESSING

_BASIC = dict(layer_type="basic", hidden_sizes=[64, 128, 256, 512])
_RESNET18 = dict(**_BASIC, depths=[2, 2, 2, 2])

# RTDetrConfig's and RTDetrV2Config's backbone_config: RTDetrResNetConfig with stages 2-4; frozen as the head runs it.
_RT_DETR = dict(out_indices=[2, 3, 4], freeze_batch_norm=True)
_RT_DETR_SIZES = {"r18vd": dict(layer_type="basic", hidden_sizes=[64, 128, 256, 512], depths=[2, 2, 2, 2]),
                  "r34vd": dict(layer_type="basic", hidden_sizes=[64, 128, 256, 512], depths=[3, 4, 6, 3]),
                  "r50vd": {},
                  "r101vd": dict(depths=[3, 4, 23, 3])}

CHECKPOINTS = {
    "microsoft/resnet-18": KnownCheckpoint("resnet", _RESNET18, RESNET_PREPROCESSING),
    "microsoft/resnet-34": KnownCheckpoint("resnet", dict(**_BASIC, depths=[3, 4, 6, 3]), RESNET_PREPROCESSING),
    "microsoft/resnet-50": KnownCheckpoint("resnet", {}, RESNET_PREPROCESSING),
    "microsoft/resnet-101": KnownCheckpoint("resnet", dict(depths=[3, 4, 23, 3]), RESNET_PREPROCESSING),
    "microsoft/resnet-152": KnownCheckpoint("resnet", dict(depths=[3, 8, 36, 3]), RESNET_PREPROCESSING),
    **{f"PekingU/rtdetr_{version}{size}": KnownCheckpoint("rt_detr_resnet", {**_RT_DETR, **config},
                                                             RT_DETR_PREPROCESSING)
       for version in ("", "v2_") for size, config in _RT_DETR_SIZES.items()},
    **{repo: KnownCheckpoint("timm_backbone", dict(backbone=backbone, use_pretrained_backbone=False,
                                                   freeze_batch_norm_2d=True, **options),
                             {**DETR_PREPROCESSING, "image_processor_type": processor})
       for repo, backbone, options, processor in (
           ("facebook/detr-resnet-50", "resnet50", dict(out_indices=[1, 2, 3, 4]), "DetrImageProcessor"),
           ("facebook/detr-resnet-101", "resnet101", dict(out_indices=[1, 2, 3, 4]), "DetrImageProcessor"),
           ("facebook/detr-resnet-50-dc5", "resnet50", dict(out_indices=[1, 2, 3, 4], output_stride=16),
            "DetrImageProcessor"),
           ("microsoft/conditional-detr-resnet-50", "resnet50", dict(out_indices=[1, 2, 3, 4]),
            "ConditionalDetrImageProcessor"),
           ("SenseTime/deformable-detr", "resnet50", dict(out_indices=[2, 3, 4]), "DeformableDetrImageProcessor"))},
    # Table Transformer (convert_table_transformer_to_hf.py): TableTransformerConfig(backbone="resnet18") in DETR's
    # timm layout, with DetrImageProcessor(max_size=800 for detection, 1000 for structure recognition): the longest
    # edge, as the hub files of that time state it.
    **{f"microsoft/table-transformer-{task}": KnownCheckpoint(
        "timm_backbone", dict(backbone="resnet18", use_pretrained_backbone=False, freeze_batch_norm_2d=True,
                              out_indices=[1, 2, 3, 4]),
        {**DETR_PREPROCESSING, "size": {"shortest_edge": 800, "longest_edge": longest}})
       for task, longest in (("detection", 800), ("structure-recognition", 1000))},
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
