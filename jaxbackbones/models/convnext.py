"""ConvNeXt: one implementation for ConvNeXt v1, ConvNeXt V2 and DINOv3-ConvNeXt, feature-map for feature-map equal to
transformers' `ConvNextBackbone`, `ConvNextV2Backbone` and `DINOv3ConvNextBackbone` (and, through
`models/timm/convnext.py`, to timm's `ConvNeXt`).

Every variant is a stem (a patch convolution and a LayerNorm), then stages of blocks; each stage after the first
starts with a downsampling (LayerNorm, then a 2x2 stride-2 convolution). A block is a 7x7 depthwise convolution,
LayerNorm, Linear to 4C, activation, (V2: Global Response Normalization), Linear back to C, (v1, DINOv3: layer
scale), stochastic depth, residual sum. Strided convolutions drop the rows and columns that do not fill a window,
as torch's do, so any input size works (a 225x161 input gives a 56x40 stem map).

The families' differences, as transformers has them (models/convnext, convnextv2, dinov3_convnext/modeling_*.py):
- `convnext`: stages `stem` (the patch embedding with its LayerNorm) and `stage1`...; every LayerNorm has eps
  1e-6 whatever `layer_norm_eps` says (that field is the classification model's final norm's); layer scale
  (`layer_scale_parameter`) only when `layer_scale_init_value > 0`; each selected map goes through its own
  channels-first LayerNorm (`hidden_states_norms`, eps 1e-6);
- `convnextv2`: as `convnext`, with GRN after the activation and no layer scale;
- `dinov3_convnext`: the `stem` stage is the input itself (`num_channels` channels at stride 1: transformers' encoder
  records its input as the first hidden state); the patch embedding belongs to `stage1`; every LayerNorm uses
  `layer_norm_eps`; layer scale (`gamma`) always, whatever its init value; no `hidden_states_norms`: feature maps
  are the raw stage outputs.
Stochastic depth rates rise linearly from 0 to `drop_path_rate` over all blocks of all stages.

Numerics: parameters in `param_dtype`, compute in `dtype`; LayerNorm and GRN statistics in float32. Measured against
the float32 model (tiny layouts, randomised weights, 224x224, CPU), `dtype=jnp.bfloat16` gives feature maps within
1.2e-2 (ConvNeXt), 1.6e-2 (V2) and 1.4e-2 (DINOv3) of the float32 ones relative to their largest magnitude; torch's
bf16 autocast, which keeps the residual stream in float32, gives 0.7e-2, 1.4e-2 and 0.6e-2. On CPU the 7x7 depthwise
convolutions run as fused shifted sums (`layers.conv_general_dilated`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import jax
import jax.numpy as jnp
from flax import nnx

from .. import initializers
from ..backbone import BackboneConfigMixin, BackboneModuleMixin, BackboneOutput
from ..configuration import TRAINING_DEFAULTS, PretrainedConfig, verify_training_fields
from ..layers import (
    DropPath,
    GlobalResponseNorm,
    LayerScale,
    checkpointed,
    conv_general_dilated,
    drop_path_rates,
    get_activation,
    layer_norm,
)
from ..training import configure as configure_training
from .common import from_channels_first, pair, to_channels_first, validate_data_format, validate_pixel_values

STEM_TYPES = ("patch", "overlap", "overlap_tiered", "overlap_act")


class _ConvNextConfigBase(BackboneConfigMixin, PretrainedConfig):
    """Fields, checks and stages the three ConvNeXt configs share; `stage_names` are `stem`, `stage1`, ..."""

    derived_keys = ("model_type", "stage_names")
    # jaxbackbones' fine-tuning switches (see jaxbackbones.training); in config.json only when set.
    training_defaults: ClassVar[dict] = dict(TRAINING_DEFAULTS)
    # What distinguishes the families (see the module docstring); read by ConvNextBackbone.
    use_grn: ClassVar[bool] = False
    stage_norms: ClassVar[bool] = True  # hidden_states_norms on the feature maps
    stem_is_input: ClassVar[bool] = False  # the `stem` stage is the input (the patch embedding belongs to stage1)

    def __init__(self, out_features: list[str] | None = None, out_indices: list[int] | None = None, **kwargs):
        super().__init__(**kwargs)
        for name in ("hidden_sizes", "depths"):  # None means the default, as in transformers' DINOv3 config
            setattr(self, name, [int(value) for value in getattr(self, name) or self.defaults[name]])
        if not self.depths or len(self.hidden_sizes) != len(self.depths):
            raise ValueError(f"hidden_sizes {self.hidden_sizes} and depths {self.depths} must have one entry per "
                             "stage")
        if "num_stages" in self.defaults and self.num_stages != len(self.depths):
            # transformers builds num_stages stages but names one per entry of depths: a mismatch breaks it.
            raise ValueError(f"num_stages={self.num_stages} but depths {self.depths} has {len(self.depths)} "
                             f"entries; set num_stages={len(self.depths)}")
        if min(self.depths) < 0 or min(self.hidden_sizes) < 1:
            raise ValueError(f"depths {self.depths} must be >= 0 and hidden_sizes {self.hidden_sizes} positive")
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {self.drop_path_rate}")
        get_activation(self.hidden_act)
        pair(self.patch_size, "patch_size")
        self.stage_names = ["stem"] + [f"stage{idx}" for idx in range(1, len(self.depths) + 1)]
        self.set_output_features_output_indices(out_features=out_features, out_indices=out_indices)
        verify_training_fields(self)

    @property
    def block_eps(self) -> float:
        return 1e-6

    @property
    def layer_scale(self) -> float | None:
        """The layer scale's initial value, or None for blocks without one."""
        return None

    @property
    def patch(self) -> tuple[int, int]:
        return pair(self.patch_size, "patch_size")


