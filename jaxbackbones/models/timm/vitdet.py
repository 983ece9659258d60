"""timm's SAM ViTs (`VisionTransformerSAM`, timm/models/vision_transformer_sam.py: `samvit_base_patch16`, `_large_`,
`_huge_`, `samvit_base_patch16_224`) on jaxbackbones' windowed ViT (`models/vitdet.py`).

Stages are timm's `feature_info`: `blocks.0` ... `blocks.{depth-1}`, `embed_dim` channels at stride `patch_size`; a
stage's map is what `timm.create_model(name, features_only=True)` returns: the block's raw output (`FeatureGetterNet`
calls `forward_intermediates(norm=False)`, which prunes the neck; so the neck, and `samvit_base_patch16_224`'s
LayerNorm2d in its place, are not built, and their weights are ignored on load).

Any input size runs, as in timm (whose SAM ViT is always dynamic: `strict_img_size=False`): the absolute position
embedding is resampled with antialiased bicubic (`resample_abs_pos_embed_nhwc`) at another grid, the global blocks'
relative position tables with linear interpolation; inputs that are not a multiple of the patch are refused, as timm's
patch embedding asserts. timm's blocks use torch's LayerNorm default eps (1e-5), not SAM's 1e-6.
`samvit_base_patch16_224` has no absolute position embedding.

State paths are the windowed ViT's (`patch_embed.proj`, `pos_embed`, `blocks.i`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax
from flax import nnx

from ...layers import drop_path_rates
from ..common import pair
from ..vitdet import WindowedViT, WindowedViTLayout, encode
from .spec import TimmSpec

_SAM = dict(patch_size=16, window_size=14, use_rel_pos=True, img_size=1024, num_classes=0)

# name -> the keyword arguments timm's entrypoint gives `VisionTransformerSAM` (`num_classes` from the default
# pretrained_cfg: 0 for the SA-1B weights).
ARCHITECTURES: dict[str, dict[str, Any]] = {
    "samvit_base_patch16": dict(embed_dim=768, depth=12, num_heads=12, global_attn_indexes=[2, 5, 8, 11], **_SAM),
    "samvit_large_patch16": dict(embed_dim=1024, depth=24, num_heads=16, global_attn_indexes=[5, 11, 17, 23], **_SAM),
    "samvit_huge_patch16": dict(embed_dim=1280, depth=32, num_heads=16, global_attn_indexes=[7, 15, 23, 31], **_SAM),
    "samvit_base_patch16_224": dict(patch_size=16, embed_dim=768, depth=12, num_heads=12,
                                    global_attn_indexes=[2, 5, 8, 11], window_size=14, use_rel_pos=True,
                                    use_abs_pos=False, img_size=224, neck_chans=None),
}


@dataclasses.dataclass(frozen=True)
class SamViTSpec(TimmSpec):
    """A timm `VisionTransformerSAM`, resolved: the arguments that shape the backbone."""

    img_size: tuple[int, int] = (1024, 1024)
    patch_size: int = 16
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    use_abs_pos: bool = True
    use_rel_pos: bool = False
    window_size: int = 14
    global_attn_indexes: tuple[int, ...] = ()
    neck_chans: int | None = 256
    drop_path_rate: float = 0.0
    attn_drop_rate: float = 0.0
    proj_drop_rate: float = 0.0
    pos_drop_rate: float = 0.0

    family: ClassVar[str] = "samvit"
    ignored_args: ClassVar[frozenset[str]] = frozenset({"weight_init"})
    only_args: ClassVar[dict[str, tuple]] = {
        "qk_norm": (False,), "init_values": (None,), "pre_norm": (False,), "use_rope": (False,),
        "patch_drop_rate": (0, 0.0), "head_hidden_size": (None,), "ref_feat_shape": (None,)}

    @classmethod
    def normalize(cls, name: str, args: dict[str, Any]) -> dict[str, Any]:
        args["img_size"] = pair(args.get("img_size", 1024), "img_size")
        height, width = pair(args.get("patch_size", 16), "patch_size")
        if height != width:
            raise ValueError(f"{name}: patch_size {args['patch_size']!r}: square patches only")
        args["patch_size"] = height
        args["global_attn_indexes"] = tuple(args.get("global_attn_indexes", ()))
        return args

    def __post_init__(self):
        if self.depth < 1 or self.num_heads < 1 or self.embed_dim % self.num_heads:
            raise ValueError(f"depth={self.depth}, embed_dim={self.embed_dim}, num_heads={self.num_heads}: a ViT needs "
                             "at least one block and embed_dim divisible by num_heads")
        for name in ("drop_path_rate", "attn_drop_rate", "proj_drop_rate", "pos_drop_rate"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.window_size < 0:
            raise ValueError(f"window_size must be >= 0, got {self.window_size}")

    def layout(self, num_channels: int = 3) -> WindowedViTLayout:
        grid = (self.img_size[0] // self.patch_size, self.img_size[1] // self.patch_size)
        return WindowedViTLayout(
            embed_dim=self.embed_dim, depth=self.depth, num_heads=self.num_heads, patch_size=self.patch_size,
            mlp_hidden=int(self.embed_dim * self.mlp_ratio), num_channels=num_channels, qkv_bias=self.qkv_bias,
            window_size=self.window_size, windowed=tuple(i not in self.global_attn_indexes for i in range(self.depth)),
            rel_pos=self.use_rel_pos, rel_pos_grid=grid, pos_grid=grid if self.use_abs_pos else None,
            pos_antialias=True, require_patch_multiple=True, norm_eps=1e-5,
            drop_path=tuple(drop_path_rates(self.drop_path_rate, [self.depth])[0]), mlp_dropout=self.proj_drop_rate,
            proj_dropout=self.proj_drop_rate, attention_dropout=self.attn_drop_rate, pos_dropout=self.pos_drop_rate)

    @property
    def stage_names(self) -> list[str]:
        return [f"blocks.{i}" for i in range(self.depth)]

    @property
    def num_features(self) -> tuple[int, ...]:
        return (self.embed_dim,) * self.depth

    @property
    def reductions(self) -> tuple[int, ...]:
        return (self.patch_size,) * self.depth

    def build(self, num_channels: int, *, dtype, param_dtype, rngs: nnx.Rngs) -> dict[str, Any]:
        trunk = WindowedViT(self.layout(num_channels), dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        return {name: getattr(trunk, name) for name in ("layout", "patch_embed", "pos_embed", "pos_drop", "blocks")}

    def forward(self, backbone: nnx.Module, x: jax.Array, rngs: nnx.Rngs | None) -> list[jax.Array]:
        maps, _ = encode(backbone, x, rngs=rngs)
        return maps[1:]

    def stage_paths(self) -> dict[str, list[tuple]]:
        """`blocks.0` is the patch and position embeddings and the first block; `blocks.{k}` block k."""
        stem = [("patch_embed",), ("pos_embed",), ("pos_drop",)]
        return {name: [*(stem if i == 0 else []), ("blocks", i)] for i, name in enumerate(self.stage_names)}

    def pretrained_cfg_defaults(self) -> dict[str, Any]:
        return dict(interpolation="bicubic", crop_pct=1.0, first_conv="patch_embed.proj", classifier="head.fc")
