"""jaxbackbones: vision backbones in Flax NNX that load PyTorch hub checkpoints with feature-map parity."""

from . import sharding, training
from .auto import AutoBackbone, AutoConfig
from .backbone import BackboneConfigMixin, BackboneOutput
from .backbone_utils import load_backbone
from .checkpoint import CheckpointError
from .configuration import PretrainedConfig
from .convert.rules import CheckpointMismatchError, ConversionReport
from .image_processing import (
    AutoImageProcessor,
    BitImageProcessor,
    ConvNextImageProcessor,
    DINOv3ViTImageProcessor,
    TimmImageProcessor,
    ViTImageProcessor,
)
from .models.convnext import ConvNextBackbone, ConvNextConfig, ConvNextV2Config, DINOv3ConvNextConfig
from .models.hgnet_v2 import HGNetV2Backbone, HGNetV2Config
from .models.hiera import HieraBackbone, HieraConfig
from .models.hieradet import Sam2VideoVisionConfig, Sam2VisionBackbone, Sam2VisionConfig
from .models.pvt_v2 import PvtV2Backbone, PvtV2Config, SegformerConfig
from .models.resnet import ResNetBackbone, ResNetConfig
from .models.swin import SwinBackbone, SwinConfig
from .models.timm import TimmBackbone, TimmBackboneConfig
from .models.vit import DINOv3ViTBackbone, Dinov2Backbone, Dinov2WithRegistersBackbone
from .models.vit_configs import DINOv3ViTConfig, Dinov2Config, Dinov2WithRegistersConfig
from .models.vitdet import SamVisionBackbone, VitDetBackbone
from .models.vitdet_configs import SamConfig, SamVisionConfig, VitDetConfig
from .necks import FPN, SimpleFeaturePyramid
from .training import trainable_filter

__version__ = "0.1.0"

__all__ = [
    "AutoBackbone",
    "AutoConfig",
    "AutoImageProcessor",
    "BackboneConfigMixin",
    "BackboneOutput",
    "BitImageProcessor",
    "CheckpointError",
    "CheckpointMismatchError",
    "ConversionReport",
    "ConvNextBackbone",
    "ConvNextConfig",
    "ConvNextImageProcessor",
    "ConvNextV2Config",
    "DINOv3ConvNextConfig",
    "DINOv3ViTImageProcessor",
    "DINOv3ViTBackbone",
    "DINOv3ViTConfig",
    "Dinov2Backbone",
    "Dinov2Config",
    "Dinov2WithRegistersBackbone",
    "Dinov2WithRegistersConfig",
    "FPN",
    "SimpleFeaturePyramid",
    "HGNetV2Backbone",
    "HGNetV2Config",
    "PretrainedConfig",
    "HieraBackbone",
    "HieraConfig",
    "PvtV2Backbone",
    "PvtV2Config",
    "SegformerConfig",
    "load_backbone",
    "sharding",
    "trainable_filter",
    "training",
    "ResNetBackbone",
    "ResNetConfig",
    "Sam2VideoVisionConfig",
    "Sam2VisionBackbone",
    "Sam2VisionConfig",
    "TimmImageProcessor",
    "ViTImageProcessor",
    "SwinBackbone",
    "SwinConfig",
    "TimmBackbone",
    "TimmBackboneConfig",
    "SamConfig",
    "SamVisionBackbone",
    "SamVisionConfig",
    "VitDetBackbone",
    "VitDetConfig",
]
