"""timm architectures on jaxbackbones' modules: `TimmBackboneConfig`, `TimmBackbone`, and one spec per family."""

from .backbone import (
    TIMM_ARCHITECTURES,
    TIMM_SPECS,
    TimmBackbone,
    TimmBackboneConfig,
    resolve_architecture,
    supported_architectures,
)
from .convnext import ConvNeXtSpec
from .resnet import ResNetSpec
from .spec import TimmSpec
from .swin import SwinSpec
from .vit import EvaSpec, ViTSpec

__all__ = ["TIMM_ARCHITECTURES", "TIMM_SPECS", "ConvNeXtSpec", "EvaSpec", "ResNetSpec", "SwinSpec", "TimmBackbone",
           "TimmBackboneConfig", "TimmSpec", "ViTSpec", "resolve_architecture", "supported_architectures"]
