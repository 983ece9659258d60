"""HieraDet, SAM2's image encoder trunk, and SAM2's FPN neck: transformers' `Sam2HieraDetModel` + `Sam2VisionNeck`
(the vision encoder of `Sam2Model`, models/sam2/modeling_sam2.py) and, through `models/timm/hiera.py`, timm's
`HieraDet` (timm/models/hieradet_sam2.py), on one set of modules.

HieraDet is Hiera (models/hiera.py) without the unroll: tokens stay on their (B, H, W, C) grid.
- stem: a 7x7 convolution at stride 4 (padding 3), plus the windowed position embedding: a background grid
  (`pos_embed`, (1, C, 7, 7) or 14x14) resized bicubically (no antialiasing) to the token grid, plus the first
  stage's window embedding (`pos_embed_window`, (1, C, w0, w0)) tiled over it. The tiling needs the token grid to be a
  multiple of w0 (8) in both directions: inputs whose sides are multiples of 32 (1024x1024, 896x640, ...), as in torch,
  where other sizes fail; other sizes get an error naming these.
- blocks: pre-norm windowed attention (zero-padded to whole windows, the window per stage: `window_spec` /
  `window_size_per_stage`) or global attention (`global_att_blocks` / `global_attention_blocks`); the first block of
  a pooling stage max-pools its queries 2x2 inside each window (floor mode) and its residual, `proj`-ected to the new
  width, and keeps the previous stage's window (halved after the pooling); timm's LayerScale (`init_values`) and
  drop path; MLP.
- the neck (transformers, `Sam2VisionNeck`): a `fpn_kernel_size` convolution of every stage to `fpn_hidden_size`
  channels (`convs[k]` reads stage 4 - k), and a top-down sum (nearest 2x upsampling) at the `fpn_top_down_levels`;
  the encoder returns the `num_feature_levels` highest-resolution levels, finest first (`fpn_hidden_states`).

The backbone's stages (`Sam2VisionConfig.stage_names`): the trunk's `stage1` ... `stage4` (strides 4 to 32) and the
neck's `fpn1` ... `fpn3` (strides 4, 8, 16, `fpn_hidden_size` channels); the default selection is the neck's levels,
what SAM2's mask decoder consumes.

Numerics: parameters in `param_dtype`, compute in `dtype`; LayerNorm statistics and attention softmax in float32.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from typing import Any, ClassVar

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
from .hiera import HieraMlp, PatchEmbed, linear


@dataclasses.dataclass(frozen=True)
class DetBlockPlan:
    """One HieraDet block: widths, heads, query stride (None: no pooling), window (0: global), drop-path rate."""

    dim: int
    dim_out: int
    heads: int
    q_stride: tuple[int, int] | None
    window_size: int
    drop_path: float = 0.0


def max_pool(x: jax.Array, stride: Sequence[int]) -> jax.Array:
    """NHWC max pooling, kernel = stride, floor mode (rows and columns that do not fill a window dropped)."""
    batch, height, width, channels = x.shape
    sy, sx = stride
    x = x[:, : height // sy * sy, : width // sx * sx]
    return x.reshape(batch, height // sy, sy, width // sx, sx, channels).max(axis=(2, 4))


def window_partition(x: jax.Array, window: int) -> tuple[jax.Array, tuple[int, int]]:
    """(B, H, W, C) -> (B * windows, window, window, C), zero-padded at the bottom and right; the padded size."""
    batch, height, width, channels = x.shape
    pad_h, pad_w = -height % window, -width % window
    x = jnp.pad(x, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)))
    hp, wp = height + pad_h, width + pad_w
    x = x.reshape(batch, hp // window, window, wp // window, window, channels).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, window, window, channels), (hp, wp)


def window_unpartition(windows: jax.Array, window: int, padded: tuple[int, int], size: tuple[int, int]) -> jax.Array:
    hp, wp = padded
    batch = windows.shape[0] // (hp // window * (wp // window))
    x = windows.reshape(batch, hp // window, wp // window, window, window, -1).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(batch, hp, wp, -1)[:, : size[0], : size[1]]


class MultiScaleAttention(nnx.Module):
    """Attention over a (B, H, W, C) grid (one window or the whole map), queries max-pooled by `q_stride`: `qkv`
    (C -> 3 C_out), `proj`."""

    def __init__(self, plan: DetBlockPlan, *, init_std: float, dtype, param_dtype, rngs: nnx.Rngs):
        self.heads, self.head_dim, self.q_stride = plan.heads, plan.dim_out // plan.heads, plan.q_stride
        options = dict(init_std=init_std, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.qkv = linear(plan.dim, 3 * plan.dim_out, **options)
        self.proj = linear(plan.dim_out, plan.dim_out, **options)

    def __call__(self, x: jax.Array) -> jax.Array:
        batch, height, width, _ = x.shape
        qkv = self.qkv(x).reshape(batch, height * width, 3, self.heads, self.head_dim)
        query, key, value = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        if self.q_stride is not None:
            query = max_pool(query.reshape(batch, height, width, -1), self.q_stride)
            height, width = query.shape[1:3]
            query = query.reshape(batch, height * width, self.heads, self.head_dim)
        out = dot_product_attention(query, key, value)
        return self.proj(out.reshape(batch, height, width, -1))


class MultiScaleBlock(nnx.Module):
    """timm's MultiScaleBlock / transformers' Sam2MultiScaleBlock (see the module docstring)."""

    def __init__(self, plan: DetBlockPlan, *, mlp_ratio: float = 4.0, activation: str = "gelu", eps: float = 1e-6,
                 init_values: float | None = None, init_std: float = 0.02, dtype, param_dtype, rngs: nnx.Rngs):
        options = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.window_size, self.q_stride = plan.window_size, plan.q_stride
        self.norm1 = layer_norm(plan.dim, eps=eps, **options)
        self.proj = linear(plan.dim, plan.dim_out, init_std=init_std, **options) if plan.dim != plan.dim_out else None
        self.attn = MultiScaleAttention(plan, init_std=init_std, **options)
        self.ls1 = LayerScale(plan.dim_out, init_values, param_dtype=param_dtype) if init_values is not None else None
        self.norm2 = layer_norm(plan.dim_out, eps=eps, **options)
        self.mlp = HieraMlp(plan.dim_out, int(plan.dim_out * mlp_ratio), activation, init_std=init_std, **options)
        self.ls2 = LayerScale(plan.dim_out, init_values, param_dtype=param_dtype) if init_values is not None else None
        self.drop_path = DropPath(plan.drop_path)

    def __call__(self, x: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        shortcut = x
        x = self.norm1(x)
        if self.proj is not None:
            shortcut = self.proj(x)
            if self.q_stride is not None:
                shortcut = max_pool(shortcut, self.q_stride)
        window = self.window_size
        size = x.shape[1:3]
        if window:
            x, padded = window_partition(x, window)
        x = self.attn(x)
        if window:
            if self.q_stride is not None:
                window, size = window // self.q_stride[0], shortcut.shape[1:3]
                padded = (size[0] + -size[0] % window, size[1] + -size[1] % window)
            x = window_unpartition(x, window, padded, size)
        x = shortcut + self.drop_path(x if self.ls1 is None else self.ls1(x), rngs=rngs)
        mlp = self.mlp(self.norm2(x))
        return x + self.drop_path(mlp if self.ls2 is None else self.ls2(mlp), rngs=rngs)


class HieraDetTrunk(nnx.Module):
    """Patch embedding, windowed position embedding, blocks; returns every stage's (B, H, W, C) map. Attribute names
    timm's: `patch_embed.proj`, `pos_embed` (1, C, gh, gw), `pos_embed_window` (1, C, w0, w0), `blocks.i`."""

    def __init__(self, *, num_channels: int, embed_dim: int, patch_kernel, patch_stride, patch_padding,
                 global_pos_size, window: int, depths: Sequence[int], plans: Sequence[DetBlockPlan], dtype,
                 param_dtype, rngs: nnx.Rngs, **block_options):
        self.patch_stride, self.window = tuple(patch_stride), window
        self.patch_embed = PatchEmbed(num_channels, embed_dim, patch_kernel, patch_stride, patch_padding, dtype=dtype,
                                      param_dtype=param_dtype, rngs=rngs)
        self.pos_embed = nnx.Param(jnp.zeros((1, embed_dim, *global_pos_size), param_dtype))
        self.pos_embed_window = nnx.Param(jnp.zeros((1, embed_dim, window, window), param_dtype))
        self.stage_ends = tuple(int(e) - 1 for e in np.cumsum(depths))
        self.blocks = nnx.List([MultiScaleBlock(plan, dtype=dtype, param_dtype=param_dtype, rngs=rngs, **block_options)
                                for plan in plans])
        self.gradient_checkpointing = False  # set from the config by jaxbackbones.training.configure

    def position_embedding(self, height: int, width: int) -> jax.Array:
        """(1, H, W, C): the background resized to the token grid plus the tiled window embedding."""
        w0 = self.window
        if height % w0 or width % w0:
            sy, sx = self.patch_stride
            raise ValueError(
                f"HieraDet tiles its {w0}x{w0} window position embedding over the token grid, so the grid must be a "
                f"multiple of {w0} in both directions; this input gives {height}x{width}. Use an input whose height "
                f"and width are multiples of {sy * w0}x{sx * w0} pixels (e.g. {sy * w0 * 32}x{sx * w0 * 32})")
        background = resize_bicubic(self.pos_embed[...][0].transpose(1, 2, 0), (height, width), antialias=False)
        tiled = jnp.tile(self.pos_embed_window[...][0].transpose(1, 2, 0), (height // w0, width // w0, 1))
        return (background + tiled.astype(jnp.float32))[None]

    def __call__(self, x: jax.Array, rngs: nnx.Rngs | None = None) -> list[jax.Array]:
        x = self.patch_embed.proj(x)
        x = x + self.position_embedding(*x.shape[1:3]).astype(x.dtype)
        maps = []
        for i, block in enumerate(self.blocks):
            x = checkpointed(self.gradient_checkpointing, lambda block, x, rngs: block(x, rngs=rngs), block, x, rngs)
            if i in self.stage_ends:
                maps.append(x)
        return maps


# ---------------------------------------------------------------------------------------------------------------
# transformers' SAM2 checkpoints: the vision encoder of Sam2Model (config.json model_type "sam2")

# Sam2HieraDetConfig's and Sam2VisionConfig's fields and defaults (facebook/sam2.1-hiera-tiny's trunk).
HIERA_DET_DEFAULTS: dict[str, Any] = {
    "hidden_size": 96, "num_attention_heads": 1, "num_channels": 3, "image_size": [1024, 1024],
    "patch_kernel_size": [7, 7], "patch_stride": [4, 4], "patch_padding": [3, 3], "query_stride": [2, 2],
    "window_positional_embedding_background_size": [7, 7], "num_query_pool_stages": 3,
    "blocks_per_stage": [1, 2, 7, 2], "embed_dim_per_stage": [96, 192, 384, 768],
    "num_attention_heads_per_stage": [1, 2, 4, 8], "window_size_per_stage": [8, 4, 14, 7],
    "global_attention_blocks": [5, 7, 9], "mlp_ratio": 4.0, "hidden_act": "gelu", "layer_norm_eps": 1e-6,
    "initializer_range": 0.02, "model_type": "sam2_hiera_det_model",
}
VISION_DEFAULTS: dict[str, Any] = {
    "backbone_channel_list": [768, 384, 192, 96], "backbone_feature_sizes": [[256, 256], [128, 128], [64, 64]],
    "fpn_hidden_size": 256, "fpn_kernel_size": 1, "fpn_stride": 1, "fpn_padding": 0, "fpn_top_down_levels": [2, 3],
    "num_feature_levels": 3, "hidden_act": "gelu", "layer_norm_eps": 1e-6, "initializer_range": 0.02,
    "model_type": "sam2_vision_model",
}


def _pair_list(value) -> list[int]:
    return [int(value)] * 2 if isinstance(value, (int, float)) else [int(v) for v in value]


class Sam2VisionConfig(BackboneConfigMixin, PretrainedConfig):
    """transformers' Sam2Config (`model_type` "sam2"), read for its vision encoder: `vision_config` holds
    Sam2VisionConfig's fields and the trunk's `backbone_config` (Sam2HieraDetConfig's fields), each completed with
    transformers' defaults; the generic keys transformers writes into every sub-config (`id2label`, `dtype`, ...) are
    dropped from them, and the prompt encoder's and mask decoder's configs are kept as they are and written back.

    `stage_names`: `stage1` ... `stage4` (the trunk) and `fpn1` ... `fpn{num_feature_levels}` (the neck's levels,
    finest first, as `fpn_hidden_states`); the default selection is the neck's levels.
    """

    model_type = "sam2"
    derived_keys = ("model_type", "stage_names")
    training_defaults: ClassVar[dict] = dict(TRAINING_DEFAULTS)
    defaults: ClassVar[dict] = {"vision_config": None, "initializer_range": 0.02}

    def __init__(self, out_features: list[str] | None = None, out_indices: list[int] | None = None, **kwargs):
        super().__init__(**kwargs)
        given = copy.deepcopy(self.vision_config or {})
        trunk = given.get("backbone_config") or {}
        if trunk.get("model_type", "sam2_hiera_det_model") != "sam2_hiera_det_model":
            raise ValueError(f"vision_config.backbone_config has model_type {trunk['model_type']!r}; jaxbackbones "
                             "reads SAM2 vision encoders with a sam2_hiera_det_model trunk only")
        vision = {key: given.get(key, default) for key, default in VISION_DEFAULTS.items()}
        vision["backbone_config"] = {key: trunk.get(key, default) for key, default in HIERA_DET_DEFAULTS.items()}
        self.vision_config = vision
        t = vision["backbone_config"]
        for name in ("patch_kernel_size", "patch_stride", "patch_padding", "query_stride"):
            t[name] = _pair_list(t[name])
        stages = len(t["blocks_per_stage"])
        for name in ("embed_dim_per_stage", "num_attention_heads_per_stage", "window_size_per_stage"):
            if len(t[name]) != stages:
                raise ValueError(f"backbone_config.{name} {t[name]} must have one entry per stage ({stages})")
        for i, (dim, heads) in enumerate(zip(t["embed_dim_per_stage"], t["num_attention_heads_per_stage"])):
            if heads < 1 or dim % heads:
                raise ValueError(f"stage{i + 1} has {dim} channels, which num_attention_heads_per_stage[{i}]={heads} "
                                 "does not divide")
        if t["embed_dim_per_stage"][0] != t["hidden_size"]:
            raise ValueError(f"backbone_config.hidden_size {t['hidden_size']} must equal embed_dim_per_stage[0]")
        if list(vision["backbone_channel_list"]) != list(t["embed_dim_per_stage"])[::-1]:
            raise ValueError(f"vision_config.backbone_channel_list {vision['backbone_channel_list']} must be the "
                             f"stages' widths, deepest first ({list(t['embed_dim_per_stage'])[::-1]})")
        if not 1 <= vision["num_feature_levels"] <= stages:
            raise ValueError(f"num_feature_levels must be in [1, {stages}], got {vision['num_feature_levels']}")
        get_activation(t["hidden_act"])
        self.stage_names = [f"stage{i}" for i in range(1, stages + 1)] + [
            f"fpn{i}" for i in range(1, vision["num_feature_levels"] + 1)]
        if out_features is None and out_indices is None:
            out_features = [name for name in self.stage_names if name.startswith("fpn")]
        self.set_output_features_output_indices(out_features=out_features, out_indices=out_indices)
        verify_training_fields(self)

    @property
    def num_channels(self) -> int:
        return self.trunk["num_channels"]

    @property
    def trunk(self) -> dict[str, Any]:
        return self.vision_config["backbone_config"]

    def block_plans(self) -> list[DetBlockPlan]:
        """Every block's shape, as transformers' Sam2HieraDetModel builds them."""
        t, plans, index = self.trunk, [], 0
        dims, windows = t["embed_dim_per_stage"], t["window_size_per_stage"]
        for stage, depth in enumerate(t["blocks_per_stage"]):
            for j in range(depth):
                first = stage > 0 and j == 0
                window = 0 if index in t["global_attention_blocks"] else windows[stage - 1 if first else stage]
                plans.append(DetBlockPlan(
                    dim=dims[stage - 1 if first else stage], dim_out=dims[stage],
                    heads=t["num_attention_heads_per_stage"][stage],
                    q_stride=tuple(t["query_stride"]) if first and stage <= t["num_query_pool_stages"] else None,
                    window_size=window))
                index += 1
        return plans


def sine_position_encoding(height: int, width: int, channels: int, temperature: float = 10000.0) -> np.ndarray:
    """(height, width, channels) float32: the sine position encoding SAM2's neck gives each level
    (`Sam2SinePositionEmbedding(channels // 2, normalize=True)`, the vision encoder's `fpn_position_encoding`):
    rows then columns, each normalised to (0, 2 pi], sines and cosines interleaved; a function of the shape only."""
    f32, features = np.float32, channels // 2
    scale, eps = f32(2 * np.pi), f32(1e-6)
    y = np.arange(1, height + 1, dtype=f32)
    x = np.arange(1, width + 1, dtype=f32)
    y, x = y / (y[-1] + eps) * scale, x / (x[-1] + eps) * scale
    dim_t = f32(temperature) ** (f32(2) * (np.arange(features) // 2).astype(f32) / f32(features))

    def encode(values):
        pos = values[:, None] / dim_t
        return np.stack((np.sin(pos[:, 0::2]), np.cos(pos[:, 1::2])), axis=-1).reshape(len(values), -1)

    rows, cols = encode(y), encode(x)
    return np.concatenate([np.broadcast_to(rows[:, None], (height, width, features)),
                           np.broadcast_to(cols[None], (height, width, features))], axis=-1).astype(f32)


class FpnNeck(nnx.Module):
    """transformers' Sam2VisionNeck without its sine position encodings: `convs[k]` maps stage `n - k`."""

    def __init__(self, channels: Sequence[int], hidden: int, *, kernel: int, stride: int, padding: int,
                 top_down_levels: Sequence[int], dtype, param_dtype, rngs: nnx.Rngs):
        self.top_down_levels = tuple(top_down_levels)
        self.convs = nnx.List([
            nnx.Conv(c, hidden, kernel_size=(kernel, kernel), strides=(stride, stride),
                     padding=((padding, padding), (padding, padding)), kernel_init=initializers.normal(0.02),
                     bias_init=initializers.zeros, dtype=dtype, param_dtype=param_dtype,
                     conv_general_dilated=conv_general_dilated, rngs=rngs)
            for c in channels])

    def __call__(self, maps: Sequence[jax.Array]) -> list[jax.Array]:
        """Every level, finest first."""
        n, levels, previous = len(self.convs) - 1, [None] * len(maps), None
        for i in range(n, -1, -1):
            lateral = self.convs[n - i](maps[i])
            if i in self.top_down_levels and i != n:
                if tuple(lateral.shape[1:3]) != (2 * previous.shape[1], 2 * previous.shape[2]):
                    raise ValueError(
                        f"SAM2's FPN adds stage{i + 1}'s {lateral.shape[1]}x{lateral.shape[2]} map to the 2x upsampled "
                        f"stage{i + 2}'s {previous.shape[1]}x{previous.shape[2]} map, which needs even maps: use an "
                        "input whose height and width are multiples of 32 (SAM2's processor gives 1024x1024)")
                up = jnp.repeat(jnp.repeat(previous, 2, axis=1), 2, axis=2)
                previous = lateral + up.astype(lateral.dtype)
            else:
                previous = lateral
            levels[i] = previous
        return levels


class Sam2VisionBackbone(BackboneModuleMixin, nnx.Module):
    """SAM2's vision encoder (transformers' Sam2VisionModel: HieraDet trunk + FPN neck) as a backbone, in Flax NNX.

    `model(pixel_values)` (batch, height, width, channels; sides multiples of 32, 1024x1024 as SAM2's processor
    gives) returns a `BackboneOutput` whose `feature_maps` are the selected stages: by default the neck's levels
    `fpn1` ... (`fpn_hidden_states`, finest first), what SAM2's mask decoder reads; the trunk's `stage1` ...
    `stage4` can be selected too. `output_hidden_states=True` adds every stage's map. `data_format` as other
    backbones. The blocks have no dropout or drop path (transformers' have none). The levels' position encodings
    (`fpn_position_encoding`, which SAM2's mask decoder reads alongside) depend on the shapes only:
    `position_encodings(height, width)` gives them for an input size.
    """

    def __init__(self, config: Sam2VisionConfig, *, rngs: nnx.Rngs, dtype=jnp.float32, param_dtype=jnp.float32,
                 data_format: str = "channels_last"):
        self.config = config
        self.data_format = validate_data_format(data_format)
        self.dtype = dtype
        t, vision = config.trunk, config.vision_config
        levels = vision["num_feature_levels"]
        self.num_features = (*t["embed_dim_per_stage"], *([vision["fpn_hidden_size"]] * levels))
        stride, qs = t["patch_stride"][0], t["query_stride"][0]
        trunk_reductions = [stride * qs ** min(i, t["num_query_pool_stages"])
                            for i in range(len(t["blocks_per_stage"]))]
        self.reductions = (*trunk_reductions, *trunk_reductions[:levels])
        options = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.backbone = HieraDetTrunk(
            num_channels=t["num_channels"], embed_dim=t["hidden_size"], patch_kernel=t["patch_kernel_size"],
            patch_stride=t["patch_stride"], patch_padding=t["patch_padding"],
            global_pos_size=t["window_positional_embedding_background_size"], window=t["window_size_per_stage"][0],
            depths=t["blocks_per_stage"], plans=config.block_plans(), mlp_ratio=t["mlp_ratio"],
            activation=t["hidden_act"], eps=t["layer_norm_eps"], init_std=t["initializer_range"], **options)
        self.neck = FpnNeck(vision["backbone_channel_list"], vision["fpn_hidden_size"],
                            kernel=vision["fpn_kernel_size"], stride=vision["fpn_stride"],
                            padding=vision["fpn_padding"], top_down_levels=vision["fpn_top_down_levels"], **options)
        configure_training(self)

    def position_encodings(self, height: int, width: int) -> list[np.ndarray]:
        """The neck levels' sine position encodings for a `height` x `width` input, finest first, (h, w, C) each."""
        levels = self.config.vision_config["num_feature_levels"]
        channels = self.config.vision_config["fpn_hidden_size"]
        return [sine_position_encoding(-(-height // r), -(-width // r), channels) for r in self.reductions[-levels:]]

    def stage_paths(self) -> dict[str, list[tuple]]:
        """Stage k owns its blocks (stage1 also the patch and position embeddings); the neck's levels own its
        convolutions (fpn1 the one of stage1's map, ...)."""
        ends = [0] + [e + 1 for e in self.backbone.stage_ends]
        paths = {}
        for k in range(len(ends) - 1):
            paths[f"stage{k + 1}"] = [("backbone", "blocks", i) for i in range(ends[k], ends[k + 1])]
        paths["stage1"] += [("backbone", "patch_embed"), ("backbone", "pos_embed"), ("backbone", "pos_embed_window")]
        n = len(self.neck.convs) - 1
        for name in self.stage_names:
            if name.startswith("fpn"):
                paths[name] = [("neck", "convs", n - (int(name[3:]) - 1))]
        return paths

    def __call__(self, pixel_values: jax.Array, output_hidden_states: bool = False, output_attentions: bool = False,
                 *, rngs: nnx.Rngs | None = None) -> BackboneOutput:
        self.check_rngs(rngs)
        if output_attentions:
            raise ValueError("Sam2VisionBackbone does not return attention probabilities (output_attentions=False)")
        channels = self.config.trunk["num_channels"]
        pixel_values = validate_pixel_values(pixel_values, channels, self.data_format)
        maps = self.backbone(from_channels_first(pixel_values, self.data_format).astype(self.dtype), rngs)
        levels = self.neck(maps)[: self.config.vision_config["num_feature_levels"]]
        outputs = [to_channels_first(m, self.data_format) for m in (*maps, *levels)]
        return BackboneOutput(
            feature_maps=tuple(outputs[self.stage_names.index(name)] for name in self.out_features),
            hidden_states=tuple(outputs) if output_hidden_states else None)


class Sam2VideoVisionConfig(Sam2VisionConfig):
    """transformers' Sam2VideoConfig (`model_type` "sam2_video": the hub's facebook/sam2.1-hiera-* and
    facebook/sam2-hiera-* repos, saved from `Sam2VideoModel`), read for its vision encoder exactly as
    `Sam2VisionConfig`; the memory modules' fields are kept as they are and written back."""

    model_type = "sam2_video"
