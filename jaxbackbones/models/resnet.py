"""ResNet: configs, modules and backbone, feature-map for feature-map equal to transformers' ResNetBackbone
(transformers/models/resnet/modeling_resnet.py) and RTDetrResNetBackbone (models/rt_detr/modeling_rt_detr_resnet.py).

RT-DETR's ResNet-vd (`RTDetrResNetConfig`, same fields as `ResNetConfig`) is this ResNet with two options the
config class states (`deep_stem`, `rt_detr_shortcuts`): the deep stem (three 3x3 conv-BatchNorm-activation layers
to `embedding_size // 2`, `embedding_size // 2`, `embedding_size`, the activation `hidden_act` in all three), and its
shortcuts: a bottleneck's strided shortcut average-pools 2x2 (ceil mode) and projects at stride 1 (timm's
`avg_down`); a basic stage's first block always projects, average-pooling first where it changes channels (at stride
1 and the same width it is a plain 1x1 projection, at stride 2 and the same width a strided one).
"""

from __future__ import annotations

from typing import ClassVar

import jax
import jax.numpy as jnp
from flax import nnx

from ..backbone import BackboneConfigMixin, BackboneModuleMixin, BackboneOutput
from ..configuration import TRAINING_DEFAULTS, PretrainedConfig, verify_training_fields
from ..layers import BatchNorm, avg_pool_ceil, avg_pool_same_2x2, checkpointed, conv2d, get_activation, max_pool
from ..training import configure as configure_training
from .common import from_channels_first, to_channels_first, validate_data_format, validate_pixel_values


