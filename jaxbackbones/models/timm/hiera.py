"""timm's Hiera (`timm/models/hiera.py`, `Hiera`: `hiera_*_224`, `hiera_*_abswin_256`) and HieraDet
(`timm/models/hieradet_sam2.py`, `HieraDet`: `sam2_hiera_*`, SAM2's trunk) on jaxbackbones' Hiera / HieraDet modules
(`models/hiera.py`, `models/hieradet.py`).

Stages are timm's `feature_info`: the last block of each stage, `blocks.{end}` (strides 4, 8, 16, 32), each map as
`features_only=True` returns it (Hiera: rerolled to (H, W); HieraDet: the block's output), no norm. Every module sits
under `trunk` (`trunk.patch_embed.proj`, `trunk.pos_embed`, `trunk.blocks.{i}`).

Quirks (see the model files): Hiera numbers its blocks across stages, shrinks the mask unit only at pooling blocks,
and gives a stage's first block the previous stage's `mask_unit_attn`; `abs_win_pos_embed` (the `abswin` models)
resizes a (C, 16, 16) grid with antialiased bicubic to the token grid and adds the tiled mask-unit embedding;
`use_expand_proj=False` widens the residual with the concatenated max and mean pool instead of a projection; Hiera
runs at `img_size` only (its token layout is fixed by it), as timm. HieraDet's first block of a stage keeps the
previous stage's window; its position embedding is resized (bicubic, no antialiasing) to any input whose token grid
is a multiple of `window_spec[0]`: any size timm accepts, non-square too.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

import jax
import numpy as np
from flax import nnx

from ..common import pair
from ..hiera import BlockPlan, HieraTrunk
from ..hieradet import DetBlockPlan, HieraDetTrunk
from .spec import TimmSpec

_HIERA_IGNORED = frozenset({"fix_init", "weight_init", "head_init_scale"})

# name -> the keyword arguments timm's entrypoint (timm/models/hiera.py) gives `Hiera`.
HIERA_ARCHITECTURES: dict[str, dict[str, Any]] = {
    "hiera_tiny_224": dict(embed_dim=96, num_heads=1, stages=(1, 2, 7, 2)),
    "hiera_small_224": dict(embed_dim=96, num_heads=1, stages=(1, 2, 11, 2)),
    "hiera_base_224": dict(embed_dim=96, num_heads=1, stages=(2, 3, 16, 3)),
    "hiera_base_plus_224": dict(embed_dim=112, num_heads=2, stages=(2, 3, 16, 3)),
    "hiera_large_224": dict(embed_dim=144, num_heads=2, stages=(2, 6, 36, 4)),
    "hiera_huge_224": dict(embed_dim=256, num_heads=4, stages=(2, 6, 36, 4)),
    "hiera_small_abswin_256": dict(embed_dim=96, num_heads=1, stages=(1, 2, 11, 2), abs_win_pos_embed=True,
                                   global_pos_size=(16, 16), init_values=1e-5, weight_init="jax",
                                   use_expand_proj=False),
    "hiera_base_abswin_256": dict(embed_dim=96, num_heads=1, stages=(2, 3, 16, 3), abs_win_pos_embed=True,
                                  init_values=1e-5, weight_init="jax"),
}
# name -> the keyword arguments timm's entrypoint (timm/models/hieradet_sam2.py) gives `HieraDet` (the SAM2 ones
# with their default weights' `num_classes=0`: SAM2's trunk has no classifier).
HIERADET_ARCHITECTURES: dict[str, dict[str, Any]] = {
    "sam2_hiera_tiny": dict(stages=(1, 2, 7, 2), global_att_blocks=(5, 7, 9), num_classes=0),
    "sam2_hiera_small": dict(stages=(1, 2, 11, 2), global_att_blocks=(7, 10, 13), num_classes=0),
    "sam2_hiera_base_plus": dict(embed_dim=112, num_heads=2, global_pos_size=(14, 14), num_classes=0),
    "sam2_hiera_large": dict(embed_dim=144, num_heads=2, stages=(2, 6, 36, 4), global_att_blocks=(23, 33, 43),
                             window_spec=(8, 4, 16, 8), num_classes=0),
    "hieradet_small": dict(stages=(1, 2, 11, 2), global_att_blocks=(7, 10, 13), window_spec=(8, 4, 16, 8),
                           init_values=1e-5),
}
_PAIRS = ("img_size", "q_stride", "mask_unit_size", "patch_kernel", "patch_stride", "global_pos_size")


def _normalize(args: dict[str, Any]) -> dict[str, Any]:
    for name in _PAIRS:
        if name in args:
            args[name] = pair(args[name], name)
    if "patch_padding" in args:
        padding = args["patch_padding"]
        args["patch_padding"] = tuple(int(p) for p in (padding if isinstance(padding, (list, tuple)) else
                                                       (padding, padding)))
    for name, kind in (("stages", int), ("mask_unit_attn", bool), ("window_spec", int), ("global_att_blocks", int)):
        if name in args and args[name] is not None:
            args[name] = tuple(kind(v) for v in args[name])
    return args


def _stage_ends(stages) -> list[int]:
    return [int(e) - 1 for e in np.cumsum(stages)]


def _stage_dims(embed_dim: int, dim_mul: float, stages) -> tuple[int, ...]:
    dims = [embed_dim]
    for _ in stages[1:]:
        dims.append(int(dims[-1] * dim_mul))
    return tuple(dims)


class _HieraStages:
    """The stages of both timm Hieras: one per `stages` entry, named by its last block, the channels multiplied by
    `dim_mul` and the stride by `q_stride` at each of the first `q_pool` stage starts."""

    @property
    def stage_names(self) -> list[str]:
        return [f"blocks.{end}" for end in _stage_ends(self.stages)]

    @property
    def num_features(self) -> tuple[int, ...]:
        return _stage_dims(self.embed_dim, self.dim_mul, self.stages)

    @property
    def reductions(self) -> tuple[int, ...]:
        return tuple(self.patch_stride[0] * self.q_stride[0] ** min(i, self.q_pool) for i in range(len(self.stages)))


@dataclasses.dataclass(frozen=True)
class HieraSpec(_HieraStages, TimmSpec):
    """A timm Hiera, resolved: `Hiera`'s arguments that shape the backbone."""

    img_size: tuple[int, int] = (224, 224)
    embed_dim: int = 96
    num_heads: int = 1
    stages: tuple[int, ...] = (2, 3, 16, 3)
    q_pool: int = 3
    q_stride: tuple[int, int] = (2, 2)
    mask_unit_size: tuple[int, int] = (8, 8)
    mask_unit_attn: tuple[bool, ...] = (True, True, False, False)
    use_expand_proj: bool = True
    dim_mul: float = 2.0
    head_mul: float = 2.0
    patch_kernel: tuple[int, int] = (7, 7)
    patch_stride: tuple[int, int] = (4, 4)
    patch_padding: tuple[int, int] = (3, 3)
    mlp_ratio: float = 4.0
    drop_path_rate: float = 0.0
    init_values: float | None = None
    abs_win_pos_embed: bool = False
    global_pos_size: tuple[int, int] = (14, 14)

    family: ClassVar[str] = "hiera"
    ignored_args: ClassVar[frozenset[str]] = _HIERA_IGNORED
    only_args: ClassVar[dict[str, tuple]] = {"norm_layer": ("layernorm",), "sep_pos_embed": (False,),
                                             "patch_drop_rate": (0.0, 0)}

    def __post_init__(self):
        if not self.stages or min(self.stages) < 1 or len(self.mask_unit_attn) != len(self.stages):
            raise ValueError(f"stages {self.stages} and mask_unit_attn {self.mask_unit_attn} need one entry per stage")
        if not 0 <= self.q_pool < len(self.stages):
            raise ValueError(f"q_pool {self.q_pool} must be less than the number of stages ({len(self.stages)})")
        grid = [i // s for i, s in zip(self.img_size, self.patch_stride)]
        if any(g % m for g, m in zip(grid, self.mask_unit_size)) or any(
                m % q ** (len(self.stages) - 1) for m, q in zip(self.mask_unit_size, self.q_stride)):
            raise ValueError(f"img_size {self.img_size}: the {grid[0]}x{grid[1]} token grid must be tiled by "
                             f"mask_unit_size {self.mask_unit_size}, itself divisible by q_stride {self.q_stride} "
                             f"** {len(self.stages) - 1}")
        for plan in self.block_plans():
            if plan.dim_out % plan.heads:
                raise ValueError(f"{plan.dim_out} channels cannot be split into {plan.heads} heads")
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {self.drop_path_rate}")

    @classmethod
    def normalize(cls, name: str, args: dict[str, Any]) -> dict[str, Any]:
        return _normalize(args)

    def block_plans(self) -> list[BlockPlan]:
        """Every block, as timm's `Hiera.__init__` builds them."""
        ends = _stage_ends(self.stages)
        pool_blocks = [e + 1 for e in ends[: self.q_pool]]
        flat_mu, flat_q = math.prod(self.mask_unit_size), math.prod(self.q_stride)
        rates = np.linspace(0, self.drop_path_rate, sum(self.stages)).tolist()
        plans, stage, dim, heads = [], 0, self.embed_dim, self.num_heads
        for i in range(sum(self.stages)):
            dim_out, mask_unit_attn = dim, self.mask_unit_attn[stage]
            if i - 1 in ends:
                dim_out, heads, stage = int(dim * self.dim_mul), int(heads * self.head_mul), stage + 1
                if i in pool_blocks:
                    flat_mu //= flat_q
            plans.append(BlockPlan(dim=dim, dim_out=dim_out, heads=heads, q_stride=flat_q if i in pool_blocks else 1,
                                   window_size=flat_mu, mask_unit_attn=mask_unit_attn, drop_path=float(rates[i])))
            dim = dim_out
        return plans

    def build(self, num_channels: int, *, dtype, param_dtype, rngs: nnx.Rngs) -> dict[str, nnx.Module]:
        return {"trunk": HieraTrunk(
            num_channels=num_channels, embed_dim=self.embed_dim, image_size=self.img_size,
            patch_size=self.patch_kernel, patch_stride=self.patch_stride, patch_padding=self.patch_padding,
            query_stride=self.q_stride, masked_unit_size=self.mask_unit_size, num_query_pool=self.q_pool,
            depths=self.stages, plans=self.block_plans(), abswin=self.abs_win_pos_embed,
            global_pos_size=self.global_pos_size, mlp_ratio=self.mlp_ratio, activation="gelu", eps=1e-6,
            init_values=self.init_values, use_expand_proj=self.use_expand_proj, dtype=dtype, param_dtype=param_dtype,
            rngs=rngs)}

    def forward(self, backbone: nnx.Module, x: jax.Array, rngs: nnx.Rngs | None) -> list[jax.Array]:
        return backbone.trunk(x, rngs)[1:]

    def stage_paths(self) -> dict[str, list[tuple]]:
        return _trunk_stage_paths(self.stage_names, self.stages, ("pos_embed", "pos_embed_win"))

    def pretrained_cfg_defaults(self) -> dict[str, Any]:
        return dict(interpolation="bicubic", crop_pct=0.9, first_conv="patch_embed.proj", classifier="head.fc")


def _trunk_stage_paths(names, stages, embeddings) -> dict[str, list[tuple]]:
    """Stage k owns its blocks; the first stage also the patch and position embeddings."""
    starts = [0] + [e + 1 for e in _stage_ends(stages)]
    paths = {name: [("trunk", "blocks", i) for i in range(starts[k], starts[k + 1])] for k, name in enumerate(names)}
    paths[names[0]] += [("trunk", "patch_embed")] + [("trunk", name) for name in embeddings]
    return paths


@dataclasses.dataclass(frozen=True)
class HieraDetSpec(_HieraStages, TimmSpec):
    """A timm HieraDet (SAM2's trunk), resolved: `HieraDet`'s arguments that shape the backbone."""

    embed_dim: int = 96
    num_heads: int = 1
    patch_kernel: tuple[int, int] = (7, 7)
    patch_stride: tuple[int, int] = (4, 4)
    patch_padding: tuple[int, int] = (3, 3)
    q_pool: int = 3
    q_stride: tuple[int, int] = (2, 2)
    stages: tuple[int, ...] = (2, 3, 16, 3)
    dim_mul: float = 2.0
    head_mul: float = 2.0
    global_pos_size: tuple[int, int] = (7, 7)
    window_spec: tuple[int, ...] = (8, 4, 14, 7)
    global_att_blocks: tuple[int, ...] = (12, 16, 20)
    init_values: float | None = None
    drop_path_rate: float = 0.0

    family: ClassVar[str] = "hieradet"
    ignored_args: ClassVar[frozenset[str]] = _HIERA_IGNORED
    only_args: ClassVar[dict[str, tuple]] = {"norm_layer": ("layernorm",), "act_layer": ("gelu",),
                                             "patch_size": (None,)}

    def __post_init__(self):
        if not self.stages or min(self.stages) < 1 or len(self.window_spec) != len(self.stages):
            raise ValueError(f"stages {self.stages} and window_spec {self.window_spec} need one entry per stage")
        if not 0 <= self.q_pool <= len(self.stages) - 1:
            raise ValueError(f"q_pool {self.q_pool} must be in [0, {len(self.stages) - 1}]")
        for plan in self.block_plans():
            if plan.dim_out % plan.heads:
                raise ValueError(f"{plan.dim_out} channels cannot be split into {plan.heads} heads")
            if plan.q_stride is not None and plan.window_size and plan.window_size % plan.q_stride[0]:
                raise ValueError(f"window {plan.window_size} of a pooling block is not divisible by q_stride "
                                 f"{self.q_stride}")
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {self.drop_path_rate}")

    @classmethod
    def normalize(cls, name: str, args: dict[str, Any]) -> dict[str, Any]:
        return _normalize(args)

    def block_plans(self) -> list[DetBlockPlan]:
        """Every block, as timm's `HieraDet.__init__` builds them."""
        ends = _stage_ends(self.stages)
        pool_blocks = [e + 1 for e in ends[:-1]][: self.q_pool]
        rates = np.linspace(0, self.drop_path_rate, sum(self.stages)).tolist()
        plans, stage, dim, heads = [], 0, self.embed_dim, self.num_heads
        for i in range(sum(self.stages)):
            dim_out = dim
            window = 0 if i in (self.global_att_blocks or ()) else self.window_spec[stage]
            if i - 1 in ends:
                dim_out, heads, stage = int(dim * self.dim_mul), int(heads * self.head_mul), stage + 1
            plans.append(DetBlockPlan(dim=dim, dim_out=dim_out, heads=heads,
                                      q_stride=tuple(self.q_stride) if i in pool_blocks else None,
                                      window_size=window, drop_path=float(rates[i])))
            dim = dim_out
        return plans

    def build(self, num_channels: int, *, dtype, param_dtype, rngs: nnx.Rngs) -> dict[str, nnx.Module]:
        return {"trunk": HieraDetTrunk(
            num_channels=num_channels, embed_dim=self.embed_dim, patch_kernel=self.patch_kernel,
            patch_stride=self.patch_stride, patch_padding=self.patch_padding, global_pos_size=self.global_pos_size,
            window=self.window_spec[0], depths=self.stages, plans=self.block_plans(), mlp_ratio=4.0,
            activation="gelu", eps=1e-6, init_values=self.init_values, dtype=dtype, param_dtype=param_dtype,
            rngs=rngs)}

    def forward(self, backbone: nnx.Module, x: jax.Array, rngs: nnx.Rngs | None) -> list[jax.Array]:
        return backbone.trunk(x, rngs)

    def stage_paths(self) -> dict[str, list[tuple]]:
        return _trunk_stage_paths(self.stage_names, self.stages, ("pos_embed", "pos_embed_window"))

    def pretrained_cfg_defaults(self) -> dict[str, Any]:
        return dict(interpolation="bicubic", crop_pct=1.0, first_conv="patch_embed.proj", classifier="head.fc")