class ConvNextConfig(_ConvNextConfigBase):
    """transformers' ConvNextConfig: same fields, defaults (convnext-tiny-224) and `config.json`.

    `num_stages` must equal the length of `depths` and `hidden_sizes`; stage k has `hidden_sizes[k-1]` channels at
    stride `patch_size * 2**(k-1)`, the stem `hidden_sizes[0]` at stride `patch_size`.
    """

    model_type = "convnext"
    defaults: ClassVar[dict] = {
        "num_channels": 3,
        "patch_size": 4,
        "num_stages": 4,
        "hidden_sizes": [96, 192, 384, 768],
        "depths": [3, 3, 9, 3],
        "hidden_act": "gelu",
        "initializer_range": 0.02,
        "layer_norm_eps": 1e-12,
        "layer_scale_init_value": 1e-6,
        "drop_path_rate": 0.0,
        "image_size": 224,
    }

    @property
    def layer_scale(self) -> float | None:
        return self.layer_scale_init_value if self.layer_scale_init_value > 0 else None


class ConvNextV2Config(_ConvNextConfigBase):
    """transformers' ConvNextV2Config: ConvNextConfig's fields but `layer_scale_init_value`, and its stages; blocks
    have GRN and no layer scale. Defaults: convnextv2-tiny-1k-224."""

    model_type = "convnextv2"
    defaults: ClassVar[dict] = {key: value for key, value in ConvNextConfig.defaults.items()
                                if key != "layer_scale_init_value"}
    use_grn = True


class DINOv3ConvNextConfig(_ConvNextConfigBase):
    """transformers' DINOv3ConvNextConfig: same fields, defaults (dinov3-convnext-tiny) and `config.json`.

    The patch size is 4; `num_stages` is `len(hidden_sizes)` (derived, not written). The `stem` stage is the input
    image (`num_channels` channels, stride 1); stage k has `hidden_sizes[k-1]` channels at stride `4 * 2**(k-1)`.
    """

    model_type = "dinov3_convnext"
    defaults: ClassVar[dict] = {
        "num_channels": 3,
        "hidden_sizes": [96, 192, 384, 768],
        "depths": [3, 3, 9, 3],
        "hidden_act": "gelu",
        "initializer_range": 0.02,
        "layer_norm_eps": 1e-6,
        "layer_scale_init_value": 1e-6,
        "drop_path_rate": 0.0,
        "image_size": 224,
    }
    derived_keys = ("model_type", "stage_names", "num_stages")
    stage_norms = False
    stem_is_input = True
    patch_size = 4

    @property
    def num_stages(self) -> int:
        return len(self.hidden_sizes)

    @property
    def block_eps(self) -> float:
        return self.layer_norm_eps

    @property
    def layer_scale(self) -> float | None:
        return self.layer_scale_init_value


