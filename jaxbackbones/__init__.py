"""jaxbackbones: vision backbones in Flax NNX that load PyTorch hub checkpoints with feature-map parity."""

from .auto import AutoBackbone, AutoConfig
from .backbone import BackboneConfigMixin, BackboneOutput
from .checkpoint import CheckpointError
from .configuration import PretrainedConfig
from .convert.rules import CheckpointMismatchError, ConversionReport
from .image_processing import AutoImageProcessor, ConvNextImageProcessor, TimmImageProcessor, ViTImageProcessor
from .models.resnet import ResNetBackbone, ResNetConfig
from .models.swin import SwinBackbone, SwinConfig

__version__ = "0.1.0"

__all__ = [
    "AutoBackbone",
    "AutoConfig",
    "AutoImageProcessor",
    "BackboneConfigMixin",
    "BackboneOutput",
    "CheckpointError",
    "CheckpointMismatchError",
    "ConversionReport",
    "ConvNextImageProcessor",
    "PretrainedConfig",
    "ResNetBackbone",
    "ResNetConfig",
    "TimmImageProcessor",
    "ViTImageProcessor",
    "SwinBackbone",
    "SwinConfig",
]
