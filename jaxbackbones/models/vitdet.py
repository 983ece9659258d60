"""Windowed plain ViTs: ViTDet (transformers' `VitDetBackbone`, ViTMatte's backbone), SAM's image encoder
(transformers' `SamVisionEncoder`, with its neck) and timm's `samvit_*`: one implementation.

`WindowedViTLayout` names what shapes one (resolved from a transformers config here, from timm's arguments in
`models/timm/vitdet.py`); `WindowedViT` builds and runs it: a patch embedding, an absolute position embedding on a
(gh, gw) grid, pre-norm blocks that attend in windows or globally with decomposed relative position biases, ViTDet's
optional bottleneck residual blocks, and SAM's neck (1x1 conv, LayerNorm, 3x3 conv, LayerNorm). Tokens stay a
(B, h, w, C) map throughout.

Quirks, from transformers' `models/vitdet/modeling_vitdet.py`, `models/sam/modeling_sam.py` and timm's
`models/vision_transformer_sam.py`:
- windows: a windowed block pads its normed map right and bottom with zeros to a multiple of `window_size`,
  attends within each window (the padded tokens take part, unmasked, as in torch), and crops the padding off again.
- relative positions (MViTv2's decomposed form): per block a table of 2 * n - 1 rows per axis (n: the window, or for
  global blocks the `image_size` grid); at another grid it is resampled with torch's linear interpolation
  (`layers.relative_positions`) and gathered at q - k; the bias `q . R_h + q . R_w` uses the unscaled queries.
- absolute positions: ViTDet's embedding is (1, 1 + gh * gw, C) over a class token position (never used) and the
  `pretrain_image_size` grid, resampled with bicubic (`antialias=False`) when the input grid differs. SAM's is
  (1, gh, gw, C); transformers' SAM refuses any input but `image_size` (our default too, with the same message);
  with the config's `interpolate_pos_encoding=True`, and in timm, it is resampled with antialiased bicubic (timm's
  `resample_abs_pos_embed_nhwc`), and the global blocks' relative tables as above (transformers' own code would).
- inputs that are not a multiple of the patch: transformers' convolution drops the remainder; timm refuses them.
- stages: `stem` the embedded map, `stageK` the output of block K (after its residual block); SAM's `neck` the image
  embedding. No final norm. Stochastic depth grows linearly over the blocks (ViTDet, timm); SAM has none.
- norms: blocks LayerNorm `layer_norm_eps` (transformers; timm's SAM blocks use torch's default 1e-5), the neck and
  ViTDet's residual blocks LayerNorm over channels with eps 1e-6.

Numerics: parameters in `param_dtype`, compute in `dtype`; LayerNorm statistics, attention logits with the relative
biases, softmax and position resampling in float32. Attention runs one head at a time on CPU (the
`per_head_attention` rewrite): a SAM global block at 1024 has 4096 tokens, and one (T, T) head stays in cache.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from .. import initializers
from ..backbone import BackboneModuleMixin, BackboneOutput
from ..layers import (
    DropPath,
    Mlp,
    checkpointed,
    conv2d,
    drop_path_rates,
    get_activation,
    layer_norm,
    relative_positions,
    resize_bicubic,
    rewrites,
)
from ..training import configure as configure_training
from .common import from_channels_first, pair, to_channels_first, validate_data_format, validate_pixel_values
from .vitdet_configs import SamConfig, SamVisionConfig, VitDetConfig


@dataclasses.dataclass(frozen=True)
class WindowedViTLayout:
    """A windowed ViT, resolved from a transformers config or timm's arguments."""

    embed_dim: int
    depth: int
    num_heads: int
    patch_size: int
    mlp_hidden: int
    num_channels: int = 3
    activation: str = "gelu"
    qkv_bias: bool = True
    window_size: int = 0
    windowed: tuple[bool, ...] = ()  # per block: attends in windows (True) or globally
    residual: tuple[bool, ...] = ()  # per block: followed by ViTDet's bottleneck residual block
    rel_pos: bool = False
    rel_pos_grid: tuple[int, int] = (14, 14)  # the global blocks' table grid
    pos_grid: tuple[int, int] | None = None  # the absolute position embedding's grid; None: none
    pos_class_token: bool = False  # ViTDet's (1, 1 + gh * gw, C) layout; else (1, gh, gw, C)
    pos_antialias: bool = False
    fixed_input: tuple[int, int] | None = None  # the only input size accepted (transformers' SAM)
    require_patch_multiple: bool = False  # refuse inputs that are not a multiple of the patch (timm)
    neck_channels: int | None = None
    norm_eps: float = 1e-6
    drop_path: tuple[float, ...] = ()
    mlp_dropout: float = 0.0
    attention_dropout: float = 0.0
    proj_dropout: float = 0.0  # after the attention projection (timm)
    pos_dropout: float = 0.0
    init_std: float = 0.02

    def __post_init__(self):
        for name in ("windowed", "residual", "drop_path"):
            value = getattr(self, name)
            if value and len(value) != self.depth:
                raise ValueError(f"{name} gives {len(value)} values for {self.depth} blocks")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"{self.embed_dim} channels cannot be split into {self.num_heads} heads")

    def block_window(self, index: int) -> int:
        return self.window_size if self.windowed and self.windowed[index] else 0


