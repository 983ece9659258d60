"""PVTv2 and SegFormer's Mix Transformer (MiT): one implementation, feature-map for feature-map equal to transformers'
`PvtV2Backbone` and to the encoder of `SegformerModel` (and, through `models/timm/pvt_v2.py`, to timm's
`PyramidVisionTransformerV2`). MiT-b0..b5 and PVTv2-b0..b5 are the same architecture; the checkpoints differ in
their MLP ratios and LayerNorm epsilons.

Every stage is an overlapping patch embedding (a convolution with kernel `patch_sizes[i]`, stride `strides[i]` and
padding `patch_sizes[i] // 2`, then LayerNorm: 7x7 / 4 for the first stage, 3x3 / 2 after), blocks, and a final
LayerNorm. A block is pre-norm attention and pre-norm Mix-FFN, each with stochastic depth and a residual sum:
- spatial-reduction attention: queries from every token; keys and values from the token grid reduced by a
  `sr_ratio` x `sr_ratio` convolution at stride `sr_ratio` (no padding: rows and columns that do not fill a window
  are dropped, as torch's) and a LayerNorm, when `sr_ratio > 1`. The linear variant (PVTv2 `linear_attention`,
  timm's `_li`) instead pools the grid to 7x7 (torch's `AdaptiveAvgPool2d(7)`: bins [floor(i*H/7), ceil((i+1)*H/7)),
  numpy constants, so any size works, smaller than 7 included), then a 1x1 convolution, LayerNorm and exact GELU;
- Mix-FFN: fc1, (linear variant: ReLU), a 3x3 depthwise convolution (padding 1, bias) on the token grid, the
  activation, dropout, fc2, dropout.
Tokens stay on their (B, H, W, C) grid throughout: the Linear layers and LayerNorms act on the last axis.

The families' differences (transformers' models/segformer/modeling_segformer.py, models/pvt_v2/modeling_pvt_v2.py;
timm's models/pvt_v2.py):
- `segformer`: every LayerNorm of the encoder is torch's default, eps 1e-5 (`layer_norm_eps` is not read by the
  encoder); q/k/v always have biases; no linear attention. transformers has no SegFormer backbone: the stages are
  `SegformerModel`'s `hidden_states` (one per stage, no stem: `stage1`...`stage4`). With `reshape_last_stage=False`
  the last stage stays a token sequence: its map is (batch, height * width, channels) in either data format, as
  transformers returns it.
- `pvt_v2`: every LayerNorm uses `layer_norm_eps` (1e-6); `qkv_bias` and `linear_attention` options.
- timm: LayerNorm eps 1e-5 in the patch embeddings and the spatial reduction (`nn.LayerNorm`), 1e-6 in the blocks
  and the stage norms (timm's `LayerNorm`); q/k/v biases always (`qkv_bias=True`).
Stochastic depth rates rise linearly from 0 to `drop_path_rate` over all blocks of all stages, in all three.

Numerics: parameters in `param_dtype`, compute in `dtype`; LayerNorm statistics, attention logits and softmax in
float32.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from .. import initializers
from ..backbone import BackboneConfigMixin, BackboneModuleMixin, BackboneOutput
from ..configuration import TRAINING_DEFAULTS, PretrainedConfig, verify_training_fields
from ..layers import (
    DropPath,
    checkpointed,
    conv_general_dilated,
    dot_product_attention,
    drop_path_rates,
    get_activation,
    layer_norm,
)
from ..training import configure as configure_training
from .common import from_channels_first, to_channels_first, validate_data_format, validate_pixel_values

# The linear variant's pooled key/value grid (torch's AdaptiveAvgPool2d(7) in every implementation).
LINEAR_POOL_SIZE = 7
_PER_STAGE = ("depths", "sr_ratios", "hidden_sizes", "patch_sizes", "strides", "num_attention_heads", "mlp_ratios")


class _MixTransformerConfigBase(BackboneConfigMixin, PretrainedConfig):
    """Fields, checks and stages the SegFormer and PVTv2 configs share; `stage_names` are `stage1`, `stage2`, ..."""

    derived_keys = ("model_type", "stage_names")
    # jaxbackbones' fine-tuning switches (see jaxbackbones.training); in config.json only when set.
    training_defaults: ClassVar[dict] = dict(TRAINING_DEFAULTS)

    def __init__(self, out_features: list[str] | None = None, out_indices: list[int] | None = None, **kwargs):
        super().__init__(**kwargs)
        for name in _PER_STAGE:
            value = getattr(self, name)
            setattr(self, name, [value] * len(self.depths) if isinstance(value, (int, float)) and name != "depths"
                    else list(value))
        lengths = {name: len(getattr(self, name)) for name in _PER_STAGE}
        if not self.depths or len(set(lengths.values())) != 1:
            raise ValueError(f"every per-stage field must have one entry per stage, got lengths {lengths}")
        if self.num_encoder_blocks != len(self.depths):
            raise ValueError(f"num_encoder_blocks={self.num_encoder_blocks} but depths {self.depths} has "
                             f"{len(self.depths)} entries; set num_encoder_blocks={len(self.depths)}")
        if min(self.depths) < 0:
            raise ValueError(f"depths {self.depths} must be >= 0")
        for name in ("sr_ratios", "hidden_sizes", "patch_sizes", "strides", "mlp_ratios"):
            if min(getattr(self, name)) <= 0:
                raise ValueError(f"{name} {getattr(self, name)} must be positive")
        for i, (dim, heads) in enumerate(zip(self.hidden_sizes, self.num_attention_heads)):
            if heads < 1 or dim % heads:
                raise ValueError(f"stage{i + 1} has {dim} channels, which num_attention_heads[{i}]={heads} does not "
                                 "divide")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob", "drop_path_rate"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        get_activation(self.hidden_act)
        self.stage_names = [f"stage{idx}" for idx in range(1, len(self.depths) + 1)]
        self.set_output_features_output_indices(out_features=out_features, out_indices=out_indices)
        verify_training_fields(self)

    # What distinguishes the families (see the module docstring); read by PvtV2Backbone.
    @property
    def norm_eps(self) -> dict[str, float]:
        """LayerNorm eps of the patch embeddings (`patch`), the spatial reductions (`reduction`) and the blocks and
        stage norms (`block`)."""
        return dict(patch=self.layer_norm_eps, reduction=self.layer_norm_eps, block=self.layer_norm_eps)

    @property
    def linear(self) -> bool:
        return bool(getattr(self, "linear_attention", False))

    @property
    def use_qkv_bias(self) -> bool:
        return bool(getattr(self, "qkv_bias", True))

    @property
    def tokens_last(self) -> bool:
        """Whether the last stage stays a token sequence (SegFormer's `reshape_last_stage=False`)."""
        return False


class PvtV2Config(_MixTransformerConfigBase):
    """transformers' PvtV2Config: same fields, defaults (OpenGVLab/pvt_v2_b0) and `config.json`.

    Stage k has `hidden_sizes[k-1]` channels at stride `strides[0] * ... * strides[k-1]` (4, 8, 16, 32).
    An int `image_size` becomes [size, size], as transformers writes it; the backbone takes any input size.
    """

    model_type = "pvt_v2"
    defaults: ClassVar[dict] = {
        "image_size": 224,
        "num_channels": 3,
        "num_encoder_blocks": 4,
        "depths": [2, 2, 2, 2],
        "sr_ratios": [8, 4, 2, 1],
        "hidden_sizes": [32, 64, 160, 256],
        "patch_sizes": [7, 3, 3, 3],
        "strides": [4, 2, 2, 2],
        "num_attention_heads": [1, 2, 5, 8],
        "mlp_ratios": [8, 8, 4, 4],
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
        "initializer_range": 0.02,
        "drop_path_rate": 0.0,
        "layer_norm_eps": 1e-6,
        "qkv_bias": True,
        "linear_attention": False,
    }

    def __init__(self, out_features: list[str] | None = None, out_indices: list[int] | None = None, **kwargs):
        super().__init__(out_features=out_features, out_indices=out_indices, **kwargs)
        size = self.image_size
        self.image_size = [int(size), int(size)] if isinstance(size, (int, float)) else list(size)


class SegformerConfig(_MixTransformerConfigBase):
    """transformers' SegformerConfig: same fields, defaults (nvidia/mit-b0) and `config.json`, plus the stage
    selection transformers' SegformerConfig lacks (`stage_names` `stage1`..., `out_features`, `out_indices`).

    The decode-head fields (`decoder_hidden_size`, `classifier_dropout_prob`, `semantic_loss_ignore_index`) and
    `layer_norm_eps` are kept for the hub's `config.json`; the encoder reads none of them (its LayerNorms have eps
    1e-5).
    """

    model_type = "segformer"
    defaults: ClassVar[dict] = {
        "num_channels": 3,
        "num_encoder_blocks": 4,
        "depths": [2, 2, 2, 2],
        "sr_ratios": [8, 4, 2, 1],
        "hidden_sizes": [32, 64, 160, 256],
        "patch_sizes": [7, 3, 3, 3],
        "strides": [4, 2, 2, 2],
        "num_attention_heads": [1, 2, 5, 8],
        "mlp_ratios": [4, 4, 4, 4],
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
        "classifier_dropout_prob": 0.1,
        "initializer_range": 0.02,
        "drop_path_rate": 0.1,
        "layer_norm_eps": 1e-6,
        "decoder_hidden_size": 256,
        "semantic_loss_ignore_index": 255,
        "reshape_last_stage": True,
    }

    @property
    def norm_eps(self) -> dict[str, float]:
        return dict(patch=1e-5, reduction=1e-5, block=1e-5)

    @property
    def tokens_last(self) -> bool:
        return not self.reshape_last_stage


# ---------------------------------------------------------------------------------------------------------------
# Modules. Attribute names follow timm's PVTv2 (stages.i.blocks.j.{norm1, attn.{q, kv, sr, norm, proj}, norm2,
# mlp.{fc1, dwconv, fc2}}, stages.i.norm), with every stage's patch embedding at stages.i.patch_embed, so one set of
# modules serves transformers' and timm's checkpoints.


def adaptive_avg_pool_matrix(in_size: int, out_size: int) -> np.ndarray:
    """(out_size, in_size) averaging weights of torch's adaptive average pooling along one axis: output i averages
    inputs [floor(i * in / out), ceil((i + 1) * in / out))."""
    matrix = np.zeros((out_size, in_size), np.float32)
    for i in range(out_size):
        start, end = (i * in_size) // out_size, -(-((i + 1) * in_size) // out_size)
        matrix[i, start:end] = 1.0 / (end - start)
    return matrix


def adaptive_avg_pool(x: jax.Array, size: int) -> jax.Array:
    """NHWC `torch.nn.AdaptiveAvgPool2d(size)`: static bins from the input shape, sums in float32."""
    rows = jnp.asarray(adaptive_avg_pool_matrix(x.shape[1], size))
    cols = jnp.asarray(adaptive_avg_pool_matrix(x.shape[2], size))
    pooled = jnp.einsum("ih,bhwc,jw->bijc", rows, x.astype(jnp.float32), cols,
                        precision=jax.lax.Precision.HIGHEST)
    return pooled.astype(x.dtype)


def _conv(in_channels: int, out_channels: int, kernel: int, *, stride: int = 1, padding: int = 0, groups: int = 1,
          dtype, param_dtype, rngs: nnx.Rngs) -> nnx.Conv:
    """A torch-style NHWC convolution with bias: symmetric zero padding, rows and columns that do not fill a window
    dropped; initialised as transformers and timm do (normal, std sqrt(2 / fan_out), fan_out per group)."""
    fan_out = kernel * kernel * out_channels // groups
    return nnx.Conv(in_channels, out_channels, kernel_size=(kernel, kernel), strides=(stride, stride),
                    padding=((padding, padding), (padding, padding)), feature_group_count=groups, use_bias=True,
                    kernel_init=initializers.normal(float(np.sqrt(2.0 / fan_out))), bias_init=initializers.zeros,
                    dtype=dtype, param_dtype=param_dtype, conv_general_dilated=conv_general_dilated, rngs=rngs)


def _linear(in_features: int, out_features: int, *, use_bias: bool = True, init_std: float, dtype, param_dtype,
            rngs: nnx.Rngs) -> nnx.Linear:
    return nnx.Linear(in_features, out_features, use_bias=use_bias, kernel_init=initializers.normal(init_std),
                      bias_init=initializers.zeros, dtype=dtype, param_dtype=param_dtype, rngs=rngs)


class OverlapPatchEmbed(nnx.Module):
    """Convolution (kernel `patch_size`, stride `stride`, padding `patch_size // 2`), then LayerNorm."""

    def __init__(self, in_channels: int, dim: int, *, patch_size: int, stride: int, eps: float, dtype, param_dtype,
                 rngs: nnx.Rngs):
        self.proj = _conv(in_channels, dim, patch_size, stride=stride, padding=patch_size // 2, dtype=dtype,
                          param_dtype=param_dtype, rngs=rngs)
        self.norm = layer_norm(dim, eps=eps, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.norm(self.proj(x))


class SpatialReductionAttention(nnx.Module):
    """Multi-head attention of every token over the reduced grid (see the module docstring): `q` (C -> C) and `kv`
    (C -> 2C, keys then values), `sr` + `norm` when `sr_ratio > 1` or `linear`, `proj`; logits and softmax in
    float32. The explicit path (einsum, softmax) runs when the probabilities are asked for or attention dropout is
    active."""

    def __init__(self, dim: int, num_heads: int, *, sr_ratio: int = 1, linear: bool = False, qkv_bias: bool = True,
                 reduction_eps: float = 1e-5, attention_dropout: float = 0.0, proj_dropout: float = 0.0,
                 init_std: float = 0.02, dtype, param_dtype, rngs: nnx.Rngs):
        if dim % num_heads:
            raise ValueError(f"{dim} channels cannot be split into num_heads={num_heads} heads")
        self.num_heads, self.head_dim, self.dtype = num_heads, dim // num_heads, dtype
        self.linear, self.sr_ratio = linear, sr_ratio
        options = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.q = _linear(dim, dim, use_bias=qkv_bias, init_std=init_std, **options)
        self.kv = _linear(dim, 2 * dim, use_bias=qkv_bias, init_std=init_std, **options)
        if linear or sr_ratio > 1:
            kernel = 1 if linear else sr_ratio
            self.sr = _conv(dim, dim, kernel, stride=kernel, **options)
            self.norm = layer_norm(dim, eps=reduction_eps, **options)
        else:
            self.sr = self.norm = None
        self.proj = _linear(dim, dim, init_std=init_std, **options)
        self.attn_drop = nnx.Dropout(attention_dropout)
        self.proj_drop = nnx.Dropout(proj_dropout)

    def __call__(self, x: jax.Array, *, rngs: nnx.Rngs | None = None,
                 output_attentions: bool = False) -> tuple[jax.Array, jax.Array | None]:
        batch, height, width, channels = x.shape
        query = self.q(x).reshape(batch, height * width, self.num_heads, self.head_dim)
        source = x
        if self.linear:
            source = get_activation("gelu")(self.norm(self.sr(adaptive_avg_pool(x, LINEAR_POOL_SIZE))))
        elif self.sr is not None:
            source = self.norm(self.sr(x))
        kv = self.kv(source).reshape(batch, -1, 2, self.num_heads, self.head_dim)
        key, value = kv[:, :, 0], kv[:, :, 1]
        dropout_active = self.attn_drop.rate > 0 and not self.attn_drop.deterministic
        probs = None
        if output_attentions or dropout_active:
            logits = jnp.einsum("bqhd,bkhd->bhqk", query, key, preferred_element_type=jnp.float32)
            probs = jax.nn.softmax(logits * np.float32(self.head_dim**-0.5), axis=-1)
            out = jnp.einsum("bhqk,bkhd->bqhd", self.attn_drop(probs, rngs=rngs).astype(self.dtype), value)
        else:
            out = dot_product_attention(query, key, value)
        out = self.proj_drop(self.proj(out.reshape(batch, height, width, channels)), rngs=rngs)
        return out, (probs if output_attentions else None)


class MixFFN(nnx.Module):
    """fc1, (ReLU when `extra_relu`), 3x3 depthwise convolution (padding 1, bias), activation, dropout, fc2,
    dropout, on a (B, H, W, C) grid."""

    def __init__(self, dim: int, hidden_dim: int, activation: str = "gelu", *, extra_relu: bool = False,
                 dropout: float = 0.0, init_std: float = 0.02, dtype, param_dtype, rngs: nnx.Rngs):
        options = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.fc1 = _linear(dim, hidden_dim, init_std=init_std, **options)
        self.extra_relu = extra_relu
        self.dwconv = _conv(hidden_dim, hidden_dim, 3, padding=1, groups=hidden_dim, **options)
        self.act = get_activation(activation)
        self.fc2 = _linear(hidden_dim, dim, init_std=init_std, **options)
        self.drop = nnx.Dropout(dropout)

    def __call__(self, x: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        x = self.fc1(x)
        if self.extra_relu:
            x = jax.nn.relu(x)
        x = self.drop(self.act(self.dwconv(x)), rngs=rngs)
        return self.drop(self.fc2(x), rngs=rngs)


class PvtV2Block(nnx.Module):
    """x + drop_path(attn(norm1(x))), then x + drop_path(mlp(norm2(x)))."""

    def __init__(self, dim: int, num_heads: int, *, mlp_ratio: float, sr_ratio: int, linear: bool = False,
                 qkv_bias: bool = True, activation: str = "gelu", eps: float, reduction_eps: float,
                 drop_path: float = 0.0, hidden_dropout: float = 0.0, attention_dropout: float = 0.0,
                 init_std: float = 0.02, dtype, param_dtype, rngs: nnx.Rngs):
        options = dict(init_std=init_std, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.norm1 = layer_norm(dim, eps=eps, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.attn = SpatialReductionAttention(dim, num_heads, sr_ratio=sr_ratio, linear=linear, qkv_bias=qkv_bias,
                                              reduction_eps=reduction_eps, attention_dropout=attention_dropout,
                                              proj_dropout=hidden_dropout, **options)
        self.norm2 = layer_norm(dim, eps=eps, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.mlp = MixFFN(dim, int(dim * mlp_ratio), activation, extra_relu=linear, dropout=hidden_dropout, **options)
        self.drop_path = DropPath(drop_path)

    def __call__(self, x: jax.Array, *, rngs: nnx.Rngs | None = None,
                 output_attentions: bool = False) -> tuple[jax.Array, jax.Array | None]:
        attended, probs = self.attn(self.norm1(x), rngs=rngs, output_attentions=output_attentions)
        x = x + self.drop_path(attended, rngs=rngs)
        return x + self.drop_path(self.mlp(self.norm2(x), rngs=rngs), rngs=rngs), probs


class PvtV2Stage(nnx.Module):
    """The patch embedding from `in_channels`, `depth` blocks of `dim` channels (`drop_path`: each block's rate),
    the stage's LayerNorm; `block_options` go to every block (see PvtV2Block)."""

    def __init__(self, in_channels: int, dim: int, depth: int, *, patch_size: int, stride: int, patch_eps: float,
                 eps: float, drop_path: Sequence[float], dtype, param_dtype, rngs: nnx.Rngs, **block_options):
        options = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.patch_embed = OverlapPatchEmbed(in_channels, dim, patch_size=patch_size, stride=stride, eps=patch_eps,
                                             **options)
        self.blocks = nnx.List([PvtV2Block(dim, eps=eps, drop_path=drop_path[i], **options, **block_options)
                                for i in range(depth)])
        self.norm = layer_norm(dim, eps=eps, **options)
        self.gradient_checkpointing = False  # set from the config by jaxbackbones.training.configure

    def __call__(self, x: jax.Array, *, rngs: nnx.Rngs | None = None,
                 output_attentions: bool = False) -> tuple[jax.Array, list[jax.Array]]:
        x = self.patch_embed(x)
        attentions = []
        for block in self.blocks:
            x, probs = checkpointed(self.gradient_checkpointing,
                                    lambda block, x, rngs: block(x, rngs=rngs, output_attentions=output_attentions),
                                    block, x, rngs)
            attentions.append(probs)
        return self.norm(x), attentions


def build_stages(*, in_channels: int, hidden_sizes, depths, num_heads, mlp_ratios, sr_ratios, patch_sizes, strides,
                 drop_path_rate: float, norm_eps: dict[str, float], dtype, param_dtype, rngs: nnx.Rngs,
                 **block_options) -> nnx.List:
    """The stages of a MiT / PVTv2 (shared with timm's layout, models/timm/pvt_v2.py)."""
    rates = drop_path_rates(drop_path_rate, depths)
    return nnx.List([
        PvtV2Stage(in_channels if i == 0 else hidden_sizes[i - 1], hidden_sizes[i], depths[i],
                   patch_size=patch_sizes[i], stride=strides[i], patch_eps=norm_eps["patch"], eps=norm_eps["block"],
                   reduction_eps=norm_eps["reduction"], drop_path=rates[i], num_heads=num_heads[i],
                   mlp_ratio=mlp_ratios[i], sr_ratio=sr_ratios[i], dtype=dtype, param_dtype=param_dtype, rngs=rngs,
                   **block_options)
        for i in range(len(depths))
    ])


def run_stages(stages, x: jax.Array, *, rngs=None, output_attentions: bool = False):
    """Every stage's output (B, H, W, C) and, with `output_attentions`, every block's attention probabilities."""
    hidden_states, attentions = [], []
    for stage in stages:
        x, probs = stage(x, rngs=rngs, output_attentions=output_attentions)
        hidden_states.append(x)
        attentions.extend(probs)
    return hidden_states, attentions


class PvtV2Backbone(BackboneModuleMixin, nnx.Module):
    """PVTv2 / SegFormer (MiT) feature extractor with the semantics of transformers' PvtV2Backbone or the encoder of
    SegformerModel (whichever family `config` is; see the module docstring), in Flax NNX.

    Args:
        config: a PvtV2Config or SegformerConfig, with the selected stages.
        rngs: initialises the weights (random until loaded).
        dtype: compute dtype; LayerNorm statistics and attention softmax are always float32.
        param_dtype: dtype of the parameters.
        data_format: "channels_last" (default) takes and returns NHWC; "channels_first" NCHW, as transformers.

    `model(pixel_values)` with pixel_values of shape (batch, height, width, num_channels), any height and width,
    returns a `BackboneOutput` whose `feature_maps` are the selected stages (each after its stage's LayerNorm);
    `output_hidden_states=True` adds every stage's output, `output_attentions=True` every block's attention
    probabilities, (batch, heads, tokens, reduced tokens). SegFormer with `reshape_last_stage=False`: the last stage
    is (batch, tokens, channels).

    Dropout and stochastic depth act only in train mode (`.train()`, the state of a fresh module) and then draw keys
    from the call's `rngs` (`model(x, rngs=nnx.Rngs(dropout=seed))`); `.eval()` makes the model deterministic, as
    `AutoBackbone.from_pretrained` returns it. `freeze_stages` and `gradient_checkpointing` apply as
    `jaxbackbones.training` describes (stage k owns its patch embedding, blocks and norm: `stages.{k-1}`).
    """

    def __init__(self, config: _MixTransformerConfigBase, *, rngs: nnx.Rngs, dtype=jnp.float32,
                 param_dtype=jnp.float32, data_format: str = "channels_last"):
        self.config = config
        self.data_format = validate_data_format(data_format)
        self.dtype = dtype
        self.num_features = tuple(config.hidden_sizes)
        self.reductions = tuple(int(r) for r in np.cumprod(config.strides))
        self.stages = build_stages(
            in_channels=config.num_channels, hidden_sizes=config.hidden_sizes, depths=config.depths,
            num_heads=config.num_attention_heads, mlp_ratios=config.mlp_ratios, sr_ratios=config.sr_ratios,
            patch_sizes=config.patch_sizes, strides=config.strides, drop_path_rate=config.drop_path_rate,
            norm_eps=config.norm_eps, linear=config.linear, qkv_bias=config.use_qkv_bias,
            activation=config.hidden_act, hidden_dropout=config.hidden_dropout_prob,
            attention_dropout=config.attention_probs_dropout_prob, init_std=config.initializer_range, dtype=dtype,
            param_dtype=param_dtype, rngs=rngs)
        configure_training(self)

    def stage_paths(self) -> dict[str, list[tuple]]:
        """State-path prefixes of what each stage owns (what `freeze_stages` freezes): stage k is `stages.{k-1}`,
        its patch embedding, blocks and norm."""
        return {name: [("stages", i)] for i, name in enumerate(self.stage_names)}

    def _output(self, x: jax.Array, last: bool) -> jax.Array:
        if last and self.config.tokens_last:
            return x.reshape(x.shape[0], -1, x.shape[-1])
        return to_channels_first(x, self.data_format)

    def __call__(self, pixel_values: jax.Array, output_hidden_states: bool = False, output_attentions: bool = False,
                 *, rngs: nnx.Rngs | None = None) -> BackboneOutput:
        self.check_rngs(rngs)
        pixel_values = validate_pixel_values(pixel_values, self.config.num_channels, self.data_format)
        x = from_channels_first(pixel_values, self.data_format).astype(self.dtype)
        hidden_states, attentions = run_stages(self.stages, x, rngs=rngs, output_attentions=output_attentions)
        last = len(hidden_states) - 1
        outputs = [self._output(h, i == last) for i, h in enumerate(hidden_states)]
        return BackboneOutput(
            feature_maps=tuple(outputs[self.stage_names.index(name)] for name in self.out_features),
            hidden_states=tuple(outputs) if output_hidden_states else None,
            attentions=tuple(attentions) if output_attentions else None,
        )
