"""HGNetV2 (PP-HGNetV2, the backbone of D-FINE, DEIM and RT-DETRv2's HGNet variants): config, modules and backbone,
feature map for feature map equal to transformers' HGNetV2Backbone (`models/hgnet_v2/modeling_hgnet_v2.py`) and,
through `models/timm/hgnet.py`, timm's `HighPerfGpuNet` (`timm/models/hgnet.py`, HGNet v1 and v2).

Quirks, as the torch sources have them:
- Every convolution is padded `(k - 1) // 2` on each side: the stem's two 2x2 convolutions get none and are
  preceded by an explicit zero pad of one row and column on the bottom and right (`F.pad(x, (0, 1, 0, 1))`).
- The stem's pooling branch is a 2x2 max-pool, stride 1, ceil mode, over that *zero-padded* map, so a zero can win
  the max where the learnable affine block makes activations negative; it is concatenated before the 2x2 branch.
- The learnable affine block (LAB: one scalar scale and bias, `scale * x + bias`) follows the activation of every
  conv layer that has one (`use_learnable_affine_block`); layers without activation (a light block's 1x1, the
  stage's depthwise downsampling) have no LAB.
- A light block is a 1x1 conv without activation, then a depthwise `kernel_size` conv with activation.
- A block concatenates its input with every layer's output, then aggregates: "se" (v2) a 1x1 conv to
  `out // 2` and a 1x1 conv to `out`, both with activation; "ese" (timm's v1) a 1x1 conv with activation, then ESE
  channel attention (mean over the map, a 1x1 conv with bias, sigmoid, times the map). Only blocks after a stage's
  first add their input back; in transformers their `drop_path` is a Dropout that is never enabled.
- A stage's downsampling is a depthwise 3x3 conv + BatchNorm, stride `stage_downsample_strides`, no activation.
- transformers applies `hidden_act` in the stem only: every conv layer of the stages is ReLU whatever it says.
- transformers reports `channels` from `[embedding_size] + hidden_sizes`, fields the modules never read (its B4
  default says 64 and 256 where the stem and first stage give 48 and 128); ours are the maps' real channels
  (`stem_channels[2]`, `stage_out_channels`). Stages are `stem` and `stage1`... one per entry of `depths`.
"""

from __future__ import annotations

from typing import ClassVar

import jax
import jax.numpy as jnp
from flax import nnx

from ..backbone import BackboneConfigMixin, BackboneModuleMixin, BackboneOutput
from ..configuration import TRAINING_DEFAULTS, PretrainedConfig, verify_training_fields
from ..initializers import full
from ..layers import BatchNorm, DropPath, checkpointed, conv2d, get_activation, max_pool
from ..training import configure as configure_training
from .common import from_channels_first, to_channels_first, validate_data_format, validate_pixel_values

_STAGE_FIELDS = ("stage_in_channels", "stage_mid_channels", "stage_out_channels", "stage_num_blocks",
                 "stage_downsample", "stage_downsample_strides", "stage_light_block", "stage_kernel_size",
                 "stage_numb_of_layers")


