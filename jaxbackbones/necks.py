"""Necks that consume a backbone's `feature_maps` and `channels`: a feature pyramid network, and ViTDet's simple
feature pyramid for plain ViTs.

    model = AutoBackbone.from_pretrained("microsoft/resnet-50", out_features=["stage1", "stage2", "stage3", "stage4"])
    fpn = FPN(model.channels, 256, rngs=nnx.Rngs(0))
    pyramid = fpn(model(pixel_values).feature_maps)     # 4 maps of 256 channels, strides 4..32

    vit = AutoBackbone.from_pretrained("facebook/dinov2-small", out_indices=[-1])
    sfp = SimpleFeaturePyramid(vit.channels[0], 256, rngs=nnx.Rngs(0))
    pyramid = sfp(vit(pixel_values).feature_maps)      # 4 maps of 256 channels at 4x, 2x, 1x, 1/2x the ViT's grid
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from .backbone import BackboneOutput
from .layers import get_activation, layer_norm, max_pool
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


class ConvTranspose2x2(nnx.Module):
    """A 2x2 transposed convolution with stride 2 (torch's `ConvTranspose2d(cin, cout, 2, stride=2)`): every input
    pixel becomes a 2x2 block, `out[2i + a, 2j + b] = x[i, j] @ kernel[a, b] + bias`. The blocks do not overlap, so it
    is one matrix product and a reshape; `kernel` is (2, 2, cin, cout) (torch's (cin, cout, 2, 2), transposed)."""

    def __init__(self, in_channels: int, out_channels: int, *, dtype=jnp.float32, param_dtype=jnp.float32,
                 rngs: nnx.Rngs):
        init = nnx.initializers.variance_scaling(1.0 / 3, "fan_in", "uniform", in_axis=-2, out_axis=-1)
        self.kernel = nnx.Param(init(rngs.params(), (2, 2, in_channels, out_channels), param_dtype))
        self.bias = nnx.Param(jnp.zeros((out_channels,), param_dtype))
        self.dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        batch, height, width, _ = x.shape
        kernel = self.kernel[...].astype(self.dtype)
        y = jnp.einsum("nhwc,abco->nhawbo", x.astype(self.dtype), kernel)
        return y.reshape(batch, 2 * height, 2 * width, -1) + self.bias[...].astype(self.dtype)


class SimpleFeaturePyramid(nnx.Module):
    """ViTDet's simple feature pyramid (Li et al. 2022, "Exploring Plain Vision Transformer Backbones for Object
    Detection", as detectron2's `SimpleFeaturePyramid` builds it): one stride-16 map of a plain ViT (DINOv2, DINOv3,
    SAM, ViTDet...) to four maps at 4x, 2x, 1x and 1/2x its resolution (strides 4, 8, 16, 32 for a patch-16 ViT).

    Per scale: 4x: 2x2 transposed conv stride 2 to C/2, LayerNorm, GELU, 2x2 transposed conv stride 2 to C/4; 2x: 2x2
    transposed conv stride 2 to C/2; 1x: the map itself; 1/2x: 2x2 max pool stride 2. Then each: 1x1 conv to
    `out_channels` + LayerNorm, 3x3 conv (padded 1) + LayerNorm, the convolutions without bias (detectron2's
    `use_bias = norm == ""`). LayerNorms are over channels, eps 1e-6.

    There is no torch reference in transformers or timm: tests/test_simple_feature_pyramid.py checks it by shape, by gradients
    (finite and non-zero for every parameter) and against a small hand-written numpy computation.

    Args:
        in_channels: channels of the input map (`model.channels[0]`); divisible by 4 for the 4x level.
        out_channels: channels of every output map.
        scales: the levels, from (4.0, 2.0, 1.0, 0.5), finest first.
        data_format: layout of the maps in and out ("channels_last" NHWC, or "channels_first" NCHW).

    `sfp(x)` takes the map (an array, a one-map sequence, or a `BackboneOutput` with one feature map) and returns a
    tuple of maps, finest first.
    """

    def __init__(self, in_channels: int, out_channels: int, *, scales: Sequence[float] = (4.0, 2.0, 1.0, 0.5),
                 data_format: str = "channels_last", dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs):
        scales = tuple(float(scale) for scale in scales)
        if not scales or any(scale not in (4.0, 2.0, 1.0, 0.5) for scale in scales) or len(set(scales)) != len(scales):
            raise ValueError(f"scales must be distinct values of (4.0, 2.0, 1.0, 0.5), got {scales}")
        if 4.0 in scales and in_channels % 4:
            raise ValueError(f"the 4x level needs in_channels divisible by 4, got {in_channels}")
        options = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)

        def conv(cin, kernel):
            pad = kernel // 2
            return nnx.Conv(cin, out_channels, kernel_size=(kernel, kernel), padding=((pad, pad), (pad, pad)),
                            use_bias=False, kernel_init=_fpn_kernel_init, dtype=dtype, param_dtype=param_dtype,
                            rngs=rngs)

        self.in_channels, self.out_channels, self.scales = in_channels, out_channels, scales
        self.data_format = validate_data_format(data_format)
        self.act = get_activation("gelu")
        ups, lateral, output = [], [], []
        for scale in scales:
            if scale == 4.0:
                up = nnx.List([ConvTranspose2x2(in_channels, in_channels // 2, **options),
                               layer_norm(in_channels // 2, eps=1e-6, **options),
                               ConvTranspose2x2(in_channels // 2, in_channels // 4, **options)])
                width = in_channels // 4
            elif scale == 2.0:
                up, width = nnx.List([ConvTranspose2x2(in_channels, in_channels // 2, **options)]), in_channels // 2
            else:
                up, width = nnx.List([]), in_channels
            ups.append(up)
            lateral.append(nnx.List([conv(width, 1), layer_norm(out_channels, eps=1e-6, **options)]))
            output.append(nnx.List([conv(out_channels, 3), layer_norm(out_channels, eps=1e-6, **options)]))
        self.ups, self.laterals, self.outputs = nnx.List(ups), nnx.List(lateral), nnx.List(output)

    def __call__(self, x) -> tuple[jax.Array, ...]:
        if isinstance(x, BackboneOutput):
            x = x.feature_maps
        if isinstance(x, (list, tuple)):
            if len(x) != 1:
                raise ValueError(f"SimpleFeaturePyramid takes one map (the ViT's last), got {len(x)}")
            x = x[0]
        x = from_channels_first(x, self.data_format)
        if x.ndim != 4 or x.shape[-1] != self.in_channels:
            raise ValueError(f"SimpleFeaturePyramid was built for a map of {self.in_channels} channels, got shape "
                             f"{tuple(x.shape)} (data_format={self.data_format!r})")
        results = []
        for scale, up, lateral, output in zip(self.scales, self.ups, self.laterals, self.outputs):
            if scale == 4.0:
                y = up[2](self.act(up[1](up[0](x))))
            elif scale == 2.0:
                y = up[0](x)
            elif scale == 0.5:
                y = max_pool(x, kernel_size=2, stride=2, padding=0)
            else:
                y = x
            y = lateral[1](lateral[0](y))
            results.append(output[1](output[0](y)))
        return tuple(to_channels_first(y, self.data_format) for y in results)