# ---------------------------------------------------------------------------------------------------------------
# Modules. Attribute names follow timm's ConvNeXt (stem, stages.i.downsample, blocks.j.conv_dw, norm, mlp.fc1...),
# so one set of modules serves transformers' and timm's checkpoints.


def _conv(in_channels: int, out_channels: int, kernel_size, *, stride=1, padding=0, groups: int = 1,
          use_bias: bool = True, init_std: float, dtype, param_dtype, rngs: nnx.Rngs) -> nnx.Conv:
    """A torch-style NHWC convolution: symmetric zero padding, rows and columns that do not fill a window dropped."""
    kernel, strides = pair(kernel_size, "kernel_size"), pair(stride, "stride")
    return nnx.Conv(in_channels, out_channels, kernel_size=kernel, strides=strides,
                    padding=((padding, padding), (padding, padding)), feature_group_count=groups, use_bias=use_bias,
                    kernel_init=initializers.normal(init_std), bias_init=initializers.zeros, dtype=dtype,
                    param_dtype=param_dtype, conv_general_dilated=conv_general_dilated, rngs=rngs)


def _make_divisible(value: int, divisor: int = 8) -> int:
    """timm's `make_divisible`: the nearest multiple of `divisor`, never below 90% of `value`."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class ConvNeXtStem(nnx.Module):
    """The patch embedding: a `patch_size` convolution at stride `patch_size` (`stem_type="patch"`), or two 3x3
    stride-2 convolutions (timm's overlapping stems: `overlap_tiered` halves the first's width, `overlap_act` puts the
    activation between them); then LayerNorm."""

    def __init__(self, in_channels: int, dim: int, *, stem_type: str = "patch", patch_size=4, eps: float = 1e-6,
                 use_bias: bool = True, activation: str = "gelu", init_std: float = 0.02, dtype, param_dtype,
                 rngs: nnx.Rngs):
        if stem_type not in STEM_TYPES:
            raise ValueError(f"stem_type {stem_type!r} is not one of {STEM_TYPES}")
        options = dict(use_bias=use_bias, init_std=init_std, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        if stem_type == "patch":
            self.convs = nnx.List([_conv(in_channels, dim, patch_size, stride=patch_size, **options)])
        else:
            mid = _make_divisible(dim // 2) if stem_type == "overlap_tiered" else dim
            self.convs = nnx.List([_conv(in_channels, mid, 3, stride=2, padding=1, **options),
                                   _conv(mid, dim, 3, stride=2, padding=1, **options)])
        self.act = get_activation(activation) if stem_type == "overlap_act" else None
        self.norm = layer_norm(dim, eps=eps, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        for i, conv in enumerate(self.convs):
            if i and self.act is not None:
                x = self.act(x)
            x = conv(x)
        return self.norm(x)


class ConvNeXtDownsample(nnx.Module):
    """LayerNorm, then a 2x2 stride-2 convolution (odd rows and columns dropped)."""

    def __init__(self, in_channels: int, out_channels: int, *, eps: float = 1e-6, use_bias: bool = True,
                 init_std: float = 0.02, dtype, param_dtype, rngs: nnx.Rngs):
        self.norm = layer_norm(in_channels, eps=eps, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.conv = _conv(in_channels, out_channels, 2, stride=2, use_bias=use_bias, init_std=init_std, dtype=dtype,
                          param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.conv(self.norm(x))


class ConvNeXtMlp(nnx.Module):
    """fc1, activation, (GRN), fc2."""

    def __init__(self, dim: int, hidden_dim: int, activation: str, *, use_grn: bool = False, init_std: float = 0.02,
                 dtype, param_dtype, rngs: nnx.Rngs):
        options = dict(kernel_init=initializers.normal(init_std), bias_init=initializers.zeros, dtype=dtype,
                       param_dtype=param_dtype, rngs=rngs)
        self.fc1 = nnx.Linear(dim, hidden_dim, **options)
        self.act = get_activation(activation)
        self.grn = GlobalResponseNorm(hidden_dim, dtype=dtype, param_dtype=param_dtype) if use_grn else None
        self.fc2 = nnx.Linear(hidden_dim, dim, **options)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.act(self.fc1(x))
        if self.grn is not None:
            x = self.grn(x)
        return self.fc2(x)


class ConvNeXtBlock(nnx.Module):
    """Depthwise `kernel_size` convolution, LayerNorm, MLP (`mlp_ratio` x wider, optional GRN), optional layer scale
    (`layer_scale`: its initial value, None for none), stochastic depth, residual sum."""

    def __init__(self, dim: int, *, kernel_size: int = 7, mlp_ratio: float = 4.0, activation: str = "gelu",
                 eps: float = 1e-6, use_grn: bool = False, layer_scale: float | None = None, drop_path: float = 0.0,
                 conv_bias: bool = True, init_std: float = 0.02, dtype, param_dtype, rngs: nnx.Rngs):
        if kernel_size % 2 != 1:
            raise ValueError(f"the depthwise kernel size must be odd (torch pads it symmetrically), got {kernel_size}")
        self.conv_dw = _conv(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim, use_bias=conv_bias,
                             init_std=init_std, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.norm = layer_norm(dim, eps=eps, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.mlp = ConvNeXtMlp(dim, int(mlp_ratio * dim), activation, use_grn=use_grn, init_std=init_std,
                               dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.layer_scale = None if layer_scale is None else LayerScale(dim, layer_scale, param_dtype=param_dtype)
        self.drop_path = DropPath(drop_path)

    def __call__(self, x: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        y = self.mlp(self.norm(self.conv_dw(x)))
        if self.layer_scale is not None:
            y = self.layer_scale(y)
        return x + self.drop_path(y, rngs=rngs)


class ConvNeXtStage(nnx.Module):
    """An optional `ConvNeXtDownsample` from `in_channels` (`downsample=True`), then `depth` blocks of `dim` channels;
    `block_options` go to every block (see ConvNeXtBlock), `drop_path` gives each block its rate."""

    def __init__(self, in_channels: int, dim: int, depth: int, *, downsample: bool, drop_path: Sequence[float],
                 eps: float = 1e-6, conv_bias: bool = True, init_std: float = 0.02, dtype, param_dtype,
                 rngs: nnx.Rngs, **block_options):
        options = dict(init_std=init_std, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.downsample = (ConvNeXtDownsample(in_channels, dim, eps=eps, use_bias=conv_bias, **options)
                           if downsample else None)
        self.blocks = nnx.List([
            ConvNeXtBlock(dim, eps=eps, drop_path=drop_path[i], conv_bias=conv_bias, **options, **block_options)
            for i in range(depth)
        ])
        self.gradient_checkpointing = False  # set from the config by jaxbackbones.training.configure

    def __call__(self, x: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        if self.downsample is not None:
            x = self.downsample(x)
        for block in self.blocks:
            x = checkpointed(self.gradient_checkpointing, lambda block, x, rngs: block(x, rngs=rngs), block, x, rngs)
        return x


class ConvNextBackbone(BackboneModuleMixin, nnx.Module):
    """ConvNeXt feature extractor with the semantics of transformers' ConvNextBackbone, ConvNextV2Backbone or
    DINOv3ConvNextBackbone (whichever family `config` is; see the module docstring), in Flax NNX.

    Args:
        config: a ConvNextConfig, ConvNextV2Config or DINOv3ConvNextConfig, with the selected stages.
        rngs: initialises the weights (random until loaded).
        dtype: compute dtype; LayerNorm and GRN statistics are always float32.
        param_dtype: dtype of the parameters.
        data_format: "channels_last" (default) takes and returns NHWC; "channels_first" NCHW, as transformers.

    `model(pixel_values)` with pixel_values of shape (batch, height, width, num_channels), any height and width,
    returns a `BackboneOutput` whose `feature_maps` are the selected stages (v1, V2: each through its LayerNorm in
    `hidden_states_norms`; every stage has one, so the selection can change after loading, and a checkpoint lacking
    some gets them at weight 1, bias 0, as transformers initialises them). `output_hidden_states=True` adds every
    stage's raw output, the stem first.

    Stochastic depth (`drop_path_rate`) acts only in train mode (`.train()`, the state of a fresh module) and then
    draws keys from the call's `rngs` (`model(x, rngs=nnx.Rngs(dropout=seed))`); `.eval()` makes the model
    deterministic, as `AutoBackbone.from_pretrained` returns it. The config's `freeze_stages` and
    `gradient_checkpointing` apply as `jaxbackbones.training` describes (see `stage_paths` for what a stage owns).
    """

    def __init__(self, config: _ConvNextConfigBase, *, rngs: nnx.Rngs, dtype=jnp.float32, param_dtype=jnp.float32,
                 data_format: str = "channels_last"):
        self.config = config
        self.data_format = validate_data_format(data_format)
        self.dtype = dtype
        sizes = config.hidden_sizes
        patch_h, _ = config.patch
        stage_strides = [patch_h * 2**i for i in range(len(sizes))]
        if config.stem_is_input:
            self.num_features, self.reductions = (config.num_channels, *sizes), (1, *stage_strides)
        else:
            self.num_features, self.reductions = (sizes[0], *sizes), (patch_h, *stage_strides)
        options = dict(init_std=config.initializer_range, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        eps = config.block_eps
        self.stem = ConvNeXtStem(config.num_channels, sizes[0], patch_size=config.patch, eps=eps, **options)
        rates = drop_path_rates(config.drop_path_rate, config.depths)
        self.stages = nnx.List([
            ConvNeXtStage(sizes[max(i - 1, 0)], sizes[i], config.depths[i], downsample=i > 0, drop_path=rates[i],
                          eps=eps, activation=config.hidden_act, use_grn=config.use_grn,
                          layer_scale=config.layer_scale, **options)
            for i in range(len(sizes))
        ])
        if config.stage_norms:
            self.hidden_states_norms = nnx.Dict({
                name: layer_norm(channels, eps=1e-6, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
                for name, channels in zip(config.stage_names, self.num_features)
            })
        else:
            self.hidden_states_norms = None
        configure_training(self)

    def stage_paths(self) -> dict[str, list[tuple]]:
        """State-path prefixes of what each stage owns (what `freeze_stages` freezes). v1/V2: the stem is the patch
        embedding, stage k its blocks and the downsampling in front of them (`stages.{k-1}`); each with its output
        norm. DINOv3: the stem is the input and owns nothing; the patch embedding belongs to stage1."""
        names = self.stage_names
        paths = {name: [("stages", i)] for i, name in enumerate(names[1:])}
        if self.config.stem_is_input:
            paths[names[0]] = []
            paths[names[1]].append(("stem",))
        else:
            paths[names[0]] = [("stem",)]
        if self.hidden_states_norms is not None:
            for name in names:
                paths[name].append(("hidden_states_norms", name))
        return paths

    def __call__(self, pixel_values: jax.Array, output_hidden_states: bool = False, output_attentions: bool = False,
                 *, rngs: nnx.Rngs | None = None) -> BackboneOutput:
        if output_attentions:
            raise ValueError(f"{type(self).__name__} has no attentions to output (output_attentions=True)")
        self.check_rngs(rngs)
        pixel_values = validate_pixel_values(pixel_values, self.config.num_channels, self.data_format)
        x = from_channels_first(pixel_values, self.data_format).astype(self.dtype)
        embedded = self.stem(x)
        hidden_states = [x if self.config.stem_is_input else embedded]
        x = embedded
        for stage in self.stages:
            x = stage(x, rngs=rngs)
            hidden_states.append(x)
        feature_maps = []
        for name in self.out_features:
            feature_map = hidden_states[self.stage_names.index(name)]
            if self.hidden_states_norms is not None:
                feature_map = self.hidden_states_norms[name](feature_map)
            feature_maps.append(to_channels_first(feature_map, self.data_format))
        return BackboneOutput(
            feature_maps=tuple(feature_maps),
            hidden_states=tuple(to_channels_first(h, self.data_format) for h in hidden_states)
            if output_hidden_states else None,
        )