class HGNetV2Config(BackboneConfigMixin, PretrainedConfig):
    """transformers' HGNetV2Config: same fields, defaults (HGNetV2-B4) and `config.json`."""

    model_type = "hgnet_v2"
    defaults: ClassVar[dict] = {
        "num_channels": 3,
        "embedding_size": 64,
        "depths": [3, 4, 6, 3],
        "hidden_sizes": [256, 512, 1024, 2048],
        "hidden_act": "relu",
        "stem_channels": [3, 32, 48],
        "stem_strides": [2, 1, 1, 2, 1],
        "stage_in_channels": [48, 128, 512, 1024],
        "stage_mid_channels": [48, 96, 192, 384],
        "stage_out_channels": [128, 512, 1024, 2048],
        "stage_num_blocks": [1, 1, 3, 1],
        "stage_downsample": [False, True, True, True],
        "stage_downsample_strides": [2, 2, 2, 2],
        "stage_light_block": [False, False, True, True],
        "stage_kernel_size": [3, 3, 5, 5],
        "stage_numb_of_layers": [6, 6, 6, 6],
        "use_learnable_affine_block": False,
        "initializer_range": 0.02,
    }
    derived_keys = ("model_type", "stage_names")
    training_defaults: ClassVar[dict] = {**TRAINING_DEFAULTS, "freeze_batch_norm": False}

    def __init__(self, out_features: list[str] | None = None, out_indices: list[int] | None = None, **kwargs):
        super().__init__(**kwargs)
        for name in ("depths", "hidden_sizes", "stem_channels", "stem_strides", *_STAGE_FIELDS):
            setattr(self, name, list(getattr(self, name)))
        lengths = {name: len(getattr(self, name)) for name in _STAGE_FIELDS}
        if len(set(lengths.values())) != 1 or len(self.depths) != len(self.stage_in_channels):
            raise ValueError(f"every stage list needs one entry per stage (len(depths)={len(self.depths)} stages): "
                             f"got lengths {lengths}")
        if len(self.stem_channels) != 3 or len(self.stem_strides) != 5:
            raise ValueError(f"stem_channels needs 3 entries (input, mid, out) and stem_strides 5, got "
                             f"{self.stem_channels} and {self.stem_strides}")
        if self.stem_channels[0] != self.num_channels:
            raise ValueError(f"stem_channels[0]={self.stem_channels[0]} must equal num_channels={self.num_channels}")
        get_activation(self.hidden_act)
        self.stage_names = ["stem"] + [f"stage{idx}" for idx in range(1, len(self.depths) + 1)]
        self.set_output_features_output_indices(out_features=out_features, out_indices=out_indices)
        verify_training_fields(self)


class LearnableAffine(nnx.Module):
    """`scale * x + bias` with one learned scalar each (PP-HGNetV2's learnable affine block)."""

    def __init__(self, *, param_dtype):
        self.scale = nnx.Param(full((1,), 1.0, param_dtype))
        self.bias = nnx.Param(full((1,), 0.0, param_dtype))

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.scale[...].astype(x.dtype) * x + self.bias[...].astype(x.dtype)


class ConvBNAct(nnx.Module):
    """Convolution padded `(k - 1) // 2`, BatchNorm, then (with an activation) the activation and, with `lab`, a
    learnable affine block."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, stride: int = 1, groups: int = 1,
                 activation: str | None = "relu", lab: bool = False, dtype, param_dtype, rngs: nnx.Rngs):
        self.conv = conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=(kernel_size - 1) // 2,
                           groups=groups, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.bn = BatchNorm(out_channels, dtype=dtype, param_dtype=param_dtype)
        self.act = None if activation is None else get_activation(activation)
        self.lab = LearnableAffine(param_dtype=param_dtype) if activation is not None and lab else None

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.bn(self.conv(x))
        if self.act is not None:
            x = self.act(x)
        if self.lab is not None:
            x = self.lab(x)
        return x


class LightConvBNAct(nnx.Module):
    """A 1x1 ConvBNAct without activation, then a depthwise `kernel_size` ConvBNAct with it."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, activation: str, lab: bool, dtype,
                 param_dtype, rngs: nnx.Rngs):
        options = dict(lab=lab, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.conv1 = ConvBNAct(in_channels, out_channels, 1, activation=None, **options)
        self.conv2 = ConvBNAct(out_channels, out_channels, kernel_size, groups=out_channels, activation=activation,
                               **options)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.conv2(self.conv1(x))


class EffectiveSqueezeExcite(nnx.Module):
    """ESE: `x * sigmoid(conv1x1(mean over the map))`, the conv with a bias (timm's `EseModule`)."""

    def __init__(self, channels: int, *, dtype, param_dtype, rngs: nnx.Rngs):
        self.conv = conv2d(channels, channels, 1, use_bias=True, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        pooled = jnp.mean(x.astype(jnp.float32), axis=(1, 2), keepdims=True).astype(x.dtype)
        return x * jax.nn.sigmoid(self.conv(pooled))


def zero_pad_bottom_right(x: jax.Array) -> jax.Array:
    return jnp.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)))


