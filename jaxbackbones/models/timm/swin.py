"""timm's Swin Transformer v1 on jaxbackbones' Swin modules.

Stages `layers.0` ... `layers.3` (strides 4 to 32), each stage's raw output (timm has no per-stage norms; its final
`norm` and the head are not part of the backbone). As in timm, a stage whose feature map (at the configured
`img_size`) fits in one window uses that size as its window and is not shifted (unless `always_partition`);
windows are shifted before padding; stochastic depth acts on both residual branches. The window and shift of every
stage are fixed from `img_size`, as timm fixes them when it builds the model, so any other input size gives what
timm gives with `dynamic_img_size=True`. timm's Swin runs NHWC throughout, as ours does.

State paths are `SwinBackbone`'s (`patch_embed`, `stages.i`): timm's `layers.{i+1}.downsample` is
`stages.i.downsample`, run at the end of stage i.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax
from flax import nnx

from ...layers import drop_path_rates
from ..swin import SwinPatchEmbed, SwinStage
from .spec import TimmSpec


def _swin(embed_dim: int, depths: tuple[int, ...], num_heads: tuple[int, ...], window_size, **options):
    return dict(patch_size=4, window_size=window_size, embed_dim=embed_dim, depths=depths, num_heads=num_heads,
                **options)


_SWIN_T = dict(embed_dim=96, num_heads=(3, 6, 12, 24))  # tiny and small
_SWIN_B, _SWIN_L = dict(embed_dim=128, num_heads=(4, 8, 16, 32)), dict(embed_dim=192, num_heads=(6, 12, 24, 48))

# name -> the keyword arguments timm's entrypoint (timm/models/swin_transformer.py) gives `SwinTransformer`. Image
# sizes other than 224 come from the architecture's default pretrained_cfg `input_size`, as timm's builder sets
# `img_size` from it.
ARCHITECTURES: dict[str, dict[str, Any]] = {
    "swin_tiny_patch4_window7_224": _swin(depths=(2, 2, 6, 2), window_size=7, **_SWIN_T),
    "swin_small_patch4_window7_224": _swin(depths=(2, 2, 18, 2), window_size=7, **_SWIN_T),
    "swin_base_patch4_window7_224": _swin(depths=(2, 2, 18, 2), window_size=7, **_SWIN_B),
    "swin_base_patch4_window12_384": _swin(depths=(2, 2, 18, 2), window_size=12, img_size=384, **_SWIN_B),
    "swin_large_patch4_window7_224": _swin(depths=(2, 2, 18, 2), window_size=7, **_SWIN_L),
    "swin_large_patch4_window12_384": _swin(depths=(2, 2, 18, 2), window_size=12, img_size=384, **_SWIN_L),
    "swin_s3_tiny_224": _swin(depths=(2, 2, 6, 2), window_size=(7, 7, 14, 7), **_SWIN_T),
    "swin_s3_small_224": _swin(depths=(2, 2, 18, 2), window_size=(14, 14, 14, 7), **_SWIN_T),
    "swin_s3_base_224": _swin(depths=(2, 2, 30, 2), window_size=(7, 7, 14, 7), **_SWIN_T),
}


def pair(value, name: str) -> tuple[int, int]:
    """An int or an (height, width) pair as a pair of ints; `ValueError` naming `name` otherwise."""
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise ValueError(f"{name} must be an int or (height, width), got {value!r}")
        return int(value[0]), int(value[1])
    return int(value), int(value)


def _stage_windows(value, num_stages: int) -> tuple[int, ...]:
    """timm's `resolve_stage_window_sizes`: an int, an (h, w) pair, or one int or pair per stage; square only."""
    if not isinstance(value, (list, tuple)) or (len(value) == 2 and not isinstance(value[0], (list, tuple))):
        value = [value] * num_stages
    if len(value) != num_stages:
        raise ValueError(f"window_size {value!r} must give one window per stage ({num_stages} stages)")
    windows = []
    for window in value:
        height, width = pair(window, "window_size")
        if height != width:
            raise ValueError(f"window_size {value!r}: jaxbackbones supports square windows only")
        windows.append(height)
    return tuple(windows)


