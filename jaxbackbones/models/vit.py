"""Vision Transformers: one implementation for DINOv2, DINOv2 with registers, DINOv3 and timm's ViTs.

`ViTLayout` names what shapes a ViT (timm's `vision_transformer.py` is the model: one class, many weights, options
named for what they do); `VisionTransformer` builds and runs it: patch embedding, class and register tokens, a
learned absolute position embedding and/or rotary positions, pre-norm blocks with optional layer scale. The
backbones below give it transformers' semantics, family by family; `models/timm/vit.py` gives it timm's.

Any input size works with the same module (a new size retraces under `jit`): the learned position embedding is
resampled to the input's patch grid with torch's bicubic, numpy-built tables computed at trace time
(`layers.resize_bicubic`); rotary positions are computed for the grid. An input that is not a multiple of the patch
drops the remainder (transformers' convolution does); timm refuses it unless `dynamic_img_pad` pads it.

transformers' quirks, from `models/dinov2/modeling_dinov2.py`, `dinov2_with_registers/modular_dinov2_with_registers.py`
and `dinov3_vit/modeling_dinov3_vit.py` (5.x):
- stages: `stem` is the embedded token sequence (patches, class and register tokens, position embedding added,
  after the embedding dropout), `stageK` the output of block K. `hidden_states` are these sequences, (B, T, C),
  raw (no norm), as transformers returns them.
- DINOv2: the position embedding covers the class token and the patch grid of `image_size`; at another grid it is
  resampled with `F.interpolate(size=(H // patch, W // patch), mode="bicubic", align_corners=False)` (no
  antialiasing) in float32 (transformers 5; older versions passed a `scale_factor` instead, which samples at slightly
  other positions). transformers reshapes that grid as sqrt(positions) squared, so it cannot run a non-square
  `image_size`; we use the config's (H // patch, W // patch) grid. Skipping the resampling at the checkpoint's grid
  (transformers also requires H == W to skip) changes nothing: resampling to the same size is the identity.
  Selected maps go through `layernorm` when `apply_layernorm`; `reshape_hidden_states=False` returns the whole
  sequence, class token included. Stochastic depth has the same rate in every block (`drop_path_rate`), on both
  residual branches.
- DINOv2 with registers: the register tokens are inserted between the class token and the patches AFTER the
  position embedding is added (they have none); resampling uses `antialias=True` (Pillow's a = -0.5 cubic, even
  when enlarging). `reshape_hidden_states=False` returns the whole sequence, class and register tokens included.
- DINOv3: no learned position embedding; rotary embeddings (`layers.RotaryPositions`) rotate q and k of the patch
  tokens only; coordinates augmented in train mode (`pos_embed_shift` / `_jitter` / `_rescale`, rescale 2.0 by
  default). The LAST stage always goes through `norm`, the others only with `apply_layernorm`;
  `reshape_hidden_states=False` returns the patch tokens only (class and register tokens dropped);
  `return_class_token` returns each selected stage's class token (after its norm) in `BackboneOutput.cls_tokens`.
  No key bias by default (`key_bias=False`).
- The mask token of the checkpoints is for masked-image pretraining (`bool_masked_pos`), which a backbone does not
  take: it is not loaded (reported as ignored).

Numerics: parameters in `param_dtype`, compute in `dtype`; LayerNorm statistics, attention logits and softmax,
position-embedding resampling and rotary angles in float32. Measured against float32 (dinov2-small and
dinov3-vits16 layouts, randomised weights, 224x224, CPU), `dtype=jnp.bfloat16` (float32 parameters) gives feature
maps within 1.0e-2 (block 3) to 1.7e-2 (block 12) of the float32 ones relative to their largest magnitude;
tests/test_vit.py bounds them at `BF16_MAP_ERROR`, and the gradients (global relative L2) at 3e-2.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
from flax import nnx

from .. import initializers
from ..backbone import BackboneModuleMixin, BackboneOutput
from ..layers import (
    Attention,
    DropPath,
    LayerScale,
    Mlp,
    RotaryPositions,
    checkpointed,
    layer_norm,
    resize_bicubic,
)
from ..training import configure as configure_training
from .common import from_channels_first, pair, to_channels_first, validate_data_format, validate_pixel_values
from .vit_configs import DINOv3ViTConfig, Dinov2Config, Dinov2WithRegistersConfig

# Bound on max |bf16 - fp32| / max |fp32| per feature map (measured: up to 1.7e-2, see the module docstring).
BF16_MAP_ERROR = 3e-2


@dataclasses.dataclass(frozen=True)
class ViTLayout:
    """A Vision Transformer, resolved from a transformers config or timm's arguments."""

    embed_dim: int
    depth: int
    num_heads: int
    patch_size: tuple[int, int]
    mlp_hidden: int  # hidden features of the MLP; of each of the gate and value halves when gated
    num_channels: int = 3
    mlp_activation: str = "gelu"
    gated_mlp: bool = False  # `fc2(act(gate) * value)` (SwiGLU with silu)
    qkv_bias: tuple[bool, bool, bool] = (True, True, True)
    proj_bias: bool = True
    mlp_bias: bool = True
    layer_scale: float | None = None  # initial value of the layer-scale vectors; None: no layer scale
    class_token: bool = True
    register_tokens: int = 0
    position_grid: tuple[int, int] | None = None  # the learned position embedding's patch grid; None: none
    embedded_prefix_tokens: int = 1  # leading prefix tokens (class, then registers) that the embedding covers
    position_antialias: bool = False  # resample it with torch's antialiased bicubic
    rope_theta: float | None = None  # rotary positions with this period base; None: none
    rope_shift: float | None = None
    rope_jitter: float | None = None
    rope_rescale: float | None = None
    norm_eps: float = 1e-6
    drop_path: tuple[float, ...] = ()  # per block; empty: none
    token_dropout: float = 0.0  # on the embedded tokens
    attention_dropout: float = 0.0
    proj_dropout: float = 0.0  # after the attention projection and in the MLP
    pad_to_patches: bool = False  # pad the input right/bottom to a multiple of the patch (timm's dynamic_img_pad)
    require_patch_multiple: bool = False  # refuse other inputs, as timm does without dynamic_img_pad
    init_std: float = 0.02

    def __post_init__(self):
        if self.drop_path and len(self.drop_path) != self.depth:
            raise ValueError(f"drop_path gives {len(self.drop_path)} rates for {self.depth} blocks")
        if not 0 <= self.embedded_prefix_tokens <= self.num_prefix_tokens:
            raise ValueError(f"embedded_prefix_tokens={self.embedded_prefix_tokens} must be in [0, "
                             f"{self.num_prefix_tokens}] (the class and register tokens)")
        if self.position_grid is None and self.rope_theta is None:
            raise ValueError("a ViT needs a learned position embedding (position_grid) or rotary positions")
        if self.rope_theta is not None and (self.embed_dim // self.num_heads) % 4:
            raise ValueError(f"rotary position embeddings need a head dimension divisible by 4, got "
                             f"{self.embed_dim // self.num_heads} ({self.embed_dim} channels, {self.num_heads} heads)")

    @property
    def num_prefix_tokens(self) -> int:
        return int(self.class_token) + self.register_tokens


class PatchEmbed(nnx.Module):
    """Non-overlapping patch projection `proj` (a convolution with stride = kernel = patch)."""

    def __init__(self, num_channels: int, embed_dim: int, patch_size: tuple[int, int], *, pad: bool,
                 strict: bool, init_std: float, dtype, param_dtype, rngs: nnx.Rngs):
        self.patch_size = patch_size
        self.pad = pad
        self.strict = strict
        self.proj = nnx.Conv(num_channels, embed_dim, kernel_size=patch_size, strides=patch_size, padding="VALID",
                             kernel_init=initializers.normal(init_std), bias_init=initializers.zeros,
                             dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """(B, H, W, C) -> (B, H / patch, W / patch, embed_dim)."""
        _, height, width, _ = x.shape
        if not self.pad and (height < self.patch_size[0] or width < self.patch_size[1]):
            raise ValueError(f"input of {height}x{width} pixels is smaller than one {self.patch_size[0]}x"
                             f"{self.patch_size[1]} patch")
        pad_h, pad_w = (-height) % self.patch_size[0], (-width) % self.patch_size[1]
        if self.pad and (pad_h or pad_w):
            x = jnp.pad(x, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)))
        elif self.strict and (pad_h or pad_w):
            raise ValueError(
                f"input of {height}x{width} pixels is not a multiple of the {self.patch_size[0]}x{self.patch_size[1]} "
                "patch, which timm refuses; pass model_args dynamic_img_pad=True to pad it as timm then does, or "
                "resize the input"
            )
        return self.proj(x)