class HGNetStem(nnx.Module):
    """v2 (PP-HGNetV2): `stem1` (3x3), then a 2x2 conv pair (`stem2a`, `stem2b`) beside a 2x2 stride-1 max-pool,
    both on the bottom/right zero-padded map, concatenated, then `stem3` (3x3) and `stem4` (1x1).
    `strides` are the five convolutions' (transformers' `stem_strides`; timm's (2, 1, 1, 2, 1)).

    v1 (timm's HGNet): `convs`, 3x3 convolutions along `channels` (the first stride 2), then a 3x3/2 max-pool."""

    def __init__(self, channels: tuple[int, ...], *, version: str = "v2", strides=(2, 1, 1, 2, 1),
                 activation: str = "relu", lab: bool = False, dtype, param_dtype, rngs: nnx.Rngs):
        options = dict(activation=activation, lab=lab, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.version = version
        if version == "v1":
            self.convs = nnx.List([ConvBNAct(channels[i], channels[i + 1], 3, stride=2 if i == 0 else 1, **options)
                                   for i in range(len(channels) - 1)])
            return
        in_channels, mid, out = channels
        self.stem1 = ConvBNAct(in_channels, mid, 3, stride=strides[0], **options)
        self.stem2a = ConvBNAct(mid, mid // 2, 2, stride=strides[1], **options)
        self.stem2b = ConvBNAct(mid // 2, mid, 2, stride=strides[2], **options)
        self.stem3 = ConvBNAct(mid * 2, mid, 3, stride=strides[3], **options)
        self.stem4 = ConvBNAct(mid, out, 1, stride=strides[4], **options)

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.version == "v1":
            for conv in self.convs:
                x = conv(x)
            return max_pool(x, kernel_size=3, stride=2, padding=1)
        x = zero_pad_bottom_right(self.stem1(x))
        branch = self.stem2b(zero_pad_bottom_right(self.stem2a(x)))
        pooled = max_pool(x, kernel_size=2, stride=1, padding=0)  # stride 1: ceil mode adds no window
        return self.stem4(self.stem3(jnp.concatenate([pooled, branch], axis=-1)))


class HGNetBlock(nnx.Module):
    """`layer_num` conv layers (light or not) in sequence; their outputs and the input, concatenated, aggregated
    ("se" or "ese", see the module docstring); `residual` adds the input back (through drop path)."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, layer_num: int, *, kernel_size: int,
                 residual: bool, light: bool, aggregation: str = "se", drop_path: float = 0.0,
                 activation: str = "relu", lab: bool = False, dtype, param_dtype, rngs: nnx.Rngs):
        options = dict(activation=activation, lab=lab, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        layer = LightConvBNAct if light else ConvBNAct
        self.layers = nnx.List([layer(in_channels if i == 0 else mid_channels, mid_channels, kernel_size, **options)
                                for i in range(layer_num)])
        total = in_channels + layer_num * mid_channels
        if aggregation == "se":
            self.aggregation = nnx.List([ConvBNAct(total, out_channels // 2, 1, **options),
                                         ConvBNAct(out_channels // 2, out_channels, 1, **options)])
        elif aggregation == "ese":
            self.aggregation = nnx.List([ConvBNAct(total, out_channels, 1, **options),
                                         EffectiveSqueezeExcite(out_channels, dtype=dtype, param_dtype=param_dtype,
                                                                rngs=rngs)])
        else:
            raise ValueError(f"aggregation must be 'se' or 'ese', got {aggregation!r}")
        self.residual = residual
        self.drop_path = DropPath(drop_path)

    def __call__(self, x: jax.Array, rngs: nnx.Rngs | None = None) -> jax.Array:
        outputs = [x]
        for layer in self.layers:
            outputs.append(layer(outputs[-1]))
        y = jnp.concatenate(outputs, axis=-1)
        for aggregate in self.aggregation:
            y = aggregate(y)
        return self.drop_path(y, rngs=rngs) + x if self.residual else y


class HGNetStage(nnx.Module):
    """An optional depthwise 3x3 downsampling (BatchNorm, no activation), then `num_blocks` blocks, the first
    changing channels and without residual."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, num_blocks: int, layer_num: int, *,
                 downsample: bool, stride: int, light: bool, kernel_size: int, drop_path=0.0,
                 aggregation: str = "se", activation: str = "relu", lab: bool = False, dtype, param_dtype,
                 rngs: nnx.Rngs):
        options = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.downsample = (ConvBNAct(in_channels, in_channels, 3, stride=stride, groups=in_channels, activation=None,
                                     **options) if downsample else None)
        rates = drop_path if isinstance(drop_path, (list, tuple)) else [drop_path] * num_blocks
        self.blocks = nnx.List([
            HGNetBlock(in_channels if i == 0 else out_channels, mid_channels, out_channels, layer_num,
                       kernel_size=kernel_size, residual=i != 0, light=light, aggregation=aggregation,
                       drop_path=rates[i], activation=activation, lab=lab, **options)
            for i in range(num_blocks)
        ])
        self.gradient_checkpointing = False  # set from the config by jaxbackbones.training.configure

    def __call__(self, x: jax.Array, rngs: nnx.Rngs | None = None) -> jax.Array:
        if self.downsample is not None:
            x = self.downsample(x)
        for block in self.blocks:
            x = checkpointed(self.gradient_checkpointing, lambda block, x, rngs: block(x, rngs), block, x, rngs)
        return x


class HGNetV2Backbone(BackboneModuleMixin, nnx.Module):
    """HGNetV2 feature extractor with transformers' HGNetV2Backbone semantics, in Flax NNX.

    Args:
        config: the architecture and the selected stages (`out_features` / `out_indices`).
        rngs: initialises the weights (random until loaded).
        dtype: compute dtype; BatchNorm statistics are always float32.
        param_dtype: dtype of the parameters.
        data_format: "channels_last" (default) takes and returns NHWC; "channels_first" NCHW, as transformers.

    `model(pixel_values)` (any height and width) returns a `BackboneOutput` whose `feature_maps` are the selected
    stages' outputs, in order: the stem (stride 4 with the default `stem_strides`) and the stages. The config's
    `freeze_batch_norm` (D-FINE / RT-DETR fine-tuning), `freeze_stages` and `gradient_checkpointing` apply as
    `jaxbackbones.training` describes.
    """

    def __init__(self, config: HGNetV2Config, *, rngs: nnx.Rngs, dtype=jnp.float32, param_dtype=jnp.float32,
                 data_format: str = "channels_last"):
        self.config = config
        self.data_format = validate_data_format(data_format)
        options = dict(lab=config.use_learnable_affine_block, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.stem = HGNetStem(tuple(config.stem_channels), strides=tuple(config.stem_strides),
                              activation=config.hidden_act, **options)
        self.stages = nnx.List([
            HGNetStage(config.stage_in_channels[i], config.stage_mid_channels[i], config.stage_out_channels[i],
                       config.stage_num_blocks[i], config.stage_numb_of_layers[i],
                       downsample=config.stage_downsample[i], stride=config.stage_downsample_strides[i],
                       light=config.stage_light_block[i], kernel_size=config.stage_kernel_size[i], **options)
            for i in range(len(config.stage_in_channels))
        ])
        self.num_features = (config.stem_channels[2], *config.stage_out_channels)
        reduction = 1
        for stride in config.stem_strides:
            reduction *= stride
        reductions = [reduction]
        for downsample, stride in zip(config.stage_downsample, config.stage_downsample_strides):
            reductions.append(reductions[-1] * (stride if downsample else 1))
        self.reductions = tuple(reductions)
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
