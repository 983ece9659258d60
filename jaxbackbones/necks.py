"""Necks that consume a backbone's `feature_maps` and `channels`: a feature pyramid network.

    model = AutoBackbone.from_pretrained("microsoft/resnet-50", out_features=["stage1", "stage2", "stage3", "stage4"])
    fpn = FPN(model.channels, 256, rngs=nnx.Rngs(0))
    pyramid = fpn(model(pixel_values).feature_maps)     # 4 maps of 256 channels, strides 4..32
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from .backbone import BackboneOutput
from .layers import max_pool
from .models.common import from_channels_first, to_channels_first, validate_data_format

# torchvision's FPN initialises its convolutions with kaiming_uniform_(a=1): uniform, bound sqrt(3 / fan_in).
_fpn_kernel_init = nnx.initializers.variance_scaling(1.0, "fan_in", "uniform")


def nearest_resize(x: jax.Array, height: int, width: int) -> jax.Array:
    """NHWC nearest-neighbour resize exactly as torch's `F.interpolate(mode="nearest", size=...)` picks pixels:
    source index floor(dst * (in / out)), in float32 as torch computes it; the indices are numpy constants."""
    def index(size_in, size_out):
        scale = np.float32(size_in) / np.float32(size_out)
        source = np.floor(np.arange(size_out, dtype=np.float32) * scale).astype(np.int32)
        return np.minimum(source, size_in - 1)

    return x[:, index(x.shape[1], height)][:, :, index(x.shape[2], width)]


class FPN(nnx.Module):
    """Feature pyramid network (Lin et al. 2017), numerically torchvision's `FeaturePyramidNetwork`.

    Each input map gets a 1x1 lateral convolution to `out_channels`; from the coarsest map down, the running map is
    upsampled (nearest) to the next map's size and added to its lateral; each sum goes through a 3x3 convolution.
    With `extra_pool=True` a stride-2 subsampling of the coarsest output is appended (torchvision's
    `LastLevelMaxPool`, the "pool" level of Faster R-CNN).

    Args:
        in_channels: channels of the input maps, finest first (`model.channels`).
        out_channels: channels of every output map.
        data_format: layout of the maps in and out ("channels_last" NHWC, or "channels_first" NCHW, as the backbone).

    `fpn(feature_maps)` takes the maps (a sequence, or the backbone's `BackboneOutput`) and returns a tuple of
    `len(in_channels)` (+1) maps, finest first, each of the size of its input.
    """

    def __init__(self, in_channels: Sequence[int], out_channels: int, *, extra_pool: bool = False,
                 data_format: str = "channels_last", dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs):
        if not in_channels or any(int(c) < 1 for c in in_channels):
            raise ValueError(f"in_channels must list the (positive) channels of each input map, got {in_channels}")

        def conv(cin, kernel):
            pad = kernel // 2
            return nnx.Conv(cin, out_channels, kernel_size=(kernel, kernel), padding=((pad, pad), (pad, pad)),
                            kernel_init=_fpn_kernel_init, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

        self.in_channels = tuple(int(c) for c in in_channels)
        self.out_channels = out_channels
        self.laterals = nnx.List([conv(c, 1) for c in self.in_channels])
        self.outputs = nnx.List([conv(out_channels, 3) for _ in self.in_channels])
        self.extra_pool = extra_pool
        self.data_format = validate_data_format(data_format)

    def __call__(self, feature_maps: Sequence[jax.Array] | BackboneOutput) -> tuple[jax.Array, ...]:
        if isinstance(feature_maps, BackboneOutput):
            feature_maps = feature_maps.feature_maps
        maps = [from_channels_first(x, self.data_format) for x in feature_maps]
        channels = tuple(x.shape[-1] for x in maps)
        if channels != self.in_channels:
            raise ValueError(f"FPN was built for maps with channels {list(self.in_channels)}, got {list(channels)} "
                             f"(data_format={self.data_format!r})")
        running = self.laterals[-1](maps[-1])
        results = [self.outputs[-1](running)]
        for index in range(len(maps) - 2, -1, -1):
            lateral = self.laterals[index](maps[index])
            running = lateral + nearest_resize(running, lateral.shape[1], lateral.shape[2])
            results.insert(0, self.outputs[index](running))
        if self.extra_pool:
            results.append(max_pool(results[-1], kernel_size=1, stride=2, padding=0))
        return tuple(to_channels_first(x, self.data_format) for x in results)
