"""timm's PVTv2 (`timm/models/pvt_v2.py`, `PyramidVisionTransformerV2`) on jaxbackbones' PVTv2 / MiT modules.

Stages `stages.0` ... `stages.3` (strides 4 to 32), each stage's output after its norm, as timm's `feature_info` and
`features_only` give them. timm's quirks: the first stage's patch embedding is the model's `patch_embed` (7x7,
stride 4), later stages' are `stages.{i}.downsample` (3x3, stride 2); LayerNorm eps 1e-5 in the patch embeddings and
the spatial reductions (`nn.LayerNorm`), 1e-6 in the blocks and stage norms (timm's `LayerNorm`); the `_li` variant
(`linear=True`) pools keys and values to 7x7 and adds a ReLU after the MLP's fc1. Dropout: `proj_drop_rate` after
the attention's projection and in the MLP, `attn_drop_rate` on the attention probabilities.

State paths are `PvtV2Backbone`'s (`stages.i.patch_embed`, `stages.i.blocks.j`, `stages.i.norm`): timm's stage
`stages.0` owns the model's `patch_embed`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax
from flax import nnx

from ..pvt_v2 import build_stages, run_stages
from .spec import TimmSpec

_WIDE = (64, 128, 320, 512)
_HEADS = (1, 2, 5, 8)

# name -> the keyword arguments timm's entrypoint (timm/models/pvt_v2.py) gives `PyramidVisionTransformerV2`.
ARCHITECTURES: dict[str, dict[str, Any]] = {
    "pvt_v2_b0": dict(depths=(2, 2, 2, 2), embed_dims=(32, 64, 160, 256), num_heads=_HEADS),
    "pvt_v2_b1": dict(depths=(2, 2, 2, 2), embed_dims=_WIDE, num_heads=_HEADS),
    "pvt_v2_b2": dict(depths=(3, 4, 6, 3), embed_dims=_WIDE, num_heads=_HEADS),
    "pvt_v2_b3": dict(depths=(3, 4, 18, 3), embed_dims=_WIDE, num_heads=_HEADS),
    "pvt_v2_b4": dict(depths=(3, 8, 27, 3), embed_dims=_WIDE, num_heads=_HEADS),
    "pvt_v2_b5": dict(depths=(3, 6, 40, 3), embed_dims=_WIDE, num_heads=_HEADS, mlp_ratios=(4, 4, 4, 4)),
    "pvt_v2_b2_li": dict(depths=(3, 4, 6, 3), embed_dims=_WIDE, num_heads=_HEADS, linear=True),
}
# timm's LayerNorm epsilons (see the module docstring).
NORM_EPS = dict(patch=1e-5, reduction=1e-5, block=1e-6)


@dataclasses.dataclass(frozen=True)
class PvtV2Spec(TimmSpec):
    """A timm PVTv2, resolved: `PyramidVisionTransformerV2`'s arguments that shape the backbone."""

    depths: tuple[int, ...] = (3, 4, 6, 3)
    embed_dims: tuple[int, ...] = (64, 128, 256, 512)
    num_heads: tuple[int, ...] = (1, 2, 4, 8)
    sr_ratios: tuple[int, ...] = (8, 4, 2, 1)
    mlp_ratios: tuple[float, ...] = (8.0, 8.0, 4.0, 4.0)
    qkv_bias: bool = True
    linear: bool = False
    proj_drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.0

    family: ClassVar[str] = "pvt_v2"
    only_args: ClassVar[dict[str, tuple]] = {"norm_layer": (None,)}

    def __post_init__(self):
        stages = len(self.depths)
        if not stages or len(self.embed_dims) != stages or min(self.depths) < 0:
            raise ValueError(f"depths {self.depths} and embed_dims {self.embed_dims} need one entry per stage "
                             "(depths >= 0)")
        for name in ("num_heads", "sr_ratios", "mlp_ratios"):
            if len(getattr(self, name)) != stages or min(getattr(self, name)) <= 0:
                raise ValueError(f"{name} {getattr(self, name)}: one positive entry per stage ({stages})")
        for dim, heads in zip(self.embed_dims, self.num_heads):
            if dim % heads:
                raise ValueError(f"embed_dims {self.embed_dims} are not divisible by num_heads {self.num_heads}")
        for name in ("proj_drop_rate", "attn_drop_rate", "drop_path_rate"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")

    @classmethod
    def normalize(cls, name: str, args: dict[str, Any]) -> dict[str, Any]:
        stages = len(args.get("depths", cls.depths))
        for arg, kind in (("depths", int), ("embed_dims", int), ("num_heads", int), ("sr_ratios", int),
                          ("mlp_ratios", float)):
            if arg in args:  # timm's to_ntuple: a single value is every stage's
                value = args[arg]
                values = value if isinstance(value, (list, tuple)) else (value,) * stages
                args[arg] = tuple(kind(v) for v in values)
        return args

    @property
    def stage_names(self) -> list[str]:
        return [f"stages.{i}" for i in range(len(self.depths))]

    @property
    def num_features(self) -> tuple[int, ...]:
        return tuple(self.embed_dims)

    @property
    def reductions(self) -> tuple[int, ...]:
        return tuple(4 * 2**i for i in range(len(self.depths)))

    def build(self, num_channels: int, *, dtype, param_dtype, rngs: nnx.Rngs) -> dict[str, nnx.Module]:
        stages = len(self.depths)
        return {"stages": build_stages(
            in_channels=num_channels, hidden_sizes=self.embed_dims, depths=self.depths, num_heads=self.num_heads,
            mlp_ratios=self.mlp_ratios, sr_ratios=self.sr_ratios, patch_sizes=(7,) + (3,) * (stages - 1),
            strides=(4,) + (2,) * (stages - 1), drop_path_rate=self.drop_path_rate, norm_eps=NORM_EPS,
            linear=self.linear, qkv_bias=self.qkv_bias, activation="gelu", hidden_dropout=self.proj_drop_rate,
            attention_dropout=self.attn_drop_rate, dtype=dtype, param_dtype=param_dtype, rngs=rngs)}

    def forward(self, backbone: nnx.Module, x: jax.Array, rngs: nnx.Rngs | None) -> list[jax.Array]:
        return run_stages(backbone.stages, x, rngs=rngs)[0]

    def stage_paths(self) -> dict[str, list[tuple]]:
        return {name: [("stages", i)] for i, name in enumerate(self.stage_names)}

    def pretrained_cfg_defaults(self) -> dict[str, Any]:
        return dict(interpolation="bicubic", crop_pct=0.9, first_conv="patch_embed.proj", classifier="head")
