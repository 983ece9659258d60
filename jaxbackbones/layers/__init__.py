"""Building blocks shared by the model families, written to match torch's numerics.

By concern: `norms` (activations, BatchNorm, LayerNorm, GlobalResponseNorm), `convolutions` (convolutions and
pools, with their CPU rewrites), `positions` (position-embedding resampling, rotary positions), `attention`
(self-attention, MLP), `residual` (drop path, layer scale, checkpointing), and `rewrites`, the one registry of
backend-specific rewrites every use site asks. Every block is importable from here (`layers.X`).
"""

from . import rewrites
from .attention import Attention, Mlp, dot_product_attention
from .convolutions import (avg_pool_ceil, avg_pool_same_2x2, conv2d, conv_general_dilated, depthwise_conv_shifted,
                           max_pool)
from .norms import ACTIVATIONS, BatchNorm, GlobalResponseNorm, LayerNorm, fusion_fence, get_activation, layer_norm
from .positions import (RotaryPositions, apply_rotary, bicubic_resize_matrix, linear_resize_matrix,
                        relative_position_indices, relative_positions, resize_bicubic, rope_patch_coordinates)
from .residual import DropPath, LayerScale, checkpointed, drop_path_rates

__all__ = [
    "ACTIVATIONS", "Attention", "BatchNorm", "DropPath", "GlobalResponseNorm", "LayerNorm", "LayerScale", "Mlp",
    "RotaryPositions", "apply_rotary", "avg_pool_ceil", "avg_pool_same_2x2", "bicubic_resize_matrix", "checkpointed",
    "conv2d", "conv_general_dilated", "depthwise_conv_shifted", "dot_product_attention", "drop_path_rates",
    "fusion_fence", "get_activation", "layer_norm", "linear_resize_matrix", "max_pool", "relative_position_indices",
    "relative_positions", "resize_bicubic", "rewrites", "rope_patch_coordinates",
]