@dataclasses.dataclass(frozen=True)
class SwinSpec(TimmSpec):
    """A timm Swin v1, resolved: `timm.models.swin_transformer.SwinTransformer`'s arguments."""

    img_size: tuple[int, int] = (224, 224)
    patch_size: int = 4
    embed_dim: int = 96
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (3, 6, 12, 24)
    window_size: tuple[int, ...] = (7, 7, 7, 7)  # per stage
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    always_partition: bool = False
    drop_path_rate: float = 0.1
    attn_drop_rate: float = 0.0

    family: ClassVar[str] = "swin"
    ignored_args: ClassVar[frozenset[str]] = frozenset({"strict_img_size", "dynamic_img_size", "weight_init"})
    only_args: ClassVar[dict[str, tuple]] = {"proj_drop_rate": (0, 0.0), "head_dim": (None,),
                                             "norm_layer": ("layernorm",)}

    def __post_init__(self):
        if not self.depths or len(self.depths) != len(self.num_heads) or min(self.depths) < 1:
            raise ValueError(f"depths {self.depths} and num_heads {self.num_heads} must have one entry per stage, "
                             "each stage at least one block")
        if len(self.window_size) != len(self.depths) or min(self.window_size) < 1:
            raise ValueError(f"window_size {self.window_size} must give one positive size per stage")
        for dim, heads in zip(self.num_features, self.num_heads):
            if dim % heads:
                raise ValueError(f"{dim} channels cannot be split into num_heads={heads} heads")
        for name in ("drop_path_rate", "attn_drop_rate"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        self.stage_windows()  # raises for windows the modules cannot run

    @classmethod
    def normalize(cls, name: str, args: dict[str, Any]) -> dict[str, Any]:
        args["img_size"] = pair(args.get("img_size", 224), "img_size")
        args["depths"] = tuple(int(depth) for depth in args.get("depths", cls.depths))
        args["num_heads"] = tuple(int(heads) for heads in args.get("num_heads", cls.num_heads))
        args["window_size"] = _stage_windows(args.get("window_size", 7), len(args["depths"]))
        if isinstance(args.get("patch_size"), (list, tuple)):
            height, width = pair(args["patch_size"], "patch_size")
            if height != width:
                raise ValueError(f"{name}: patch_size {args['patch_size']!r}: square patches only")
            args["patch_size"] = height
        return args

    @property
    def stage_names(self) -> list[str]:
        return [f"layers.{i}" for i in range(len(self.depths))]

    @property
    def num_features(self) -> tuple[int, ...]:
        return tuple(int(self.embed_dim * 2**i) for i in range(len(self.depths)))

    @property
    def reductions(self) -> tuple[int, ...]:
        return tuple(self.patch_size * 2**i for i in range(len(self.depths)))

    def stage_windows(self) -> list[tuple[int, int]]:
        """(window, shift of the odd blocks) per stage, as timm's `SwinTransformerBlock._calc_window_shift` fixes
        them from the stage's feature-map size at `img_size`: a map no larger than the window becomes the window and
        is not shifted (unless `always_partition`)."""
        resolution = [size // self.patch_size for size in self.img_size]
        windows = []
        for stage, window in enumerate(self.window_size):
            if stage > 0:
                resolution = [(size + 1) // 2 for size in resolution]
            if self.always_partition:
                windows.append((window, window // 2))
                continue
            sizes = [size if size <= window else window for size in resolution]
            shifts = [0 if size <= window else window // 2 for size in resolution]
            if sizes[0] != sizes[1] or shifts[0] != shifts[1]:
                raise ValueError(
                    f"img_size {self.img_size} gives stage {stage} a {resolution[0]}x{resolution[1]} map, on which "
                    f"timm uses a {sizes[0]}x{sizes[1]} window shifted by {tuple(shifts)}; jaxbackbones supports "
                    "square windows with equal shifts only (use a square img_size or always_partition=True)"
                )
            windows.append((sizes[0], shifts[0]))
        return windows

    def build(self, num_channels: int, *, dtype, param_dtype, rngs: nnx.Rngs) -> dict[str, nnx.Module]:
        options = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        rates = drop_path_rates(self.drop_path_rate, self.depths)
        dims = self.num_features
        return {
            "patch_embed": SwinPatchEmbed(num_channels, self.embed_dim, self.patch_size, eps=1e-5, **options),
            "stages": nnx.List([
                SwinStage(dims[i], self.depths[i], self.num_heads[i], window_size=window, shift_size=shift,
                          drop_path=rates[i], downsample=i < len(dims) - 1,
                          mlp_ratio=self.mlp_ratio, qkv_bias=self.qkv_bias, hidden_act="gelu", layer_norm_eps=1e-5,
                          attention_dropout=self.attn_drop_rate, mlp_drop_path=True, shift_before_pad=True,
                          **options)
                for i, (window, shift) in enumerate(self.stage_windows())
            ]),
        }

    def forward(self, backbone: nnx.Module, x: jax.Array, rngs: nnx.Rngs | None) -> list[jax.Array]:
        x = backbone.patch_embed(x)
        hidden_states = []
        for stage in backbone.stages:
            x, before, _ = stage(x, rngs=rngs)
            hidden_states.append(before)
        return hidden_states

    def stage_paths(self) -> dict[str, list[tuple]]:
        """`layers.0` is the patch embedding and the first blocks, `layers.{k}` its blocks and the patch merging in
        front of them (timm's `layers.{k}.downsample`)."""
        names = self.stage_names
        paths = {names[0]: [("patch_embed",), ("stages", 0, "blocks")]}
        for i, name in enumerate(names[1:], start=1):
            paths[name] = [("stages", i, "blocks"), ("stages", i - 1, "downsample")]
        return paths

    def pretrained_cfg_defaults(self) -> dict[str, Any]:
        return dict(interpolation="bicubic", crop_pct=0.9, first_conv="patch_embed.proj", classifier="head.fc")