class Block(nnx.Module):
    """Pre-norm transformer block: `x + drop_path(ls1(attn(norm1(x))))`, then `x + drop_path(ls2(mlp(norm2(x))))`."""

    def __init__(self, layout: ViTLayout, drop_path: float, *, dtype, param_dtype, rngs: nnx.Rngs):
        dim, options = layout.embed_dim, dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.norm1 = layer_norm(dim, eps=layout.norm_eps, **options)
        self.attn = Attention(dim, layout.num_heads, qkv_bias=layout.qkv_bias, proj_bias=layout.proj_bias,
                              attention_dropout=layout.attention_dropout, proj_dropout=layout.proj_dropout,
                              init_std=layout.init_std, **options)
        scale = layout.layer_scale
        self.ls1 = LayerScale(dim, scale, param_dtype=param_dtype) if scale is not None else None
        self.norm2 = layer_norm(dim, eps=layout.norm_eps, **options)
        self.mlp = Mlp(dim, layout.mlp_hidden, layout.mlp_activation, gated=layout.gated_mlp,
                       use_bias=layout.mlp_bias, dropout=layout.proj_dropout, init_std=layout.init_std, **options)
        self.ls2 = LayerScale(dim, scale, param_dtype=param_dtype) if scale is not None else None
        self.drop_path = DropPath(drop_path)
        self.gradient_checkpointing = False  # set from the config by jaxbackbones.training.configure

    def __call__(self, x: jax.Array, rotary=None, *, rngs: nnx.Rngs | None = None,
                 output_attentions: bool = False) -> tuple[jax.Array, jax.Array | None]:
        y, attention = self.attn(self.norm1(x), rotary, rngs=rngs, output_attentions=output_attentions)
        if self.ls1 is not None:
            y = self.ls1(y)
        x = x + self.drop_path(y, rngs=rngs)
        y = self.mlp(self.norm2(x), rngs=rngs)
        if self.ls2 is not None:
            y = self.ls2(y)
        return x + self.drop_path(y, rngs=rngs), attention