def _attention_per_head(query, key, value, rel_h, rel_w):
    """(N, T, heads, d) q, k, v and (N, h, w, heads, h or w) biases -> (N, T, heads, d), one head at a time."""
    n, tokens, heads, head_dim = query.shape
    scale = np.float32(head_dim**-0.5)

    def one_head(args):
        q, k, v, bh, bw = args  # (N, T, d), ..., (N, h, w, h), (N, h, w, w)
        logits = jnp.einsum("nqd,nkd->nqk", q, k, preferred_element_type=jnp.float32) * scale
        if bh is not None:
            bias = (bh[..., :, None] + bw[..., None, :]).reshape(n, tokens, tokens)
            logits = logits + bias
        return jnp.einsum("nqk,nkd->nqd", jax.nn.softmax(logits, axis=-1).astype(v.dtype), v)

    def per_head(x):
        return None if x is None else jnp.moveaxis(x, -2 if x.ndim == 4 else 3, 0)

    out = jax.lax.map(one_head, (per_head(query), per_head(key), per_head(value), per_head(rel_h), per_head(rel_w)))
    return jnp.moveaxis(out, 0, 2)


def _attention_plain(query, key, value, rel_h, rel_w):
    n, tokens, heads, _ = query.shape
    bias = None
    if rel_h is not None:  # (N, h, w, heads, h, w) -> (N, heads, T, T)
        bias = rel_h[..., :, None] + rel_w[..., None, :]
        bias = jnp.moveaxis(bias, 3, 1).reshape(n, heads, tokens, tokens).astype(query.dtype)
    return jax.nn.dot_product_attention(query, key, value, bias=bias)


