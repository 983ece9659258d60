"""Swin Transformer: config, modules and backbone, feature-map for feature-map equal to transformers' SwinBackbone.

Semantics (transformers 5.x `SwinBackbone`, which runs its encoder with `always_partition=True`):
- the image is padded right/bottom to a multiple of the patch size, embedded, normalised (the `stem`), and, with
  `use_absolute_embeddings`, given position embeddings (only at the config's `image_size` grid);
- every block attends within `window_size` windows, the feature map padded right/bottom with zeros to a multiple
  of the window; odd blocks shift the windows by `window_size // 2` and mask the wrapped-around regions. The
  window and the shift are never clamped, not even when a stage is smaller than one window: a 5x3 map is padded
  to one 7x7 window and still shifted;
- the feature map of a stage is taken before its patch merging (which pads odd sizes), and every selected map
  goes through its own LayerNorm (`hidden_states_norms`, eps 1e-5);
- `hidden_states` are the stem and the stage outputs before merging, without those norms; `attentions` holds,
  per stage, the attention probabilities of its last block, (batch * windows, heads, tokens, tokens).

Shapes are static: padding, shifts, masks and relative position indices are numpy values computed from the input
shape at trace time, so any input size works with the same module (a new size retraces under `jit`).

Numerics: parameters in `param_dtype`, compute in `dtype`; LayerNorm statistics, attention logits and softmax in
float32. Measured against the float32 model (swin-tiny layout, randomised weights, 224x224 inputs, CPU),
`dtype=jnp.bfloat16` (float32 parameters) gives feature maps within 1.5e-2 of the float32 ones relative to their
largest magnitude (max |bf16 - fp32| / max |fp32|: 0.75e-2 at the stem, 1.44e-2 at the worst stage); the tests
bound it at 3e-2.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from .. import initializers
from ..backbone import BackboneConfigMixin, BackboneModuleMixin, BackboneOutput
from ..configuration import TRAINING_DEFAULTS, PretrainedConfig, verify_training_fields
from ..layers import DropPath, checkpointed, conv_general_dilated, drop_path_rates, get_activation, layer_norm
from ..training import configure as configure_training
from .common import from_channels_first, to_channels_first, validate_data_format, validate_pixel_values

# transformers' SwinAttention adds this to the logits of token pairs that a shifted window wrapped together.
MASK_VALUE = -100.0


def _pair(value) -> tuple[int, int]:
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise ValueError(f"expected an int or a pair of ints, got {value!r}")
        return int(value[0]), int(value[1])
    return int(value), int(value)


class SwinConfig(BackboneConfigMixin, PretrainedConfig):
    """transformers' SwinConfig: same fields, defaults (swin-tiny-patch4-window7-224) and `config.json`.

    Stages are `stem` (the normalised patch embedding) and `stage1`... one per entry of `depths`; stage k has
    `embed_dim * 2**(k-1)` channels at stride `patch_size * 2**(k-1)`. `hidden_size` (channels of the last
    stage) and `num_layers` (number of stages) are derived, written to `config.json` as transformers does.
    """

    model_type = "swin"
    defaults: ClassVar[dict] = {
        "image_size": 224,
        "patch_size": 4,
        "num_channels": 3,
        "embed_dim": 96,
        "depths": [2, 2, 6, 2],
        "num_heads": [3, 6, 12, 24],
        "window_size": 7,
        "mlp_ratio": 4.0,
        "qkv_bias": True,
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
        "drop_path_rate": 0.1,
        "hidden_act": "gelu",
        "use_absolute_embeddings": False,
        "initializer_range": 0.02,
        "layer_norm_eps": 1e-5,
        "encoder_stride": 32,
    }
    derived_keys = ("model_type", "stage_names", "hidden_size", "num_layers")
    # jaxbackbones' fine-tuning switches (see jaxbackbones.training); in config.json only when set.
    training_defaults: ClassVar[dict] = dict(TRAINING_DEFAULTS)

    def __init__(self, out_features: list[str] | None = None, out_indices: list[int] | None = None, **kwargs):
        super().__init__(**kwargs)
        self.depths = list(self.depths)
        self.num_heads = list(self.num_heads)
        for name in ("image_size", "patch_size"):
            value = getattr(self, name)
            if isinstance(value, (list, tuple)):
                setattr(self, name, list(value))
            if min(_pair(value)) < 1:
                raise ValueError(f"{name} must be positive, got {value!r}")
        if not self.depths or len(self.depths) != len(self.num_heads):
            raise ValueError(f"depths {self.depths} and num_heads {self.num_heads} must have one entry per stage")
        if any(depth < 1 for depth in self.depths):
            raise ValueError(f"every stage needs at least one block, got depths {self.depths}")
        if int(self.window_size) < 1:
            raise ValueError(f"window_size must be a positive int, got {self.window_size!r}")
        for i, heads in enumerate(self.num_heads):
            dim = self.embed_dim * 2**i
            if heads < 1 or dim % heads:
                raise ValueError(f"stage{i + 1} has {dim} channels, which num_heads[{i}]={heads} does not divide")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob", "drop_path_rate"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        get_activation(self.hidden_act)
        self.num_layers = len(self.depths)
        self.hidden_size = int(self.embed_dim * 2 ** (len(self.depths) - 1))
        self.stage_names = ["stem"] + [f"stage{idx}" for idx in range(1, len(self.depths) + 1)]
        self.set_output_features_output_indices(out_features=out_features, out_indices=out_indices)
        verify_training_fields(self)

    def to_dict(self) -> dict:
        output = super().to_dict()
        output.update(hidden_size=self.hidden_size, num_layers=self.num_layers)
        return output


# ---------------------------------------------------------------------------------------------------------------
# Static (numpy) geometry, computed at trace time from Python ints.


@functools.lru_cache(maxsize=None)
def relative_position_index(window_size: int) -> np.ndarray:
    """(N, N) index into the ((2w-1)**2, heads) bias table for the N = w*w tokens of a window, as Swin defines it."""
    coords = np.stack(np.meshgrid(np.arange(window_size), np.arange(window_size), indexing="ij")).reshape(2, -1)
    relative = (coords[:, :, None] - coords[:, None, :]).transpose(1, 2, 0) + (window_size - 1)
    index = relative[:, :, 0] * (2 * window_size - 1) + relative[:, :, 1]
    index = index.astype(np.int32)
    index.flags.writeable = False
    return index


@functools.lru_cache(maxsize=256)
def shifted_window_regions(height: int, width: int, window_size: int, shift_size: int) -> np.ndarray:
    """(windows, w*w) region id of every token of every window of a padded `height` x `width` map.

    After the cyclic shift, a window at the bottom/right edge gathers up to 3x3 regions that are not neighbours in
    the image; tokens attend only within their region (transformers' `SwinLayer.get_attn_mask`).
    """
    def regions(size):
        index = np.arange(size)
        return (index >= size - window_size).astype(np.int32) + (index >= size - shift_size).astype(np.int32)

    image = regions(height)[:, None] * 3 + regions(width)[None, :]
    ids = image.reshape(height // window_size, window_size, width // window_size, window_size)
    ids = ids.transpose(0, 2, 1, 3).reshape(-1, window_size * window_size)
    ids.flags.writeable = False
    return ids


def window_partition(x: jax.Array, window_size: int) -> jax.Array:
    """(B, H, W, C) with H, W multiples of the window -> (B * windows, w*w, C), windows in row-major order."""
    batch, height, width, channels = x.shape
    x = x.reshape(batch, height // window_size, window_size, width // window_size, window_size, channels)
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(-1, window_size * window_size, channels)


def window_reverse(windows: jax.Array, window_size: int, height: int, width: int) -> jax.Array:
    """Inverse of `window_partition`: (B * windows, w*w, C) -> (B, H, W, C)."""
    channels = windows.shape[-1]
    x = windows.reshape(-1, height // window_size, width // window_size, window_size, window_size, channels)
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(-1, height, width, channels)


# ---------------------------------------------------------------------------------------------------------------
# Modules. Attribute names follow timm's Swin (patch_embed, norm1, attn.qkv, attn.proj, mlp.fc1, downsample...)
# so that one set of modules serves transformers' and timm's checkpoints.


def _linear(in_features: int, out_features: int, *, use_bias: bool = True, init_std: float, dtype, param_dtype,
            rngs: nnx.Rngs) -> nnx.Linear:
    return nnx.Linear(in_features, out_features, use_bias=use_bias, kernel_init=initializers.normal(init_std),
                      bias_init=initializers.zeros, dtype=dtype, param_dtype=param_dtype, rngs=rngs)


class SwinPatchEmbed(nnx.Module):
    """Non-overlapping patch projection (input padded right/bottom to a multiple of the patch) and LayerNorm."""

    def __init__(self, num_channels: int, embed_dim: int, patch_size, *, eps: float = 1e-5, init_std: float = 0.02,
                 dtype, param_dtype, rngs: nnx.Rngs):
        self.patch_size = _pair(patch_size)
        self.proj = nnx.Conv(num_channels, embed_dim, kernel_size=self.patch_size, strides=self.patch_size,
                             padding=((0, 0), (0, 0)), kernel_init=initializers.normal(init_std),
                             bias_init=initializers.zeros, dtype=dtype, param_dtype=param_dtype,
                             conv_general_dilated=conv_general_dilated, rngs=rngs)
        self.norm = layer_norm(embed_dim, eps=eps, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        _, height, width, _ = x.shape
        pad_h, pad_w = (-height) % self.patch_size[0], (-width) % self.patch_size[1]
        if pad_h or pad_w:
            x = jnp.pad(x, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)))
        return self.norm(self.proj(x))


class WindowAttention(nnx.Module):
    """Multi-head self-attention within windows, with a learned relative position bias and an optional mask.

    q, k and v come from one fused (C, 3C) projection. The bias is gathered from the ((2w-1)**2, heads) table with
    a numpy index once per call; logits and softmax are float32.

    Laid out for XLA: q, k and v are split head-major, (windows, heads, N, head_dim), so that both products are
    plain batched matrix products, and the 1/sqrt(head_dim) scale multiplies q (as timm does; transformers scales
    the logits: equal to float32 rounding). Scaling the (windows, heads, N, N) logits and contracting heads-minor
    layouts with einsum made XLA:CPU materialise a broadcast scale and transposes around each product: the
    attention took 2-3x longer.
    """

    def __init__(self, dim: int, num_heads: int, window_size: int, *, qkv_bias: bool = True,
                 attention_dropout: float = 0.0, proj_dropout: float = 0.0, init_std: float = 0.02, dtype,
                 param_dtype, rngs: nnx.Rngs):
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.window_size = window_size
        self.dtype = dtype
        self.qkv = _linear(dim, 3 * dim, use_bias=qkv_bias, init_std=init_std, dtype=dtype, param_dtype=param_dtype,
                           rngs=rngs)
        self.proj = _linear(dim, dim, init_std=init_std, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.relative_position_bias_table = nnx.Param(
            initializers.full(((2 * window_size - 1) ** 2, num_heads), 0, param_dtype)
        )
        self.attn_drop = nnx.Dropout(attention_dropout)
        self.proj_drop = nnx.Dropout(proj_dropout)

    def relative_position_bias(self) -> jax.Array:
        """(heads, N, N) float32 bias of the window's token pairs."""
        index = relative_position_index(self.window_size)
        tokens = index.shape[0]
        bias = self.relative_position_bias_table[...][index.reshape(-1)].astype(jnp.float32)
        return bias.reshape(tokens, tokens, self.num_heads).transpose(2, 0, 1)

    def __call__(self, x: jax.Array, region_ids: np.ndarray | None = None, *, rngs: nnx.Rngs | None = None,
                 output_attentions: bool = False) -> tuple[jax.Array, jax.Array | None]:
        """x: (B * windows, N, C); region_ids: (windows, N) numpy, tokens attend only within their region."""
        windows, tokens, channels = x.shape
        qkv = self.qkv(x).reshape(windows, tokens, 3, self.num_heads, self.head_dim).transpose(2, 0, 3, 1, 4)
        query, key, value = qkv[0] * self.scale, qkv[1], qkv[2]  # (B_, heads, N, head_dim)
        logits = jnp.matmul(query, key.swapaxes(-1, -2), preferred_element_type=jnp.float32)
        logits = logits + self.relative_position_bias()[None]
        if region_ids is not None:
            ids = jnp.asarray(region_ids)  # a small constant; the (windows, N, N) mask is built on device
            mask = jnp.where(ids[:, :, None] != ids[:, None, :], jnp.float32(MASK_VALUE), jnp.float32(0.0))
            num_windows = region_ids.shape[0]
            logits = logits.reshape(windows // num_windows, num_windows, self.num_heads, tokens, tokens)
            logits = (logits + mask[None, :, None]).reshape(windows, self.num_heads, tokens, tokens)
        probs = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
        probs = self.attn_drop(probs, rngs=rngs)
        out = jnp.matmul(probs, value).transpose(0, 2, 1, 3).reshape(windows, tokens, channels)
        out = self.proj_drop(self.proj(out), rngs=rngs)
        return out, (probs if output_attentions else None)


class SwinMlp(nnx.Module):
    """fc1, activation, fc2, dropout."""

    def __init__(self, dim: int, hidden_dim: int, activation: str, *, dropout: float = 0.0, init_std: float = 0.02,
                 dtype, param_dtype, rngs: nnx.Rngs):
        self.fc1 = _linear(dim, hidden_dim, init_std=init_std, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.fc2 = _linear(hidden_dim, dim, init_std=init_std, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.act = get_activation(activation)
        self.drop = nnx.Dropout(dropout)

    def __call__(self, x: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        return self.drop(self.fc2(self.act(self.fc1(x))), rngs=rngs)


class SwinBlock(nnx.Module):
    """One (shifted-)window transformer block on an NHWC map of any size.

    The normalised map is padded right/bottom with zeros to a multiple of `window_size`, cyclically shifted by
    `shift_size` (0: no shift), attended per window, shifted back and cropped. `window_size` and `shift_size` are
    used as given at every resolution (transformers' `always_partition=True`). Stochastic depth applies to the
    attention branch and, with `mlp_drop_path` (timm, the paper), to the MLP branch too; transformers applies it to
    the attention branch only. With `shift_before_pad` (timm) the map is shifted first and padded after, and
    cropped before being shifted back.
    """

    def __init__(self, dim: int, num_heads: int, *, window_size: int, shift_size: int = 0, mlp_ratio: float = 4.0,
                 qkv_bias: bool = True, hidden_act: str = "gelu", layer_norm_eps: float = 1e-5,
                 hidden_dropout: float = 0.0, attention_dropout: float = 0.0, drop_path: float = 0.0,
                 mlp_drop_path: bool = False, shift_before_pad: bool = False, init_std: float = 0.02, dtype,
                 param_dtype, rngs: nnx.Rngs):
        if not 0 <= shift_size < window_size:
            raise ValueError(f"shift_size must be in [0, window_size={window_size}), got {shift_size}")
        self.window_size = window_size
        self.shift_size = shift_size
        self.mlp_drop_path = mlp_drop_path
        self.shift_before_pad = shift_before_pad
        self.norm1 = layer_norm(dim, eps=layer_norm_eps, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.attn = WindowAttention(dim, num_heads, window_size, qkv_bias=qkv_bias,
                                    attention_dropout=attention_dropout, proj_dropout=hidden_dropout,
                                    init_std=init_std, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.drop_path = DropPath(drop_path)
        self.norm2 = layer_norm(dim, eps=layer_norm_eps, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.mlp = SwinMlp(dim, int(mlp_ratio * dim), hidden_act, dropout=hidden_dropout, init_std=init_std,
                           dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x: jax.Array, *, rngs: nnx.Rngs | None = None,
                 output_attentions: bool = False) -> tuple[jax.Array, jax.Array | None]:
        _, height, width, _ = x.shape
        window, shift = self.window_size, self.shift_size
        shortcut = x
        x = self.norm1(x)
        shift_first = bool(shift) and self.shift_before_pad
        if shift_first:
            x = jnp.roll(x, (-shift, -shift), axis=(1, 2))
        pad_h, pad_w = (-height) % window, (-width) % window
        if pad_h or pad_w:
            x = jnp.pad(x, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)))
        padded_h, padded_w = height + pad_h, width + pad_w
        if shift and not shift_first:
            x = jnp.roll(x, (-shift, -shift), axis=(1, 2))
        region_ids = shifted_window_regions(padded_h, padded_w, window, shift) if shift else None
        x, attention = self.attn(window_partition(x, window), region_ids, rngs=rngs,
                                 output_attentions=output_attentions)
        x = window_reverse(x, window, padded_h, padded_w)
        if shift and not shift_first:
            x = jnp.roll(x, (shift, shift), axis=(1, 2))
        if pad_h or pad_w:
            x = x[:, :height, :width]
        if shift_first:
            x = jnp.roll(x, (shift, shift), axis=(1, 2))
        x = shortcut + self.drop_path(x, rngs=rngs)
        y = self.mlp(self.norm2(x), rngs=rngs)
        if self.mlp_drop_path:
            y = self.drop_path(y, rngs=rngs)
        return x + y, attention


class SwinPatchMerging(nnx.Module):
    """2x2 neighbourhoods (odd sizes padded right/bottom) concatenated to 4C, LayerNorm, linear to 2C."""

    def __init__(self, dim: int, *, eps: float = 1e-5, init_std: float = 0.02, dtype, param_dtype,
                 rngs: nnx.Rngs):
        self.norm = layer_norm(4 * dim, eps=eps, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.reduction = _linear(4 * dim, 2 * dim, use_bias=False, init_std=init_std, dtype=dtype,
                                 param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        batch, height, width, channels = x.shape
        if height % 2 or width % 2:
            x = jnp.pad(x, ((0, 0), (0, height % 2), (0, width % 2), (0, 0)))
            height, width = height + height % 2, width + width % 2
        # Channel order (row, col): (0, 0), (1, 0), (0, 1), (1, 1), as transformers and timm concatenate.
        x = x.reshape(batch, height // 2, 2, width // 2, 2, channels).transpose(0, 1, 3, 4, 2, 5)
        return self.reduction(self.norm(x.reshape(batch, height // 2, width // 2, 4 * channels)))


class SwinStage(nnx.Module):
    """`depth` blocks, odd ones shifted by `shift_size` (default half a window; 0: none), then patch merging unless
    `downsample` is False. `mlp_drop_path` and `shift_before_pad` go to every block (see SwinBlock).

    Returns (output, output before merging, attention probabilities of the last block or None).
    """

    def __init__(self, dim: int, depth: int, num_heads: int, *, window_size: int, drop_path: Sequence[float],
                 downsample: bool, mlp_ratio: float = 4.0, qkv_bias: bool = True, hidden_act: str = "gelu",
                 layer_norm_eps: float = 1e-5, hidden_dropout: float = 0.0, attention_dropout: float = 0.0,
                 merge_eps: float = 1e-5, init_std: float = 0.02, shift_size: int | None = None,
                 mlp_drop_path: bool = False, shift_before_pad: bool = False, dtype, param_dtype, rngs: nnx.Rngs):
        shift_size = window_size // 2 if shift_size is None else shift_size
        self.blocks = nnx.List([
            SwinBlock(dim, num_heads, window_size=window_size, shift_size=0 if i % 2 == 0 else shift_size,
                      mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, hidden_act=hidden_act, layer_norm_eps=layer_norm_eps,
                      hidden_dropout=hidden_dropout, attention_dropout=attention_dropout, drop_path=drop_path[i],
                      mlp_drop_path=mlp_drop_path, shift_before_pad=shift_before_pad, init_std=init_std,
                      dtype=dtype, param_dtype=param_dtype, rngs=rngs)
            for i in range(depth)
        ])
        self.downsample = (SwinPatchMerging(dim, eps=merge_eps, init_std=init_std, dtype=dtype,
                                            param_dtype=param_dtype, rngs=rngs) if downsample else None)
        self.gradient_checkpointing = False  # set from the config by jaxbackbones.training.configure

    def __call__(self, x: jax.Array, *, rngs: nnx.Rngs | None = None,
                 output_attentions: bool = False) -> tuple[jax.Array, jax.Array, jax.Array | None]:
        def run(block, x, rngs):
            return block(x, rngs=rngs, output_attentions=output_attentions)

        attention = None
        for block in self.blocks:
            x, attention = checkpointed(self.gradient_checkpointing, run, block, x, rngs)
        before = x
        if self.downsample is not None:
            x = self.downsample(x)
        return x, before, attention


class SwinBackbone(BackboneModuleMixin, nnx.Module):
    """Swin Transformer feature extractor with transformers' SwinBackbone semantics, in Flax NNX.

    Args:
        config: the architecture and the selected stages (`out_features` / `out_indices`).
        rngs: initialises the weights (random until loaded).
        dtype: compute dtype; LayerNorm statistics and attention softmax are always float32.
        param_dtype: dtype of the parameters.
        data_format: "channels_last" (default) takes and returns NHWC; "channels_first" NCHW, as transformers.

    `model(pixel_values)` with pixel_values of shape (batch, height, width, num_channels), any height and width,
    returns a `BackboneOutput` whose `feature_maps` are the selected stages, each through its LayerNorm. Every stage
    has a norm in `hidden_states_norms` (transformers creates them for the selected stages only), so the selection
    can change after loading; a checkpoint lacking some gets them at weight 1, bias 0, as transformers does.

    Dropout (`hidden_dropout_prob`, `attention_probs_dropout_prob`) and stochastic depth (`drop_path_rate`, spaced
    linearly over all blocks) act only in train mode (`.train()`, the state of a fresh module); they then draw keys
    from the `rngs` given to the call (`model(x, rngs=nnx.Rngs(dropout=seed))`). `.eval()` makes the model
    deterministic, as `AutoBackbone.from_pretrained` returns it. The config's `freeze_stages` and
    `gradient_checkpointing` apply as `jaxbackbones.training` describes.
    """

    def __init__(self, config: SwinConfig, *, rngs: nnx.Rngs, dtype=jnp.float32, param_dtype=jnp.float32,
                 data_format: str = "channels_last"):
        self.config = config
        self.data_format = validate_data_format(data_format)
        self.dtype = dtype
        num_stages = len(config.depths)
        dims = [int(config.embed_dim * 2**i) for i in range(num_stages)]
        self.num_features = (config.embed_dim, *dims)
        image_h, image_w = _pair(config.image_size)
        patch_h, patch_w = _pair(config.patch_size)
        # Strides along the height (hub Swin checkpoints all have square patches).
        self.reductions = (patch_h, *(patch_h * 2**i for i in range(num_stages)))
        init_std = config.initializer_range
        # transformers' embedding, patch-merging and backbone norms use nn.LayerNorm's default eps, not the config's.
        self.patch_embed = SwinPatchEmbed(config.num_channels, config.embed_dim, config.patch_size, eps=1e-5,
                                          init_std=init_std, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.position_grid = (image_h // patch_h, image_w // patch_w)
        if config.use_absolute_embeddings:
            self.absolute_pos_embed = nnx.Param(
                initializers.full((1, self.position_grid[0] * self.position_grid[1], config.embed_dim), 0, param_dtype)
            )
        else:
            self.absolute_pos_embed = None
        self.pos_drop = nnx.Dropout(config.hidden_dropout_prob)

        rates = drop_path_rates(config.drop_path_rate, config.depths)
        self.stages = nnx.List([
            SwinStage(dims[i], config.depths[i], config.num_heads[i], window_size=config.window_size,
                      drop_path=rates[i], downsample=i < num_stages - 1,
                      mlp_ratio=config.mlp_ratio, qkv_bias=config.qkv_bias, hidden_act=config.hidden_act,
                      layer_norm_eps=config.layer_norm_eps, hidden_dropout=config.hidden_dropout_prob,
                      attention_dropout=config.attention_probs_dropout_prob, merge_eps=1e-5, init_std=init_std,
                      dtype=dtype, param_dtype=param_dtype, rngs=rngs)
            for i in range(num_stages)
        ])
        self.hidden_states_norms = nnx.Dict({
            name: layer_norm(channels, eps=1e-5, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
            for name, channels in zip(config.stage_names, self.num_features)
        })
        configure_training(self)

    def stage_paths(self) -> dict[str, list[tuple]]:
        """State-path prefixes of what each stage owns (what `freeze_stages` freezes): the stem is the patch
        embedding (and absolute position embedding); stage k its blocks and the patch merging in front of them
        (the one at the end of stage k-1); each with its output norm."""
        paths = {"stem": [("patch_embed",), ("absolute_pos_embed",), ("pos_drop",), ("hidden_states_norms", "stem")]}
        for i in range(len(self.stages)):
            name = f"stage{i + 1}"
            paths[name] = [("stages", i, "blocks"), ("hidden_states_norms", name)]
            if i > 0:
                paths[name].append(("stages", i - 1, "downsample"))
        return paths

    def __call__(self, pixel_values: jax.Array, output_hidden_states: bool = False, output_attentions: bool = False,
                 *, rngs: nnx.Rngs | None = None) -> BackboneOutput:
        self.check_rngs(rngs)
        pixel_values = validate_pixel_values(pixel_values, self.config.num_channels, self.data_format)
        x = self.patch_embed(from_channels_first(pixel_values, self.data_format).astype(self.dtype))
        if self.absolute_pos_embed is not None:
            grid = tuple(x.shape[1:3])
            if grid != self.position_grid:
                raise ValueError(
                    f"use_absolute_embeddings=True: the input gives a {grid[0]}x{grid[1]} patch grid but the position "
                    f"embeddings cover {self.position_grid[0]}x{self.position_grid[1]} (image_size="
                    f"{self.config.image_size}, patch_size={self.config.patch_size}); transformers' SwinBackbone "
                    "does not interpolate them either, so the input must have the config's image_size"
                )
            x = x + self.absolute_pos_embed[...].reshape(1, *grid, -1).astype(x.dtype)
        x = self.pos_drop(x, rngs=rngs)

        hidden_states, attentions = [x], []
        for stage in self.stages:
            x, before, attention = stage(x, rngs=rngs, output_attentions=output_attentions)
            hidden_states.append(before)
            attentions.append(attention)
        feature_maps = tuple(
            to_channels_first(self.hidden_states_norms[name](hidden_states[self.stage_names.index(name)]),
                              self.data_format)
            for name in self.out_features
        )
        return BackboneOutput(
            feature_maps=feature_maps,
            hidden_states=tuple(to_channels_first(h, self.data_format) for h in hidden_states)
            if output_hidden_states else None,
            attentions=tuple(attentions) if output_attentions else None,
        )