class VisionTransformer(nnx.Module):
    """The trunk: `patch_embed`, `cls_token` (1, 1, C), `reg_token` (1, R, C), `pos_embed` (1, P + gh * gw, C) over
    the first P prefix tokens and the `position_grid`, `rope`, `blocks` (timm's names). `encode` runs it."""

    def __init__(self, layout: ViTLayout, *, dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs):
        self.layout = layout
        self.dtype = dtype
        dim = layout.embed_dim
        self.patch_embed = PatchEmbed(layout.num_channels, dim, layout.patch_size, pad=layout.pad_to_patches,
                                      strict=layout.require_patch_multiple, init_std=layout.init_std, dtype=dtype,
                                      param_dtype=param_dtype, rngs=rngs)
        init = initializers.normal(layout.init_std)
        self.cls_token = nnx.Param(init(rngs.params(), (1, 1, dim), param_dtype)) if layout.class_token else None
        self.reg_token = (nnx.Param(init(rngs.params(), (1, layout.register_tokens, dim), param_dtype))
                          if layout.register_tokens else None)
        if layout.position_grid is not None:
            length = layout.embedded_prefix_tokens + layout.position_grid[0] * layout.position_grid[1]
            self.pos_embed = nnx.Param(init(rngs.params(), (1, length, dim), param_dtype))
        else:
            self.pos_embed = None
        self.rope = (RotaryPositions(dim // layout.num_heads, layout.rope_theta, shift=layout.rope_shift,
                                     jitter=layout.rope_jitter, rescale=layout.rope_rescale)
                     if layout.rope_theta is not None else None)
        self.pos_drop = nnx.Dropout(layout.token_dropout)
        rates = layout.drop_path or (0.0,) * layout.depth
        self.blocks = nnx.List([Block(layout, rate, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
                                for rate in rates])

    def encode(self, pixels: jax.Array, *, rngs: nnx.Rngs | None = None, output_attentions: bool = False):
        """See the module-level `encode`."""
        return encode(self, pixels, rngs=rngs, output_attentions=output_attentions)

    def trunk_stage_paths(self) -> dict[str, list[tuple]]:
        """What `freeze_stages` freezes, by stage index: 0 is the patch embedding and the tokens (and their
        position embedding and dropout), k the k-th block."""
        paths = {0: [("patch_embed",), ("cls_token",), ("reg_token",), ("pos_embed",), ("pos_drop",)]}
        paths.update({i + 1: [("blocks", i)] for i in range(len(self.blocks))})
        return paths


# The trunk's computation, as functions of any module holding its parts under their names (`VisionTransformer`, and
# `TimmBackbone`, which holds the parts a timm spec built directly, so that its state paths are the same).


def position_embedding(trunk, grid: tuple[int, int]) -> jax.Array:
    """(1, P + h * w, C) float32: the learned embedding, its patch part resampled to `grid` if it differs."""
    layout = trunk.layout
    embedding = trunk.pos_embed[...].astype(jnp.float32)
    if tuple(grid) == tuple(layout.position_grid):
        return embedding
    prefix = layout.embedded_prefix_tokens
    patches = embedding[0, prefix:].reshape(*layout.position_grid, -1)
    patches = resize_bicubic(patches, grid, antialias=layout.position_antialias).reshape(1, -1, patches.shape[-1])
    return jnp.concatenate([embedding[:, :prefix], patches], axis=1)


def embed(trunk, pixels: jax.Array, *, rngs: nnx.Rngs | None = None) -> tuple[jax.Array, tuple[int, int]]:
    """NHWC pixels -> the token sequence (B, prefix + h * w, C) (class, registers, patches) and the grid (h, w)."""
    x = trunk.patch_embed(pixels.astype(trunk.dtype))
    batch, height, width, channels = x.shape
    x = x.reshape(batch, height * width, channels)
    prefix = [token[...] for token in (trunk.cls_token, trunk.reg_token) if token is not None]
    prefix = [jnp.broadcast_to(token.astype(x.dtype), (batch, *token.shape[1:])) for token in prefix]
    prefix = jnp.concatenate(prefix, axis=1) if prefix else x[:, :0]
    if trunk.pos_embed is not None:
        embedding = position_embedding(trunk, (height, width)).astype(x.dtype)
        covered = trunk.layout.embedded_prefix_tokens
        x = x + embedding[:, covered:]
        if covered:
            prefix = prefix.at[:, :covered].add(embedding[:, :covered])
    x = jnp.concatenate([prefix, x], axis=1)
    return trunk.pos_drop(x, rngs=rngs), (height, width)


def encode(trunk, pixels: jax.Array, *, rngs: nnx.Rngs | None = None, output_attentions: bool = False):
    """NHWC pixels -> ([embedded tokens, output of block 1, ...], [attention probabilities per block or None],
    patch grid (h, w)). Each block runs under `nnx.remat` when its `gradient_checkpointing` is set."""
    x, grid = embed(trunk, pixels, rngs=rngs)
    rotary = trunk.rope(*grid, rngs=rngs) if trunk.rope is not None else None

    def run(block, x, rotary, rngs):
        return block(x, rotary, rngs=rngs, output_attentions=output_attentions)

    sequences, attentions = [x], []
    for block in trunk.blocks:
        x, attention = checkpointed(block.gradient_checkpointing, run, block, x, rotary, rngs)
        sequences.append(x)
        attentions.append(attention)
    return sequences, attentions, grid


def tokens_to_map(tokens: jax.Array, grid: tuple[int, int]) -> jax.Array:
    """(B, h * w, C) patch tokens -> (B, h, w, C)."""
    return tokens.reshape(tokens.shape[0], *grid, tokens.shape[-1])


# ---------------------------------------------------------------------------------------------------------------
# transformers' backbones


class ViTBackbone(BackboneModuleMixin, VisionTransformer):
    """A ViT feature extractor with transformers' backbone semantics (see the module docstring for each family's).

    Args:
        config: the architecture and the selected stages (`out_features` / `out_indices`).
        rngs: initialises the weights (random until loaded).
        dtype: compute dtype; LayerNorm statistics, attention softmax and position resampling are float32.
        param_dtype: dtype of the parameters.
        data_format: "channels_last" (default) takes NHWC pixels and returns NHWC maps; "channels_first" NCHW, as
            transformers. Token sequences (`reshape_hidden_states=False`, `hidden_states`) are (B, T, C) either way.

    `model(pixel_values)` returns a `BackboneOutput`: `feature_maps` (B, H / patch, W / patch, C) per selected stage,
    or token sequences with `reshape_hidden_states=False`; `hidden_states` (every stage's raw sequence) and
    `attentions` ((B, heads, T, T) per block) on request. Stochastic depth and dropout act in train mode only, with
    keys from the call's `rngs`; `freeze_stages` and `gradient_checkpointing` as `jaxbackbones.training` says
    (`stem` is the patch embedding and the tokens, `stageK` block K; the final norm belongs to the last stage).
    """

    config_class: ClassVar[type]
    # The quirks that tell the families apart (see the module docstring).
    last_stage_always_normed: ClassVar[bool] = False
    flat_output_keeps_prefix: ClassVar[bool] = True

    def __init__(self, config, *, rngs: nnx.Rngs, dtype=jnp.float32, param_dtype=jnp.float32,
                 data_format: str = "channels_last"):
        if not isinstance(config, self.config_class):
            raise ValueError(f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(config).__name__}")
        self.config = config
        self.data_format = validate_data_format(data_format)
        layout = self.layout_of(config)
        super().__init__(layout, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.norm = layer_norm(config.hidden_size, eps=config.layer_norm_eps, dtype=dtype, param_dtype=param_dtype,
                               rngs=rngs)
        self.num_features = (config.hidden_size,) * len(config.stage_names)
        self.reductions = (layout.patch_size[0],) * len(config.stage_names)
        configure_training(self)

    @classmethod
    def layout_of(cls, config) -> ViTLayout:
        raise NotImplementedError

    def stage_paths(self) -> dict[str, list[tuple]]:
        """`stem`: the patch embedding and tokens; `stageK`: block K; the final `norm` goes with the last stage."""
        by_index = self.trunk_stage_paths()
        paths = {name: by_index[i] for i, name in enumerate(self.stage_names)}
        paths[self.stage_names[-1]] = [*paths[self.stage_names[-1]], ("norm",)]
        return paths

    def __call__(self, pixel_values: jax.Array, output_hidden_states: bool = False, output_attentions: bool = False,
                 *, rngs: nnx.Rngs | None = None) -> BackboneOutput:
        self.check_rngs(rngs)
        config = self.config
        pixel_values = validate_pixel_values(pixel_values, config.num_channels, self.data_format)
        sequences, attentions, grid = self.encode(from_channels_first(pixel_values, self.data_format), rngs=rngs,
                                                  output_attentions=output_attentions)
        prefix = self.layout.num_prefix_tokens
        last = len(self.stage_names) - 1
        return_class_token = bool(getattr(config, "return_class_token", False))
        feature_maps, class_tokens = [], []
        for name in self.out_features:
            index = self.stage_names.index(name)
            x = sequences[index]
            if config.apply_layernorm or (self.last_stage_always_normed and index == last):
                x = self.norm(x)
            if return_class_token:
                class_tokens.append(x[:, 0])
            if config.reshape_hidden_states:
                x = to_channels_first(tokens_to_map(x[:, prefix:], grid), self.data_format)
            elif not self.flat_output_keeps_prefix:
                x = x[:, prefix:]
            feature_maps.append(x)
        return BackboneOutput(
            feature_maps=tuple(feature_maps),
            hidden_states=tuple(sequences) if output_hidden_states else None,
            attentions=tuple(attentions) if output_attentions else None,
            cls_tokens=tuple(class_tokens) if return_class_token else None,
        )


def _dinov2_layout(config, **options) -> ViTLayout:
    hidden = int(config.hidden_size * config.mlp_ratio)
    if config.use_swiglu_ffn:  # two thirds of the MLP width, rounded up to a multiple of 8
        hidden = (int(hidden * 2 / 3) + 7) // 8 * 8
    return ViTLayout(
        embed_dim=config.hidden_size, depth=config.num_hidden_layers, num_heads=config.num_attention_heads,
        patch_size=pair(config.patch_size, "patch_size"), mlp_hidden=hidden, num_channels=config.num_channels,
        mlp_activation="silu" if config.use_swiglu_ffn else config.hidden_act, gated_mlp=config.use_swiglu_ffn,
        qkv_bias=(config.qkv_bias,) * 3,
        layer_scale=config.layerscale_value, position_grid=config.patch_grid, embedded_prefix_tokens=1,
        norm_eps=config.layer_norm_eps, drop_path=(config.drop_path_rate,) * config.num_hidden_layers,
        token_dropout=config.hidden_dropout_prob, attention_dropout=config.attention_probs_dropout_prob,
        init_std=config.initializer_range, **options)


class Dinov2Backbone(ViTBackbone):
    """transformers' `Dinov2Backbone` in Flax NNX (facebook/dinov2-small ... -giant)."""

    config_class = Dinov2Config

    @classmethod
    def layout_of(cls, config: Dinov2Config) -> ViTLayout:
        return _dinov2_layout(config)


class Dinov2WithRegistersBackbone(ViTBackbone):
    """transformers' `Dinov2WithRegistersBackbone` in Flax NNX (facebook/dinov2-with-registers-small ...)."""

    config_class = Dinov2WithRegistersConfig

    @classmethod
    def layout_of(cls, config: Dinov2WithRegistersConfig) -> ViTLayout:
        return _dinov2_layout(config, register_tokens=config.num_register_tokens, position_antialias=True)


class DINOv3ViTBackbone(ViTBackbone):
    """transformers' `DINOv3ViTBackbone` in Flax NNX (facebook/dinov3-vits16-pretrain-lvd1689m ...)."""

    config_class = DINOv3ViTConfig
    last_stage_always_normed = True
    flat_output_keeps_prefix = False

    @classmethod
    def layout_of(cls, config: DINOv3ViTConfig) -> ViTLayout:
        return ViTLayout(
            embed_dim=config.hidden_size, depth=config.num_hidden_layers, num_heads=config.num_attention_heads,
            patch_size=pair(config.patch_size, "patch_size"), mlp_hidden=config.intermediate_size,
            num_channels=config.num_channels, mlp_activation=config.hidden_act, gated_mlp=config.use_gated_mlp,
            qkv_bias=(config.query_bias, config.key_bias, config.value_bias), proj_bias=config.proj_bias,
            mlp_bias=config.mlp_bias, layer_scale=config.layerscale_value, register_tokens=config.num_register_tokens,
            embedded_prefix_tokens=0, rope_theta=config.rope_theta, rope_shift=config.pos_embed_shift,
            rope_jitter=config.pos_embed_jitter, rope_rescale=config.pos_embed_rescale,
            norm_eps=config.layer_norm_eps, drop_path=(config.drop_path_rate,) * config.num_hidden_layers,
            attention_dropout=config.attention_dropout, init_std=config.initializer_range)
