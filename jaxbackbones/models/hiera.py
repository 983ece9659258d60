"""Hiera: transformers' `HieraBackbone` / `HieraModel` (models/hiera/modeling_hiera.py) and, through
`models/timm/hiera.py`, timm's `Hiera` (timm/models/hiera.py), on one set of modules.

Hiera is a ViT made hierarchical by pooling queries, with no convolutions after the stem:
- stem: a 7x7 convolution at stride 4 (padding 3; `patch_size`, `patch_stride`, `patch_padding`), flattened to
  raster-order tokens, plus a learned position embedding: one vector per token (`position_embeddings`, (1, N, C):
  transformers and timm's `hiera_*_224`), or timm's `abswin` embedding: a global (C, 16, 16) grid resized
  bicubically with antialiasing to the token grid plus a (C, mask unit) window embedding tiled over it.
- unroll: the tokens are reordered so that each `query_stride` (2x2) sub-grid is the slowest axis, once per pooling
  stage (`unroll`): [B, (Sy, Sx, H/Sy, W/Sx), C], applied 3 times for 4 stages. A max over the first axis of
  `x.reshape(B, 4, N / 4, C)` is then a 2x2 max pool, and whole mask units (8x8 tokens) are contiguous, their window
  the *fastest* varying index (token n = t * num_windows + window).
- blocks: pre-norm; mask-unit attention (windows of `masked_unit_size` tokens, shrinking by the query-stride area at
  each pooling stage) or global attention; the first block of a pooling stage max-pools its queries (and the
  residual, projected to the new width by `proj`, or in timm's `use_expand_proj=False` the concatenated max and
  mean of the unprojected input); LayerScale (timm's `init_values`), drop path, MLP.
- reroll: a stage's output tokens go back to an (H, W) map (`reroll`, the inverse of the unroll steps not consumed
  yet, then the mask units undone).
The token layout is fixed by `image_size`: the position embedding, the unroll schedule and the mask units all
assume it, so Hiera runs at that input size only (an error names it otherwise), as the torch models do.

Quirks of the two layouts:
- transformers: `HieraBackbone` (not `HieraModel`) forgets to unroll its input tokens: its blocks run on raster
  order, and its feature maps are scrambled versions of `HieraModel`'s `reshaped_hidden_states`. Ours unroll, as
  `HieraModel`, timm and the original do; `transformers_backbone_token_order=True` (a jaxbackbones switch, written
  to `config.json` only when set) reproduces `HieraBackbone` as it is. Each selected stage (`stem`, `stage1`...)
  goes through its own LayerNorm (`hidden_states_norms`, eps 1e-5; the blocks use `layer_norm_eps`). A stage's
  window is `prod(masked_unit_size) / prod(query_stride) ** stage` and the first block of stage s uses mask-unit
  attention if stage s or s - 1 does.
- timm: blocks numbered globally; per-block window shrinks only at the pooling blocks; the first block of a stage
  uses the previous stage's `mask_unit_attn`; LayerNorm eps 1e-6; no per-stage norms.
Stochastic depth rises linearly from 0 to `drop_path_rate` over all blocks in both.

Numerics: parameters in `param_dtype`, compute in `dtype`; LayerNorm statistics and attention softmax in float32.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from .. import initializers
from ..backbone import BackboneConfigMixin, BackboneModuleMixin, BackboneOutput
from ..configuration import TRAINING_DEFAULTS, PretrainedConfig, verify_training_fields
from ..layers import DropPath, LayerScale, checkpointed, conv_general_dilated, dot_product_attention, get_activation
from ..layers import layer_norm, resize_bicubic
from ..training import configure as configure_training
from .common import from_channels_first, to_channels_first, validate_data_format, validate_pixel_values


class HieraConfig(BackboneConfigMixin, PretrainedConfig):
    """transformers' HieraConfig: same fields, defaults (facebook/hiera-base-224) and `config.json`.

    `stage_names` are `stem`, `stage1` ... `stageN` (strides 4, 4, 8, 16, 32 with the default query stride).
    """

    model_type = "hiera"
    derived_keys = ("model_type", "stage_names", "hidden_size")
    training_defaults: ClassVar[dict] = {**TRAINING_DEFAULTS, "transformers_backbone_token_order": False}
    defaults: ClassVar[dict] = {
        "embed_dim": 96,
        "image_size": [224, 224],
        "patch_size": [7, 7],
        "patch_stride": [4, 4],
        "patch_padding": [3, 3],
        "mlp_ratio": 4.0,
        "depths": [2, 3, 16, 3],
        "num_heads": [1, 2, 4, 8],
        "embed_dim_multiplier": 2.0,
        "num_query_pool": 3,
        "query_stride": [2, 2],
        "masked_unit_size": [8, 8],
        "masked_unit_attention": [True, True, False, False],
        "drop_path_rate": 0.0,
        "num_channels": 3,
        "hidden_act": "gelu",
        "initializer_range": 0.02,
        "layer_norm_init": 1.0,
        "layer_norm_eps": 1e-6,
        "decoder_hidden_size": None,
        "decoder_depth": None,
        "decoder_num_heads": None,
        "normalize_pixel_loss": True,
        "mask_ratio": 0.6,
    }

    def __init__(self, out_features: list[str] | None = None, out_indices: list[int] | None = None, **kwargs):
        super().__init__(**kwargs)
        for name in ("image_size", "patch_size", "patch_stride", "patch_padding", "query_stride", "masked_unit_size"):
            value = getattr(self, name)
            setattr(self, name, [int(value)] * 2 if isinstance(value, (int, float)) else [int(v) for v in value])
            if len(getattr(self, name)) != 2:
                raise ValueError(f"{name} must have two entries (height, width), got {value}")
        self.depths, self.num_heads = list(self.depths), list(self.num_heads)
        self.masked_unit_attention = [bool(v) for v in self.masked_unit_attention]
        stages = len(self.depths)
        if not stages or min(self.depths) < 1:
            raise ValueError(f"depths {self.depths} must be a non-empty list of positive block counts")
        for name in ("num_heads", "masked_unit_attention"):
            if len(getattr(self, name)) != stages:
                raise ValueError(f"{name} {getattr(self, name)} must have one entry per stage ({stages})")
        if not 0 <= self.num_query_pool < stages:
            raise ValueError(f"num_query_pool ({self.num_query_pool}) must be less than the number of stages "
                             f"({stages})")
        for axis in range(2):
            if self.masked_unit_size[axis] % self.query_stride[axis] ** (stages - 1):
                raise ValueError(f"masked_unit_size {self.masked_unit_size} must be divisible by query_stride "
                                 f"{self.query_stride} raised to the number of stages - 1 ({stages - 1})")
        grid = [i // s for i, s in zip(self.image_size, self.patch_stride)]
        if any(g % m for g, m in zip(grid, self.masked_unit_size)):
            raise ValueError(f"image_size {self.image_size} gives a {grid[0]}x{grid[1]} token grid, which the "
                             f"masked_unit_size {self.masked_unit_size} does not tile; Hiera needs image_size a "
                             f"multiple of patch_stride * masked_unit_size = "
                             f"{[s * m for s, m in zip(self.patch_stride, self.masked_unit_size)]}")
        for i, heads in enumerate(self.num_heads):
            if heads < 1 or self.stage_dims[i] % heads:
                raise ValueError(f"stage{i + 1} has {self.stage_dims[i]} channels, which num_heads[{i}]={heads} "
                                 "does not divide")
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {self.drop_path_rate}")
        get_activation(self.hidden_act)
        self.hidden_size = self.stage_dims[-1]
        self.stage_names = ["stem"] + [f"stage{idx}" for idx in range(1, stages + 1)]
        self.set_output_features_output_indices(out_features=out_features, out_indices=out_indices)
        verify_training_fields(self)
        if not isinstance(self.transformers_backbone_token_order, bool):
            raise ValueError("transformers_backbone_token_order must be True or False")

    def to_dict(self) -> dict:
        """The config's dict with `hidden_size` (the last stage's width), as transformers writes it."""
        return {**super().to_dict(), "hidden_size": self.hidden_size}

    @property
    def stage_dims(self) -> list[int]:
        return [int(self.embed_dim * self.embed_dim_multiplier**i) for i in range(len(self.depths))]

    def block_plans(self) -> list[BlockPlan]:
        """Every block's shape, as transformers' HieraEncoder builds them."""
        depths, stages = self.depths, len(self.depths)
        pool_blocks = set(np.cumsum(depths)[: self.num_query_pool].tolist())
        rates = np.linspace(0, self.drop_path_rate, sum(depths)).tolist()
        mu_area, qs_area = math.prod(self.masked_unit_size), math.prod(self.query_stride)
        plans, index, dim = [], 0, self.embed_dim
        for stage in range(stages):
            previous_mu = self.masked_unit_attention[stage - 1 if stage > 0 else 0]
            for j in range(depths[stage]):
                plans.append(BlockPlan(
                    dim=dim, dim_out=self.stage_dims[stage], heads=self.num_heads[stage],
                    q_stride=qs_area if index in pool_blocks else 1,
                    window_size=int(mu_area * qs_area**-stage),
                    mask_unit_attn=self.masked_unit_attention[stage] or (previous_mu and j == 0),
                    drop_path=float(rates[index])))
                dim, index = self.stage_dims[stage], index + 1
        return plans


@dataclasses.dataclass(frozen=True)
class BlockPlan:
    """One Hiera block: input and output width, heads, flattened query stride (1: no pooling), flattened mask-unit
    size after pooling, mask-unit (True) or global attention, stochastic-depth rate."""

    dim: int
    dim_out: int
    heads: int
    q_stride: int
    window_size: int
    mask_unit_attn: bool
    drop_path: float


def unroll(x: jax.Array, size: Sequence[int], schedule: Sequence[Sequence[int]]) -> jax.Array:
    """Raster-order tokens (B, H*W, C) of an (H, W) grid -> Hiera's unrolled order (see the module docstring)."""
    batch, _, channels = x.shape
    height, width = size
    x = x.reshape(batch, height, width, channels)
    for sy, sx in schedule:
        height, width = height // sy, width // sx
        x = x.reshape(-1, height, sy, width, sx, channels).transpose(0, 2, 4, 1, 3, 5)
        x = x.reshape(-1, height, width, channels)
    return x.reshape(batch, size[0] * size[1], channels)