class ResNetConfig(BackboneConfigMixin, PretrainedConfig):
    """transformers' ResNetConfig: same fields, defaults (ResNet-50) and `config.json`.

    Stages are `stem` (after the max-pool) and `stage1`... one per entry of `depths`.
    """

    model_type = "resnet"
    layer_types: ClassVar[tuple[str, ...]] = ("basic", "bottleneck")
    defaults: ClassVar[dict] = {
        "num_channels": 3,
        "embedding_size": 64,
        "hidden_sizes": [256, 512, 1024, 2048],
        "depths": [3, 4, 6, 3],
        "layer_type": "bottleneck",
        "hidden_act": "relu",
        "downsample_in_first_stage": False,
        "downsample_in_bottleneck": False,
    }
    derived_keys = ("model_type", "stage_names")
    # jaxbackbones' fine-tuning switches (see jaxbackbones.training); in config.json only when set.
    training_defaults: ClassVar[dict] = {**TRAINING_DEFAULTS, "freeze_batch_norm": False}
    # Layout options of the config class, not config.json fields (transformers' ResNet has neither; RT-DETR's both).
    deep_stem: ClassVar[bool] = False
    rt_detr_shortcuts: ClassVar[bool] = False

    def __init__(self, out_features: list[str] | None = None, out_indices: list[int] | None = None, **kwargs):
        super().__init__(**kwargs)
        self.hidden_sizes = list(self.hidden_sizes)
        self.depths = list(self.depths)
        if self.layer_type not in self.layer_types:
            raise ValueError(f"layer_type={self.layer_type} is not one of {','.join(self.layer_types)}")
        if len(self.hidden_sizes) != len(self.depths):
            raise ValueError(
                f"hidden_sizes {self.hidden_sizes} and depths {self.depths} must have one entry per stage"
            )
        get_activation(self.hidden_act)
        self.stage_names = ["stem"] + [f"stage{idx}" for idx in range(1, len(self.depths) + 1)]
        self.set_output_features_output_indices(out_features=out_features, out_indices=out_indices)
        verify_training_fields(self)
        self.verify_layout()

    @property
    def deep_stem_widths(self) -> tuple[int, int] | None:
        """The widths of the deep stem's first two convolutions (None: a 7x7 stem)."""
        return (self.embedding_size // 2,) * 2 if self.deep_stem else None

    def verify_layout(self) -> None:
        """Extra checks of a layout's options (none for transformers' ResNet)."""


class RTDetrResNetConfig(ResNetConfig):
    """transformers' RTDetrResNetConfig (`model_type` "rt_detr_resnet"): the fields, defaults (R50-vd) and
    `config.json` of `ResNetConfig`, for RT-DETR's ResNet-vd: deep stem, average-pool shortcuts (module docstring).
    Stages are `stem` (after the max-pool, stride 4) and `stage1`... (RT-DETR takes `out_indices` [2, 3, 4]).

    A basic stage that changes channels must downsample: transformers' basic layer average-pools such a shortcut
    (halving it) whatever the stride, so at stride 1 its sum does not fit (torch fails in the forward pass).
    """

    model_type = "rt_detr_resnet"
    deep_stem: ClassVar[bool] = True
    rt_detr_shortcuts: ClassVar[bool] = True

    def verify_layout(self) -> None:
        if self.layer_type != "basic":
            return
        in_channels = [self.embedding_size, *self.hidden_sizes[:-1]]
        for index, (width_in, width_out) in enumerate(zip(in_channels, self.hidden_sizes)):
            stride = 2 if index > 0 or self.downsample_in_first_stage else 1
            if width_in != width_out and stride == 1:
                raise ValueError(
                    f"stage{index + 1} of a basic RT-DETR ResNet changes channels ({width_in} -> {width_out}) at "
                    "stride 1: RTDetrResNetBasicLayer average-pools (halves) that shortcut, so the residual sum does "
                    "not fit; use embedding_size == hidden_sizes[0] or downsample_in_first_stage=True")


class ResNetStem(nnx.Module):
    """7x7/2 convolution, BatchNorm, activation, 3x3/2 max-pool.

    `deep_widths=(w0, w1)` makes it a deep stem (timm's `stem_type="deep"` of the c/d/s/t variants): 3x3/2 to w0,
    BatchNorm, activation, 3x3 to w1, BatchNorm, activation, then the 3x3 `conv` to `embedding_size` replaces the
    7x7. `embed` is everything before the max-pool (timm's `act1` feature), `pool` the max-pool.
    """

    def __init__(self, config: ResNetConfig, *, deep_widths: tuple[int, int] | None = None, dtype, param_dtype,
                 rngs: nnx.Rngs):
        options = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        if deep_widths is None:
            self.deep_convs = self.deep_bns = None
            self.conv = conv2d(config.num_channels, config.embedding_size, 7, stride=2, **options)
        else:
            w0, w1 = deep_widths
            self.deep_convs = nnx.List([conv2d(config.num_channels, w0, 3, stride=2, **options),
                                        conv2d(w0, w1, 3, **options)])
            self.deep_bns = nnx.List([BatchNorm(w, dtype=dtype, param_dtype=param_dtype) for w in (w0, w1)])
            self.conv = conv2d(w1, config.embedding_size, 3, **options)
        self.bn = BatchNorm(config.embedding_size, dtype=dtype, param_dtype=param_dtype)
        self.act = get_activation(config.hidden_act)

    def embed(self, x: jax.Array) -> jax.Array:
        if self.deep_convs is not None:
            for conv, bn in zip(self.deep_convs, self.deep_bns):
                x = self.act(bn(conv(x)))
        return self.act(self.bn(self.conv(x)))

    def pool(self, x: jax.Array) -> jax.Array:
        return max_pool(x, kernel_size=3, stride=2, padding=1)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.pool(self.embed(x))


class ResNetShortcut(nnx.Module):
    """1x1 projection with BatchNorm, strided where the block downsamples.

    With `avg_down` (timm's d/t variants, timm's `downsample_avg`) a strided shortcut first average-pools (stride x
    stride, ceil mode, padding not counted) and then projects with stride 1. In a dilated stage (`dilation` > 1,
    stride 1) the pool is timm's `AvgPool2dSame(2, 1)`: a 2x2 window at stride 1 over the input zero-padded by one
    row and column at the bottom and right, the zeros counted (`avg_pool_same_2x2`).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, *, avg_down: bool = False,
                 dilation: int = 1, dtype, param_dtype, rngs: nnx.Rngs):
        if stride != 1 and dilation != 1:
            raise ValueError(f"a dilated shortcut has stride 1, got stride={stride} with dilation={dilation}")
        self.pool_stride = stride if avg_down and stride != 1 else 1
        self.same_pool = avg_down and dilation > 1
        self.conv = conv2d(in_channels, out_channels, 1, stride=stride if self.pool_stride == 1 else 1, dtype=dtype,
                           param_dtype=param_dtype, rngs=rngs)
        self.bn = BatchNorm(out_channels, dtype=dtype, param_dtype=param_dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.pool_stride != 1:
            x = avg_pool_ceil(x, self.pool_stride, self.pool_stride)
        elif self.same_pool:
            x = avg_pool_same_2x2(x)
        return self.bn(self.conv(x))


class ResNetBlock(nnx.Module):
    """A residual block: two 3x3 convolutions (basic) or 1x1-3x3-1x1 (bottleneck), each with BatchNorm.

    The shortcut is projected when the block changes channels or stride (always with `project_shortcut`, the first
    block of an RT-DETR basic stage). In a bottleneck the stride sits on
    the 3x3 convolution, or on the first 1x1 with `stride_in_first_conv` (transformers'
    `downsample_in_bottleneck`). As in transformers, `activation` (`hidden_act`) applies after the residual
    sum only; the activations between the convolutions are always ReLU.

    Dilation (timm's `output_stride` 8 / 16): the block's first 3x3 (a basic block's first, a bottleneck's only
    one) has dilation `first_dilation` (the previous stage's, in a stage's first block), a basic block's second 3x3
    has `dilation`, each padded by its dilation; the shortcut's pool follows `dilation` (see ResNetShortcut).
    """

    def __init__(self, in_channels: int, out_channels: int, *, bottleneck: bool, stride: int, activation: str,
                 stride_in_first_conv: bool = False, mid_channels: int | None = None, groups: int = 1,
                 avg_down: bool = False, dilation: int = 1, first_dilation: int | None = None,
                 project_shortcut: bool = False, dtype, param_dtype, rngs: nnx.Rngs):
        # mid_channels and groups: the bottleneck's inner width and the 3x3's groups (ResNeXt, wide ResNets).
        if bottleneck:
            mid_channels = out_channels // 4 if mid_channels is None else mid_channels
            kernel_sizes = (1, 3, 1)
            widths = (mid_channels, mid_channels, out_channels)
            strides = (stride, 1, 1) if stride_in_first_conv else (1, stride, 1)
            conv_groups = (1, groups, 1)
            dilations = (1, first_dilation or dilation, 1)
        else:
            if groups != 1 or mid_channels not in (None, out_channels):
                raise ValueError(f"a basic block has no grouped or widened convolution, got groups={groups}, "
                                 f"mid_channels={mid_channels} for {out_channels} channels")
            kernel_sizes, widths, strides, conv_groups = (3, 3), (out_channels, out_channels), (stride, 1), (1, 1)
            dilations = (first_dilation or dilation, dilation)
        channels = (in_channels, *widths)
        self.convs = nnx.List([
            conv2d(channels[i], channels[i + 1], kernel_sizes[i], stride=strides[i], groups=conv_groups[i],
                   dilation=dilations[i], dtype=dtype, param_dtype=param_dtype, rngs=rngs)
            for i in range(len(widths))
        ])
        self.bns = nnx.List([BatchNorm(width, dtype=dtype, param_dtype=param_dtype) for width in widths])
        if in_channels != out_channels or stride != 1 or project_shortcut:
            self.shortcut = ResNetShortcut(in_channels, out_channels, stride, avg_down=avg_down, dilation=dilation,
                                           dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        else:
            self.shortcut = None
        self.act = get_activation(activation)

    def __call__(self, x: jax.Array) -> jax.Array:
        residual = x if self.shortcut is None else self.shortcut(x)
        last = len(self.convs) - 1
        for i, (conv, bn) in enumerate(zip(self.convs, self.bns)):
            x = bn(conv(x))
            if i != last:
                x = jax.nn.relu(x)
        return self.act(x + residual)


class ResNetStage(nnx.Module):
    """`depth` blocks; the first changes stride and channels. `block_options` (`mid_channels`, `groups`,
    `avg_down`) go to every block (see ResNetBlock). A dilated stage (`dilation` > 1, stride 1) dilates every
    block's 3x3 convolutions; its first block's first 3x3 has `first_dilation` (timm's `make_blocks`: the previous
    stage's dilation), the later blocks' `dilation`."""

    def __init__(self, config: ResNetConfig, in_channels: int, out_channels: int, depth: int, stride: int, *,
                 dilation: int = 1, first_dilation: int | None = None, dtype, param_dtype, rngs: nnx.Rngs,
                 **block_options):
        bottleneck = config.layer_type == "bottleneck"
        project_first = False
        if config.rt_detr_shortcuts:  # see the module docstring
            block_options["avg_down"] = bottleneck or in_channels != out_channels
            project_first = not bottleneck
        self.blocks = nnx.List([
            ResNetBlock(
                in_channels if i == 0 else out_channels,
                out_channels,
                bottleneck=bottleneck,
                stride=stride if i == 0 else 1,
                activation=config.hidden_act,
                stride_in_first_conv=config.downsample_in_bottleneck,
                dilation=dilation,
                first_dilation=(first_dilation or dilation) if i == 0 else dilation,
                project_shortcut=project_first and i == 0,
                dtype=dtype,
                param_dtype=param_dtype,
                rngs=rngs,
                **block_options,
            )
            for i in range(depth)
        ])
        self.gradient_checkpointing = False  # set from the config by jaxbackbones.training.configure

    def __call__(self, x: jax.Array) -> jax.Array:
        for block in self.blocks:
            x = checkpointed(self.gradient_checkpointing, lambda block, x: block(x), block, x)
        return x


class ResNetBackbone(BackboneModuleMixin, nnx.Module):
    """ResNet feature extractor with transformers' ResNetBackbone (and RTDetrResNetBackbone) semantics, in Flax NNX.

    Args:
        config: the architecture and the selected stages (`out_features` / `out_indices`).
        rngs: initialises the weights (random until loaded).
        dtype: compute dtype; BatchNorm statistics are always float32.
        param_dtype: dtype of the parameters.
        data_format: "channels_last" (default) takes and returns NHWC; "channels_first" NCHW, as transformers.

    Calling `model(pixel_values)` with pixel_values of shape (batch, height, width, num_channels) (any height
    and width) returns a `BackboneOutput` whose `feature_maps` are the selected stages' outputs, in order.
    The stem map has stride 4, stage k stride 4 * 2**(k-1) (one more factor 2 with
    `downsample_in_first_stage`). The config's `freeze_batch_norm`, `freeze_stages` and `gradient_checkpointing`
    apply as `jaxbackbones.training` describes.
    """

    def __init__(self, config: ResNetConfig, *, rngs: nnx.Rngs, dtype=jnp.float32, param_dtype=jnp.float32,
                 data_format: str = "channels_last"):
        self.config = config
        self.data_format = validate_data_format(data_format)
        self.num_features = (config.embedding_size, *config.hidden_sizes)
        first_stride = 2 if config.downsample_in_first_stage else 1
        self.reductions = (4, *(4 * first_stride * 2**i for i in range(len(config.depths))))
        self.stem = ResNetStem(config, deep_widths=config.deep_stem_widths, dtype=dtype, param_dtype=param_dtype,
                               rngs=rngs)
        in_channels = [config.embedding_size, *config.hidden_sizes[:-1]]
        self.stages = nnx.List([
            ResNetStage(config, in_channels[i], config.hidden_sizes[i], config.depths[i],
                        first_stride if i == 0 else 2, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
            for i in range(len(config.depths))
        ])
        self.dtype = dtype
        configure_training(self)

    def stage_paths(self) -> dict[str, list[tuple]]:
        """State-path prefixes of what each stage owns (what `freeze_stages` freezes)."""
        return {"stem": [("stem",)], **{f"stage{i + 1}": [("stages", i)] for i in range(len(self.stages))}}

    def __call__(self, pixel_values: jax.Array, output_hidden_states: bool = False) -> BackboneOutput:
        pixel_values = validate_pixel_values(pixel_values, self.config.num_channels, self.data_format)
        x = self.stem(from_channels_first(pixel_values, self.data_format).astype(self.dtype))
        hidden_states = [x]
        for stage in self.stages:
            x = stage(x)
            hidden_states.append(x)
        hidden_states = tuple(to_channels_first(h, self.data_format) for h in hidden_states)
        feature_maps = tuple(hidden_states[self.stage_names.index(name)] for name in self.out_features)
        return BackboneOutput(feature_maps=feature_maps, hidden_states=hidden_states if output_hidden_states else None)