class WindowAttention(nnx.Module):
    """Self-attention over a (N, h, w, C) map with optional decomposed relative positions (`rel_pos_h` (2h' - 1, d),
    `rel_pos_w`), as SAM's and ViTDet's attention: one fused `qkv` Linear (with one bias), `proj`."""

    def __init__(self, dim: int, num_heads: int, *, qkv_bias: bool, rel_pos_size: tuple[int, int] | None,
                 attention_dropout: float, proj_dropout: float, init_std: float, dtype, param_dtype, rngs: nnx.Rngs):
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.dtype = dtype
        init = initializers.normal(init_std)
        options = dict(kernel_init=init, bias_init=initializers.zeros, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.qkv = nnx.Linear(dim, 3 * dim, use_bias=qkv_bias, **options)
        self.proj = nnx.Linear(dim, dim, **options)
        if rel_pos_size is not None:
            self.rel_pos_h = nnx.Param(jnp.zeros((2 * rel_pos_size[0] - 1, self.head_dim), param_dtype))
            self.rel_pos_w = nnx.Param(jnp.zeros((2 * rel_pos_size[1] - 1, self.head_dim), param_dtype))
        else:
            self.rel_pos_h = self.rel_pos_w = None
        self.attn_drop = nnx.Dropout(attention_dropout)
        self.proj_drop = nnx.Dropout(proj_dropout)

    def __call__(self, x: jax.Array, *, rngs: nnx.Rngs | None = None,
                 output_attentions: bool = False) -> tuple[jax.Array, jax.Array | None]:
        n, height, width, channels = x.shape
        tokens = height * width
        qkv = self.qkv(x).reshape(n, tokens, 3, self.num_heads, self.head_dim)
        query, key, value = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # (N, T, heads, d)
        rel_h = rel_w = None
        if self.rel_pos_h is not None:
            table_h = relative_positions(self.rel_pos_h[...], height, height)  # (h, h, d)
            table_w = relative_positions(self.rel_pos_w[...], width, width)
            grid_q = query.reshape(n, height, width, self.num_heads, self.head_dim).astype(jnp.float32)
            precision = jax.lax.Precision.HIGHEST if self.dtype == jnp.float32 else None
            rel_h = jnp.einsum("nhwad,hkd->nhwak", grid_q, table_h, precision=precision)
            rel_w = jnp.einsum("nhwad,wkd->nhwak", grid_q, table_w, precision=precision)
        dropout_active = self.attn_drop.rate > 0 and not self.attn_drop.deterministic
        probs = None
        if output_attentions or dropout_active:
            logits = jnp.einsum("bqhd,bkhd->bhqk", query, key, preferred_element_type=jnp.float32)
            logits = logits * np.float32(self.head_dim**-0.5)
            if rel_h is not None:
                bias = rel_h[..., :, None] + rel_w[..., None, :]
                logits = logits + jnp.moveaxis(bias, 3, 1).reshape(n, self.num_heads, tokens, tokens)
            probs = jax.nn.softmax(logits, axis=-1)
            out = jnp.einsum("bhqk,bkhd->bqhd", self.attn_drop(probs, rngs=rngs).astype(self.dtype), value)
        else:
            out = rewrites.choose("per_head_attention", _attention_per_head, _attention_plain,
                                  query, key, value, rel_h, rel_w)
        out = self.proj_drop(self.proj(out.reshape(n, height, width, channels)), rngs=rngs)
        return out, (probs if output_attentions else None)


def window_partition(x: jax.Array, window: int) -> tuple[jax.Array, tuple[int, int]]:
    """(B, H, W, C) -> (B * windows, window, window, C), zero-padded right and bottom; and the padded (H, W)."""
    batch, height, width, channels = x.shape
    pad_h, pad_w = (-height) % window, (-width) % window
    if pad_h or pad_w:
        x = jnp.pad(x, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)))
    padded = height + pad_h, width + pad_w
    x = x.reshape(batch, padded[0] // window, window, padded[1] // window, window, channels)
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(-1, window, window, channels), padded


def window_unpartition(windows: jax.Array, window: int, padded: tuple[int, int], size: tuple[int, int]) -> jax.Array:
    """The inverse of `window_partition`, the padding cropped to `size`."""
    rows, cols = padded[0] // window, padded[1] // window
    batch = windows.shape[0] // (rows * cols)
    x = windows.reshape(batch, rows, cols, window, window, -1).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(batch, *padded, -1)[:, :size[0], :size[1]]


class ResidualBottleneck(nnx.Module):
    """ViTDet's `VitDetResBottleneckBlock`: x + norm3(conv3(act(norm2(conv2(act(norm1(conv1(x)))))))), convolutions
    without bias (1x1, 3x3 padded 1, 1x1), channel LayerNorms with eps 1e-6."""

    def __init__(self, dim: int, activation: str, *, dtype, param_dtype, rngs: nnx.Rngs):
        options = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.conv1 = conv2d(dim, dim // 2, 1, **options)
        self.norm1 = layer_norm(dim // 2, eps=1e-6, **options)
        self.conv2 = conv2d(dim // 2, dim // 2, 3, padding=1, **options)
        self.norm2 = layer_norm(dim // 2, eps=1e-6, **options)
        self.conv3 = conv2d(dim // 2, dim, 1, **options)
        self.norm3 = layer_norm(dim, eps=1e-6, **options)
        self.act = get_activation(activation)

    def __call__(self, x: jax.Array) -> jax.Array:
        y = self.act(self.norm1(self.conv1(x)))
        y = self.act(self.norm2(self.conv2(y)))
        return x + self.norm3(self.conv3(y))


class Block(nnx.Module):
    """`x + drop_path(attn(norm1(x)))` (in windows or globally), `x + drop_path(mlp(norm2(x)))`, then the optional
    residual block."""

    def __init__(self, layout: WindowedViTLayout, index: int, *, dtype, param_dtype, rngs: nnx.Rngs):
        dim, options = layout.embed_dim, dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.window_size = layout.block_window(index)
        rel_pos_size = ((self.window_size,) * 2 if self.window_size else layout.rel_pos_grid) if layout.rel_pos \
            else None
        self.norm1 = layer_norm(dim, eps=layout.norm_eps, **options)
        self.attn = WindowAttention(dim, layout.num_heads, qkv_bias=layout.qkv_bias, rel_pos_size=rel_pos_size,
                                    attention_dropout=layout.attention_dropout, proj_dropout=layout.proj_dropout,
                                    init_std=layout.init_std, **options)
        self.norm2 = layer_norm(dim, eps=layout.norm_eps, **options)
        self.mlp = Mlp(dim, layout.mlp_hidden, layout.activation, dropout=layout.mlp_dropout,
                       init_std=layout.init_std, **options)
        self.drop_path = DropPath(layout.drop_path[index] if layout.drop_path else 0.0)
        self.residual = (ResidualBottleneck(dim, layout.activation, **options)
                         if layout.residual and layout.residual[index] else None)
        self.gradient_checkpointing = False  # set from the config by jaxbackbones.training.configure

    def __call__(self, x: jax.Array, *, rngs: nnx.Rngs | None = None,
                 output_attentions: bool = False) -> tuple[jax.Array, jax.Array | None]:
        y = self.norm1(x)
        if self.window_size:
            size = y.shape[1:3]
            y, padded = window_partition(y, self.window_size)
        y, attention = self.attn(y, rngs=rngs, output_attentions=output_attentions)
        if self.window_size:
            y = window_unpartition(y, self.window_size, padded, size)
        x = x + self.drop_path(y, rngs=rngs)
        x = x + self.drop_path(self.mlp(self.norm2(x), rngs=rngs), rngs=rngs)
        if self.residual is not None:
            x = self.residual(x)
        return x, attention


class Neck(nnx.Module):
    """SAM's neck: 1x1 conv (no bias), channel LayerNorm, 3x3 conv padded 1 (no bias), channel LayerNorm (eps 1e-6)."""

    def __init__(self, dim: int, channels: int, *, dtype, param_dtype, rngs: nnx.Rngs):
        options = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.conv1 = conv2d(dim, channels, 1, **options)
        self.norm1 = layer_norm(channels, eps=1e-6, **options)
        self.conv2 = conv2d(channels, channels, 3, padding=1, **options)
        self.norm2 = layer_norm(channels, eps=1e-6, **options)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.norm2(self.conv2(self.norm1(self.conv1(x))))


class PatchEmbed(nnx.Module):
    """`proj`: a convolution with stride = kernel = patch, unpadded (a remainder is dropped)."""

    def __init__(self, num_channels: int, dim: int, patch: int, *, init_std: float, dtype, param_dtype,
                 rngs: nnx.Rngs):
        self.proj = nnx.Conv(num_channels, dim, kernel_size=(patch, patch), strides=(patch, patch), padding="VALID",
                             kernel_init=initializers.normal(init_std), bias_init=initializers.zeros, dtype=dtype,
                             param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.proj(x)


class WindowedViT(nnx.Module):
    """The trunk: `patch_embed.proj`, `pos_embed`, `pos_drop`, `blocks`, `neck` (timm's names). `encode` runs it."""

    def __init__(self, layout: WindowedViTLayout, *, dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs):
        self.layout = layout
        self.dtype = dtype
        dim, patch = layout.embed_dim, layout.patch_size
        self.patch_embed = PatchEmbed(layout.num_channels, dim, patch, init_std=layout.init_std, dtype=dtype,
                                      param_dtype=param_dtype, rngs=rngs)
        if layout.pos_grid is not None:
            grid = layout.pos_grid
            shape = (1, 1 + grid[0] * grid[1], dim) if layout.pos_class_token else (1, *grid, dim)
            self.pos_embed = nnx.Param(initializers.normal(layout.init_std)(rngs.params(), shape, param_dtype))
        else:
            self.pos_embed = None
        self.pos_drop = nnx.Dropout(layout.pos_dropout)
        self.blocks = nnx.List([Block(layout, i, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
                                for i in range(layout.depth)])
        self.neck = (Neck(dim, layout.neck_channels, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
                     if layout.neck_channels else None)

    def encode(self, pixels: jax.Array, *, rngs: nnx.Rngs | None = None, output_attentions: bool = False):
        return encode(self, pixels, rngs=rngs, output_attentions=output_attentions)


def position_embedding(trunk, grid: tuple[int, int]) -> jax.Array:
    """(1, h, w, C) float32: the absolute embedding on the input's patch grid, resampled if it differs."""
    layout = trunk.layout
    embedding = trunk.pos_embed[...].astype(jnp.float32)
    if layout.pos_class_token:
        embedding = embedding[:, 1:]
    embedding = embedding.reshape(*layout.pos_grid, -1)
    if tuple(grid) != tuple(layout.pos_grid):
        embedding = resize_bicubic(embedding, grid, antialias=layout.pos_antialias)
    return embedding[None]


def embed(trunk, pixels: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
    """NHWC pixels -> the embedded (B, h, w, C) map."""
    layout = trunk.layout
    _, height, width, _ = pixels.shape
    patch = layout.patch_size
    if layout.fixed_input is not None and (height, width) != tuple(layout.fixed_input):
        raise ValueError(
            f"Input image size ({height}*{width}) doesn't match model ({layout.fixed_input[0]}*{layout.fixed_input[1]})"
            ", which transformers' SAM refuses; set interpolate_pos_encoding=True in the config to run other sizes "
            "as timm's samvit does (position embeddings resampled), or resize the input")
    if height < patch or width < patch:
        raise ValueError(f"input of {height}x{width} pixels is smaller than one {patch}x{patch} patch")
    if layout.require_patch_multiple and (height % patch or width % patch):
        raise ValueError(f"input of {height}x{width} pixels is not a multiple of the {patch}x{patch} patch, which "
                         "timm refuses; resize or pad the input")
    x = trunk.patch_embed.proj(pixels.astype(trunk.dtype))
    if trunk.pos_embed is not None:
        x = x + position_embedding(trunk, x.shape[1:3]).astype(x.dtype)
    return trunk.pos_drop(x, rngs=rngs)


def encode(trunk, pixels: jax.Array, *, rngs: nnx.Rngs | None = None, output_attentions: bool = False):
    """NHWC pixels -> ([embedded map, output of block 1, ...], [attention probabilities per block or None])."""
    x = embed(trunk, pixels, rngs=rngs)

    def run(block, x, rngs):
        return block(x, rngs=rngs, output_attentions=output_attentions)

    maps, attentions = [x], []
    for block in trunk.blocks:
        x, attention = checkpointed(block.gradient_checkpointing, run, block, x, rngs)
        maps.append(x)
        attentions.append(attention)
    return maps, attentions


# ---------------------------------------------------------------------------------------------------------------
# transformers' backbones


class WindowedViTBackbone(BackboneModuleMixin, WindowedViT):
    """A windowed ViT feature extractor with transformers' backbone semantics.

    Args:
        config: the architecture and the selected stages (`out_features` / `out_indices`).
        rngs: initialises the weights (random until loaded).
        dtype: compute dtype; LayerNorm statistics, attention softmax and position resampling are float32.
        param_dtype: dtype of the parameters.
        data_format: "channels_last" (default) takes NHWC pixels and returns NHWC maps; "channels_first" NCHW.

    `model(pixel_values)` returns a `BackboneOutput`: `feature_maps` (B, H / patch, W / patch, C) per selected stage;
    `hidden_states` (every stage's map) and `attentions` ((B * windows, heads, T, T) per block) on request.
    """

    config_class: ClassVar[type]

    def __init__(self, config, *, rngs: nnx.Rngs, dtype=jnp.float32, param_dtype=jnp.float32,
                 data_format: str = "channels_last"):
        if not isinstance(config, self.config_class):
            raise ValueError(f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(config).__name__}")
        self.config = config
        self.data_format = validate_data_format(data_format)
        layout = self.layout_of(config)
        super().__init__(layout, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        stages = len(config.stage_names)
        self.num_features = (config.hidden_size,) * (layout.depth + 1) + (
            (layout.neck_channels,) if layout.neck_channels else ())
        self.reductions = (layout.patch_size,) * stages
        configure_training(self)

    @classmethod
    def layout_of(cls, config) -> WindowedViTLayout:
        raise NotImplementedError

    def stage_paths(self) -> dict[str, list[tuple]]:
        """`stem`: the patch and position embeddings; `stageK`: block K; SAM's `neck`: the neck."""
        paths = {"stem": [("patch_embed",), ("pos_embed",), ("pos_drop",)]}
        paths.update({f"stage{i + 1}": [("blocks", i)] for i in range(self.layout.depth)})
        if self.neck is not None:
            paths["neck"] = [("neck",)]
        return paths

    def __call__(self, pixel_values: jax.Array, output_hidden_states: bool = False, output_attentions: bool = False,
                 *, rngs: nnx.Rngs | None = None) -> BackboneOutput:
        self.check_rngs(rngs)
        pixel_values = validate_pixel_values(pixel_values, self.config.num_channels, self.data_format)
        maps, attentions = self.encode(from_channels_first(pixel_values, self.data_format), rngs=rngs,
                                       output_attentions=output_attentions)
        if self.neck is not None and (output_hidden_states or "neck" in self.out_features):
            maps.append(self.neck(maps[-1]))
        by_name = dict(zip(self.stage_names, maps))
        feature_maps = tuple(to_channels_first(by_name[name], self.data_format) for name in self.out_features)
        return BackboneOutput(
            feature_maps=feature_maps,
            hidden_states=tuple(to_channels_first(x, self.data_format) for x in maps) if output_hidden_states else None,
            attentions=tuple(attentions) if output_attentions else None,
        )


class VitDetBackbone(WindowedViTBackbone):
    """transformers' `VitDetBackbone` in Flax NNX (ViTMatte's backbones)."""

    config_class = VitDetConfig

    @classmethod
    def layout_of(cls, config: VitDetConfig) -> WindowedViTLayout:
        depth = config.num_hidden_layers
        return WindowedViTLayout(
            embed_dim=config.hidden_size, depth=depth, num_heads=config.num_attention_heads,
            patch_size=_square_patch(config.patch_size),
            mlp_hidden=int(config.hidden_size * config.mlp_ratio), num_channels=config.num_channels,
            activation=config.hidden_act, qkv_bias=config.qkv_bias, window_size=config.window_size,
            windowed=tuple(i in config.window_block_indices for i in range(depth)),
            residual=tuple(i in config.residual_block_indices for i in range(depth)),
            rel_pos=config.use_relative_position_embeddings, rel_pos_grid=config.patch_grid,
            pos_grid=config.pretrain_grid if config.use_absolute_position_embeddings else None, pos_class_token=True,
            norm_eps=config.layer_norm_eps, drop_path=tuple(drop_path_rates(config.drop_path_rate, [depth])[0]),
            mlp_dropout=config.dropout_prob, init_std=config.initializer_range)


def _square_patch(patch_size) -> int:
    height, width = pair(patch_size, "patch_size")
    if height != width:
        raise ValueError(f"patch_size {patch_size!r}: square patches only")
    return height


class SamVisionBackbone(WindowedViTBackbone):
    """transformers' `SamVisionEncoder` (SAM's image encoder, with its neck) in Flax NNX, as a backbone: the default
    output is the `neck` stage, the image embedding (`last_hidden_state`); every block's output is a stage."""

    config_class = SamVisionConfig

    def __init__(self, config, **kwargs):
        if not isinstance(config, SamVisionConfig):  # SamConfig is one
            raise ValueError(f"SamVisionBackbone needs a SamVisionConfig or SamConfig, got {type(config).__name__}")
        super().__init__(config, **kwargs)

    @classmethod
    def layout_of(cls, config: SamVisionConfig) -> WindowedViTLayout:
        depth, grid = config.num_hidden_layers, config.image_size // config.patch_size
        return WindowedViTLayout(
            embed_dim=config.hidden_size, depth=depth, num_heads=config.num_attention_heads,
            patch_size=config.patch_size, mlp_hidden=config.mlp_dim, num_channels=config.num_channels,
            activation=config.hidden_act, qkv_bias=config.qkv_bias, window_size=config.window_size,
            windowed=tuple(i not in config.global_attn_indexes for i in range(depth)),
            rel_pos=config.use_rel_pos, rel_pos_grid=(grid, grid), pos_grid=(grid, grid) if config.use_abs_pos else None,
            pos_antialias=True,
            fixed_input=None if config.interpolate_pos_encoding else (config.image_size,) * 2,
            neck_channels=config.output_channels, norm_eps=config.layer_norm_eps,
            attention_dropout=config.attention_dropout, init_std=0.02)


__all__ = ["SamConfig", "SamVisionBackbone", "SamVisionConfig", "VitDetBackbone", "VitDetConfig", "WindowedViT",
           "WindowedViTLayout"]