def reroll(x: jax.Array, size: Sequence[int], schedule: Sequence[Sequence[int]]) -> jax.Array:
    """Unrolled tokens (B, N, C) with the unroll steps `schedule` still pending -> the (B, H, W, C) map of `size`."""
    batch, tokens, channels = x.shape
    mu_y, mu_x = 1, 1
    for sy, sx in schedule:
        x = x.reshape(batch, sy, sx, tokens // (sy * sx), mu_y, mu_x, channels).transpose(0, 3, 1, 4, 2, 5, 6)
        mu_y, mu_x = mu_y * sy, mu_x * sx
        x = x.reshape(batch, -1, mu_y, mu_x, channels)
        tokens = x.shape[1]
    units_y, units_x = size[0] // mu_y, size[1] // mu_x
    x = x.reshape(batch, units_y, units_x, mu_y, mu_x, channels).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(batch, size[0], size[1], channels)


def reroll_schedules(grid: Sequence[int], query_stride: Sequence[int], num_stages: int,
                     num_query_pool: int) -> list[tuple[list, list[int]]]:
    """Per stage: (the unroll steps still pending, the stage's token grid), as both torch implementations keep
    them: pooling stages consume one step each."""
    schedule, size, out = [list(query_stride)] * (num_stages - 1), list(grid), []
    for stage in range(num_stages):
        out.append((schedule, size))
        if stage < num_query_pool:
            size = [n // s for n, s in zip(size, query_stride)]
            schedule = schedule[1:]
    return out


def linear(in_features: int, out_features: int, *, init_std: float, dtype, param_dtype, rngs: nnx.Rngs):
    return nnx.Linear(in_features, out_features, kernel_init=initializers.normal(init_std),
                      bias_init=initializers.zeros, dtype=dtype, param_dtype=param_dtype, rngs=rngs)


class PatchEmbed(nnx.Module):
    """`proj`: a torch-style NHWC Conv2d with bias, explicit symmetric zero padding."""

    def __init__(self, in_channels: int, out_channels: int, kernel, stride, padding, *, dtype, param_dtype, rngs):
        self.proj = nnx.Conv(in_channels, out_channels, kernel_size=tuple(kernel), strides=tuple(stride),
                             padding=tuple((p, p) for p in padding), kernel_init=initializers.normal(0.02),
                             bias_init=initializers.zeros, dtype=dtype, param_dtype=param_dtype,
                             conv_general_dilated=conv_general_dilated, rngs=rngs)


class MaskUnitAttention(nnx.Module):
    """Mask-unit (windowed) or global attention on unrolled tokens, with query max-pooling by `q_stride`
    (transformers' HieraMaskUnitAttention, timm's MaskUnitAttention): `qkv` (C -> 3 C_out), `proj`."""

    def __init__(self, plan: BlockPlan, *, init_std: float, dtype, param_dtype, rngs: nnx.Rngs):
        self.heads, self.head_dim, self.dim_out = plan.heads, plan.dim_out // plan.heads, plan.dim_out
        self.q_stride, self.window_size, self.mask_unit_attn = plan.q_stride, plan.window_size, plan.mask_unit_attn
        options = dict(init_std=init_std, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.qkv = linear(plan.dim, 3 * plan.dim_out, **options)
        self.proj = linear(plan.dim_out, plan.dim_out, **options)

    def __call__(self, x: jax.Array) -> jax.Array:
        batch, tokens, _ = x.shape
        windows = tokens // (self.q_stride * self.window_size) if self.mask_unit_attn else 1
        per_window = tokens // windows
        qkv = self.qkv(x).reshape(batch, per_window, windows, 3, self.heads, self.head_dim)
        query, key, value = qkv[:, :, :, 0], qkv[:, :, :, 1], qkv[:, :, :, 2]  # (B, T, windows, heads, head_dim)
        if self.q_stride > 1:
            query = query.reshape(batch, self.q_stride, per_window // self.q_stride, windows, self.heads,
                                  self.head_dim).max(axis=1)

        def by_window(t):
            return t.transpose(0, 2, 1, 3, 4).reshape(batch * windows, t.shape[1], self.heads, self.head_dim)

        out = dot_product_attention(by_window(query), by_window(key), by_window(value))
        out = out.reshape(batch, windows, -1, self.heads, self.head_dim).transpose(0, 2, 1, 3, 4)
        return self.proj(out.reshape(batch, -1, self.dim_out))


class HieraMlp(nnx.Module):
    def __init__(self, dim: int, hidden: int, activation: str, *, init_std: float, dtype, param_dtype, rngs):
        options = dict(init_std=init_std, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.fc1, self.fc2 = linear(dim, hidden, **options), linear(hidden, dim, **options)
        self.act = get_activation(activation)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.fc2(self.act(self.fc1(x)))


class HieraBlock(nnx.Module):
    """norm1, (pooled `proj` of the normed input as the residual when the width changes), attention, layer scale,
    drop path; norm2, MLP, layer scale, drop path."""

    def __init__(self, plan: BlockPlan, *, mlp_ratio: float, activation: str = "gelu", eps: float,
                 init_values: float | None = None, use_expand_proj: bool = True, init_std: float = 0.02, dtype,
                 param_dtype, rngs: nnx.Rngs):
        options = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.q_stride, self.expand = plan.q_stride, plan.dim != plan.dim_out
        if self.expand and not use_expand_proj and plan.dim_out != 2 * plan.dim:
            raise ValueError(f"use_expand_proj=False needs dim_out == 2 * dim, got {plan.dim} -> {plan.dim_out}")
        self.norm1 = layer_norm(plan.dim, eps=eps, **options)
        self.proj = linear(plan.dim, plan.dim_out, init_std=init_std, **options) if (
            self.expand and use_expand_proj) else None
        self.attn = MaskUnitAttention(plan, init_std=init_std, **options)
        self.ls1 = LayerScale(plan.dim_out, init_values, param_dtype=param_dtype) if init_values is not None else None
        self.norm2 = layer_norm(plan.dim_out, eps=eps, **options)
        self.mlp = HieraMlp(plan.dim_out, int(plan.dim_out * mlp_ratio), activation, init_std=init_std, **options)
        self.ls2 = LayerScale(plan.dim_out, init_values, param_dtype=param_dtype) if init_values is not None else None
        self.drop_path = DropPath(plan.drop_path)

    def _pool(self, x: jax.Array, reduce) -> jax.Array:
        return reduce(x.reshape(x.shape[0], self.q_stride, -1, x.shape[-1]), axis=1)

    def __call__(self, x: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        x_norm = self.norm1(x)
        if self.proj is not None:
            x = self._pool(self.proj(x_norm), jnp.max)
        elif self.expand:
            x = jnp.concatenate([self._pool(x, jnp.max), self._pool(x, jnp.mean)], axis=-1)
        attended = self.attn(x_norm)
        x = x + self.drop_path(attended if self.ls1 is None else self.ls1(attended), rngs=rngs)
        mlp = self.mlp(self.norm2(x))
        return x + self.drop_path(mlp if self.ls2 is None else self.ls2(mlp), rngs=rngs)


class HieraTrunk(nnx.Module):
    """Patch embedding, position embedding, unroll, blocks, reroll: the part of Hiera the transformers and timm
    layouts share (attribute names timm's: `patch_embed.proj`, `pos_embed` / `pos_embed_win`, `blocks.i`).

    `pos_embed` is (1, N, C) (`abswin=False`) or, with `abswin`, the global (1, C, gh, gw) grid plus the window
    embedding `pos_embed_win` (1, C, muy, mux), both in torch's layout."""

    def __init__(self, *, num_channels: int, embed_dim: int, image_size, patch_size, patch_stride, patch_padding,
                 query_stride, masked_unit_size, num_query_pool: int, depths: Sequence[int],
                 plans: Sequence[BlockPlan], abswin: bool = False, global_pos_size=(14, 14), unroll_input=True,
                 dtype, param_dtype, rngs: nnx.Rngs, **block_options):
        self.image_size, self.grid = tuple(image_size), tuple(i // s for i, s in zip(image_size, patch_stride))
        self.units = tuple(g // m for g, m in zip(self.grid, masked_unit_size))
        self.unroll_input = unroll_input
        self.patch_embed = PatchEmbed(num_channels, embed_dim, patch_size, patch_stride, patch_padding, dtype=dtype,
                                      param_dtype=param_dtype, rngs=rngs)
        if abswin:
            self.pos_embed = nnx.Param(jnp.zeros((1, embed_dim, *global_pos_size), param_dtype))
            self.pos_embed_win = nnx.Param(jnp.zeros((1, embed_dim, *masked_unit_size), param_dtype))
        else:
            self.pos_embed = nnx.Param(jnp.zeros((1, self.grid[0] * self.grid[1], embed_dim), param_dtype))
            self.pos_embed_win = None
        self.schedule = (tuple(query_stride),) * (len(depths) - 1)
        self.stage_ends = tuple(int(e) - 1 for e in np.cumsum(depths))
        self.rerolls = tuple((tuple(map(tuple, schedule)), tuple(size)) for schedule, size in
                             reroll_schedules(self.grid, query_stride, len(depths), num_query_pool))
        self.blocks = nnx.List([HieraBlock(plan, dtype=dtype, param_dtype=param_dtype, rngs=rngs, **block_options)
                                for plan in plans])
        self.gradient_checkpointing = False  # set from the config by jaxbackbones.training.configure

    def position_embedding(self) -> jax.Array:
        """(1, N, C) in raster order."""
        if self.pos_embed_win is None:
            return self.pos_embed[...]
        window = jnp.tile(self.pos_embed_win[...][0], (1, *self.units))  # (C, H, W)
        background = resize_bicubic(self.pos_embed[...][0].transpose(1, 2, 0), window.shape[1:], antialias=True)
        embed = background + window.transpose(1, 2, 0).astype(jnp.float32)
        return embed.reshape(1, -1, embed.shape[-1])

    def __call__(self, x: jax.Array, rngs: nnx.Rngs | None = None) -> list[jax.Array]:
        """NHWC pixels -> [the embedded tokens as a map (the stem), each stage's output map]."""
        if tuple(x.shape[1:3]) != self.image_size:
            raise ValueError(
                f"Hiera's token layout (position embedding, unroll schedule, {self.units[0]}x{self.units[1]} mask "
                f"units) is fixed by its image_size: it runs at {self.image_size[0]}x{self.image_size[1]} only, got "
                f"a {x.shape[1]}x{x.shape[2]} input; resize it to {self.image_size[0]}x{self.image_size[1]}")
        x = self.patch_embed.proj(x)
        x = x.reshape(x.shape[0], -1, x.shape[-1]) + self.position_embedding().astype(x.dtype)
        if self.unroll_input:
            x = unroll(x, self.grid, self.schedule)
        maps = [reroll(x, *self.rerolls[0][::-1])]
        stage = 0
        for i, block in enumerate(self.blocks):
            x = checkpointed(self.gradient_checkpointing, lambda block, x, rngs: block(x, rngs=rngs), block, x, rngs)
            if i == self.stage_ends[stage]:
                schedule, size = self.rerolls[stage]
                maps.append(reroll(x, size, schedule))
                stage += 1
        return maps


class HieraBackbone(BackboneModuleMixin, nnx.Module):
    """Hiera feature extractor with the semantics of transformers' HieraBackbone (on unrolled tokens, as
    `HieraModel`; see the module docstring), in Flax NNX.

    Args:
        config: a HieraConfig, with the selected stages.
        rngs: initialises the weights (random until loaded).
        dtype: compute dtype; LayerNorm statistics and attention softmax are always float32.
        param_dtype: dtype of the parameters.
        data_format: "channels_last" (default) takes and returns NHWC; "channels_first" NCHW, as transformers.

    `model(pixel_values)` with pixel_values (batch, *image_size, num_channels) returns a `BackboneOutput` whose
    `feature_maps` are the selected stages, each through its LayerNorm (every stage has one in
    `hidden_states_norms`; a checkpoint lacking some gets them at weight 1, bias 0, as transformers does);
    `output_hidden_states=True` adds every stage's map before that norm. Stochastic depth acts only in train mode and
    draws from the call's `rngs`; `freeze_stages` and `gradient_checkpointing` apply as `jaxbackbones.training`
    describes (the stem owns the patch and position embeddings, stage k its blocks).
    """

    def __init__(self, config: HieraConfig, *, rngs: nnx.Rngs, dtype=jnp.float32, param_dtype=jnp.float32,
                 data_format: str = "channels_last"):
        self.config = config
        self.data_format = validate_data_format(data_format)
        self.dtype = dtype
        self.num_features = (config.embed_dim, *config.stage_dims)
        stride = config.patch_stride[0]
        self.reductions = (stride, *(stride * config.query_stride[0]**min(i, config.num_query_pool)
                                     for i in range(len(config.depths))))
        options = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.trunk = HieraTrunk(
            num_channels=config.num_channels, embed_dim=config.embed_dim, image_size=config.image_size,
            patch_size=config.patch_size, patch_stride=config.patch_stride, patch_padding=config.patch_padding,
            query_stride=config.query_stride, masked_unit_size=config.masked_unit_size,
            num_query_pool=config.num_query_pool, depths=config.depths, plans=config.block_plans(),
            unroll_input=not config.transformers_backbone_token_order, mlp_ratio=config.mlp_ratio,
            activation=config.hidden_act, eps=config.layer_norm_eps, init_std=config.initializer_range, **options)
        self.hidden_states_norms = nnx.Dict({name: layer_norm(channels, eps=1e-5, **options)
                                             for name, channels in zip(config.stage_names, self.num_features)})
        configure_training(self)

    def stage_paths(self) -> dict[str, list[tuple]]:
        """What each stage owns (what `freeze_stages` freezes): the stem the patch and position embeddings, stage k
        its blocks; each its output norm."""
        ends = [0] + [e + 1 for e in self.trunk.stage_ends]
        paths = {"stem": [("trunk", "patch_embed"), ("trunk", "pos_embed"), ("hidden_states_norms", "stem")]}
        for k, name in enumerate(self.stage_names[1:]):
            paths[name] = [("trunk", "blocks", i) for i in range(ends[k], ends[k + 1])]
            paths[name].append(("hidden_states_norms", name))
        return paths

    def __call__(self, pixel_values: jax.Array, output_hidden_states: bool = False, output_attentions: bool = False,
                 *, rngs: nnx.Rngs | None = None) -> BackboneOutput:
        self.check_rngs(rngs)
        if output_attentions:
            raise ValueError("HieraBackbone does not return attention probabilities (output_attentions=False)")
        pixel_values = validate_pixel_values(pixel_values, self.config.num_channels, self.data_format)
        maps = self.trunk(from_channels_first(pixel_values, self.data_format).astype(self.dtype), rngs)
        feature_maps = tuple(
            to_channels_first(self.hidden_states_norms[name](maps[self.stage_names.index(name)]), self.data_format)
            for name in self.out_features)
        return BackboneOutput(
            feature_maps=feature_maps,
            hidden_states=tuple(to_channels_first(m, self.data_format) for m in maps) if output_hidden_states else None)
