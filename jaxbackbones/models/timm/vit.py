"""timm's Vision Transformers on jaxbackbones' ViT modules: `VisionTransformer` (plain ViTs, DINOv2, DINOv2 with
registers) and `Eva` (DINOv3).

Stages are timm's `feature_info`: `blocks.0` ... `blocks.{depth-1}`, every one `embed_dim` channels at stride
`patch_size`. A stage's map is what `timm.create_model(name, features_only=True)` returns: the block's raw output
(timm's final `norm` is not applied: `FeatureGetterNet` calls `forward_intermediates(norm=False)`), class and
register tokens dropped, the patch tokens as a (B, H / patch, W / patch, C) map (timm returns NCHW).

Input sizes: TimmBackbone is `dynamic_img_size=True` whatever the checkpoint says. The learned position embedding
is resampled to the input's patch grid as timm's `resample_abs_pos_embed` does (bicubic, `antialias=True`, in
float32; not at all at the `img_size` grid); DINOv3's rotary positions are computed for the grid. timm refuses an
input that is not a multiple of the patch unless `dynamic_img_pad=True`, which pads it right and bottom with zeros;
so do we.

Quirks: timm's DINOv2-with-registers (`*_reg4_dinov2`, `no_embed_class=True`) has no position embedding for the
class token (timm folds it into `cls_token` when it converts Meta's weights); plain ViTs embed the class token.
timm's DINOv3 has no key bias (`k_bias` is a zero buffer) and does not augment the rotary coordinates in train mode
unless `rope_shift_coords` / `rope_jitter_coords` / `rope_rescale_coords` are given. Stochastic depth rates grow
linearly over the blocks, as timm's `calculate_drop_path_rates`.

State paths are the ViT backbones' (`patch_embed`, `cls_token`, `reg_token`, `pos_embed`, `blocks.i`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax
from flax import nnx

from ...layers import drop_path_rates
from ..common import pair
from ..vit import ViTLayout, VisionTransformer, encode, tokens_to_map
from .spec import TimmSpec

# timm's activation names (`get_act_layer`) -> ours (transformers' spelling).
_ACTIVATIONS = {None: "gelu", "gelu": "gelu", "silu": "silu", "swish": "silu", "quick_gelu": "quick_gelu",
                "gelu_tanh": "gelu_pytorch_tanh", "relu": "relu"}


def _vit(patch_size: int, embed_dim: int, depth: int, num_heads: int, **options) -> dict[str, Any]:
    return dict(patch_size=patch_size, embed_dim=embed_dim, depth=depth, num_heads=num_heads, **options)


_SIZES = {"tiny": (192, 12, 3), "small": (384, 12, 6), "base": (768, 12, 12), "large": (1024, 24, 16)}
_DINOV2 = dict(img_size=518, init_values=1e-5, num_classes=0)
# timm's giant DINOv2: SwiGLUPacked with `mlp_ratio=2.66667 * 2` packed features (gate and value), SiLU.
_GIANT = dict(mlp_ratio=2.66667 * 2, mlp_layer="swiglupacked", act_layer="silu")

# name -> the keyword arguments timm's entrypoint (timm/models/vision_transformer.py) gives `VisionTransformer`;
# `img_size` other than 224 and `num_classes` other than 1000 come from the default pretrained_cfg (`input_size`,
# `num_classes`), as timm's builder sets them.
VIT_ARCHITECTURES: dict[str, dict[str, Any]] = {
    **{f"vit_{size}_patch{patch}_{image}": _vit(patch, *_SIZES[size], **({"img_size": 384} if image == 384 else {}))
       for size in _SIZES for patch in (16, 32) for image in (224, 384) if (size, patch) != ("tiny", 32)},
    "vit_large_patch32_224": _vit(32, *_SIZES["large"], num_classes=0),  # its default weights are orig_in21k's
    **{f"vit_{size}_patch14_dinov2": _vit(14, *_SIZES[size], **_DINOV2) for size in ("small", "base", "large")},
    "vit_giant_patch14_dinov2": _vit(14, 1536, 40, 24, **_DINOV2, **_GIANT),
    **{f"vit_{size}_patch14_reg4_dinov2": _vit(14, *_SIZES[size], reg_tokens=4, no_embed_class=True, **_DINOV2)
       for size in ("small", "base", "large")},
    "vit_giant_patch14_reg4_dinov2": _vit(14, 1536, 40, 24, reg_tokens=4, no_embed_class=True, **_DINOV2, **_GIANT),
}


def _dinov3(embed_dim: int, depth: int, num_heads: int, qkv_bias: bool, **options) -> dict[str, Any]:
    return dict(img_size=256, num_classes=0, patch_size=16, embed_dim=embed_dim, depth=depth, num_heads=num_heads,
                qkv_bias=qkv_bias, init_values=1e-5, rope_type="dinov3", rope_temperature=100, rope_rotate_half=True,
                use_rot_pos_emb=True, use_abs_pos_emb=False, num_reg_tokens=4, use_fc_norm=False, norm_eps=1e-5,
                **options)


_PLUS = dict(swiglu_mlp=True, swiglu_align_to=8)
_DINOV3_SIZES = {"small": (384, 12, 6, {}), "small_plus": (384, 12, 6, _PLUS), "base": (768, 12, 12, {}),
                 "large": (1024, 24, 16, {}), "huge_plus": (1280, 32, 20, _PLUS)}

# name -> the keyword arguments timm's entrypoint (timm/models/eva.py) gives `Eva`; `norm_eps` stands for the
# entrypoints' `norm_layer=partial(LayerNorm, eps=1e-5)` (a callable has no place in a config.json).
EVA_ARCHITECTURES: dict[str, dict[str, Any]] = {
    **{f"vit_{size}_patch16_dinov3{suffix}": _dinov3(dim, depth, heads, qkv_bias, **options)
       for size, (dim, depth, heads, options) in _DINOV3_SIZES.items()
       for suffix, qkv_bias in (("", False), ("_qkvb", True))},
    "vit_tiny_patch16_dinov3_qkvb": _dinov3(192, 12, 3, True),
    "vit_7b_patch16_dinov3": _dinov3(4096, 40, 32, False, mlp_ratio=2, swiglu_mlp=True, swiglu_align_to=64),
}


@dataclasses.dataclass(frozen=True)
class _TimmViT(TimmSpec):
    """What both of timm's ViT classes share: their common arguments, stages, stage paths, building and running the
    modules."""

    img_size: tuple[int, int] = (224, 224)
    patch_size: int = 16
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    init_values: float | None = None
    class_token: bool = True
    dynamic_img_pad: bool = False
    drop_path_rate: float = 0.0
    attn_drop_rate: float = 0.0
    proj_drop_rate: float = 0.0
    pos_drop_rate: float = 0.0

    @classmethod
    def normalize(cls, name: str, args: dict[str, Any]) -> dict[str, Any]:
        args["img_size"] = pair(args.get("img_size", 224), "img_size")
        height, width = pair(args.get("patch_size", 16), "patch_size")
        if height != width:
            raise ValueError(f"{name}: patch_size {args['patch_size']!r}: square patches only")
        args["patch_size"] = height
        return args

    def __post_init__(self):
        if self.depth < 1 or self.num_heads < 1 or self.embed_dim % self.num_heads:
            raise ValueError(f"depth={self.depth}, embed_dim={self.embed_dim}, num_heads={self.num_heads}: a ViT needs "
                             "at least one block and embed_dim divisible by num_heads")
        for name in ("drop_path_rate", "attn_drop_rate", "proj_drop_rate", "pos_drop_rate"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        self.layout()  # raises for what the modules cannot build

    def layout(self) -> ViTLayout:
        raise NotImplementedError

    @property
    def stage_names(self) -> list[str]:
        return [f"blocks.{i}" for i in range(self.depth)]

    @property
    def num_features(self) -> tuple[int, ...]:
        return (self.embed_dim,) * self.depth

    @property
    def reductions(self) -> tuple[int, ...]:
        return (self.patch_size,) * self.depth

    def drop_path_rates(self) -> tuple[float, ...]:
        """timm's `calculate_drop_path_rates`: linear from 0 to `drop_path_rate` over the blocks."""
        return tuple(drop_path_rates(self.drop_path_rate, [self.depth])[0])

    def build(self, num_channels: int, *, dtype, param_dtype, rngs: nnx.Rngs) -> dict[str, Any]:
        layout = dataclasses.replace(self.layout(), num_channels=num_channels)
        trunk = VisionTransformer(layout, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        return {name: getattr(trunk, name) for name in ("layout", "patch_embed", "cls_token", "reg_token",
                                                         "pos_embed", "rope", "pos_drop", "blocks")}

    def forward(self, backbone: nnx.Module, x: jax.Array, rngs: nnx.Rngs | None) -> list[jax.Array]:
        sequences, _, grid = encode(backbone, x, rngs=rngs)
        prefix = backbone.layout.num_prefix_tokens
        return [tokens_to_map(tokens[:, prefix:], grid) for tokens in sequences[1:]]

    def stage_paths(self) -> dict[str, list[tuple]]:
        """`blocks.0` is the patch embedding, the tokens and the first block; `blocks.{k}` block k."""
        names = self.stage_names
        stem = [("patch_embed",), ("cls_token",), ("reg_token",), ("pos_embed",), ("pos_drop",)]
        return {name: [*(stem if i == 0 else []), ("blocks", i)] for i, name in enumerate(names)}

    def pretrained_cfg_defaults(self) -> dict[str, Any]:
        return dict(interpolation="bicubic", crop_pct=0.9, first_conv="patch_embed.proj", classifier="head")


@dataclasses.dataclass(frozen=True)
class ViTSpec(_TimmViT):
    """A timm `VisionTransformer`, resolved: the arguments that shape the backbone."""

    proj_bias: bool = True
    no_embed_class: bool = False
    reg_tokens: int = 0
    mlp_layer: str = "mlp"  # or "swiglupacked" (timm's SwiGLUPacked: a fused [gate | value] fc1)
    act_layer: str | None = None

    family: ClassVar[str] = "vit"
    # Shape only the head (`fc_norm`, `final_norm`, pooling), the initialisation, or input checks (TimmBackbone
    # takes any size).
    ignored_args: ClassVar[frozenset[str]] = frozenset({"dynamic_img_size", "weight_init", "fix_init", "fc_norm",
                                                         "final_norm", "pool_include_prefix"})
    only_args: ClassVar[dict[str, tuple]] = {
        "qk_norm": (False,), "scale_attn_norm": (False,), "scale_mlp_norm": (False,), "pre_norm": (False,),
        "pos_embed": ("learn",), "patch_drop_rate": (0, 0.0), "embed_norm_layer": (None,),
        "norm_layer": (None, "layernorm")}

    def __post_init__(self):
        if self.mlp_layer not in ("mlp", "swiglupacked"):
            raise ValueError(f"mlp_layer {self.mlp_layer!r} is not supported; expected 'mlp' or 'swiglupacked'")
        if self.act_layer not in _ACTIVATIONS:
            raise ValueError(f"act_layer {self.act_layer!r} is not supported; expected one of "
                             f"{sorted(name for name in _ACTIVATIONS if name)}")
        super().__post_init__()

    @classmethod
    def normalize(cls, name: str, args: dict[str, Any]) -> dict[str, Any]:
        args = super().normalize(name, args)
        if isinstance(args.get("mlp_layer"), str):
            args["mlp_layer"] = args["mlp_layer"].lower()
        return args

    @property
    def img_size_grid(self) -> tuple[int, int]:
        return self.img_size[0] // self.patch_size, self.img_size[1] // self.patch_size

    def layout(self) -> ViTLayout:
        hidden = int(self.embed_dim * self.mlp_ratio)
        gated = self.mlp_layer == "swiglupacked"
        num_prefix = int(self.class_token) + self.reg_tokens
        return ViTLayout(
            embed_dim=self.embed_dim, depth=self.depth, num_heads=self.num_heads,
            patch_size=(self.patch_size, self.patch_size), mlp_hidden=hidden // 2 if gated else hidden,
            mlp_activation=_ACTIVATIONS[self.act_layer], gated_mlp=gated, qkv_bias=(self.qkv_bias,) * 3,
            proj_bias=self.proj_bias, mlp_bias=self.proj_bias, layer_scale=self.init_values or None,
            class_token=self.class_token, register_tokens=self.reg_tokens, position_grid=self.img_size_grid,
            embedded_prefix_tokens=0 if self.no_embed_class else num_prefix, position_antialias=True,
            drop_path=self.drop_path_rates(), token_dropout=self.pos_drop_rate, attention_dropout=self.attn_drop_rate,
            proj_dropout=self.proj_drop_rate, pad_to_patches=self.dynamic_img_pad, require_patch_multiple=True)


@dataclasses.dataclass(frozen=True)
class EvaSpec(_TimmViT):
    """A timm `Eva` with DINOv3's rotary positions, resolved: the arguments that shape the backbone."""

    # (`img_size` shapes nothing here, there are no learned positions: it is the size verify and export use.)
    swiglu_mlp: bool = False
    swiglu_align_to: int = 0
    num_reg_tokens: int = 0
    rope_temperature: float = 10000.0
    rope_shift_coords: float | None = None
    rope_jitter_coords: float | None = None
    rope_rescale_coords: float | None = None
    norm_eps: float = 1e-6

    family: ClassVar[str] = "eva"
    ignored_args: ClassVar[frozenset[str]] = frozenset({"dynamic_img_size", "use_fc_norm",
                                                         "use_post_transformer_norm", "head_init_scale",
                                                         "attn_pool_num_heads", "attn_pool_mlp_ratio",
                                                         "no_embed_class"})
    # The DINOv3 configuration of Eva; EVA / EVA-02's absolute embeddings, other RoPE kinds and options are not
    # implemented.
    only_args: ClassVar[dict[str, tuple]] = {
        "use_abs_pos_emb": (False,), "use_rot_pos_emb": (True,), "rope_type": ("dinov3",),
        "rope_rotate_half": (True,), "rope_grid_offset": (0, 0.0), "rope_grid_indexing": ("ij",),
        "qkv_fused": (True,), "qk_norm": (False,), "scale_mlp": (False,), "scale_attn_inner": (False,),
        "attn_type": ("eva",), "use_post_norm": (False,), "use_pre_transformer_norm": (False,),
        "patch_drop_rate": (0, 0.0), "num_kv_heads": (None,), "attn_only_layer_scale": (False,),
        "ref_feat_shape": (None,), "rope_mrope_section": (None,)}

    def layout(self) -> ViTLayout:
        hidden = int(self.embed_dim * self.mlp_ratio)
        if self.swiglu_mlp and self.swiglu_align_to:
            hidden += -hidden % self.swiglu_align_to
        return ViTLayout(
            embed_dim=self.embed_dim, depth=self.depth, num_heads=self.num_heads,
            patch_size=(self.patch_size, self.patch_size), mlp_hidden=hidden,
            mlp_activation="silu" if self.swiglu_mlp else "gelu", gated_mlp=self.swiglu_mlp,
            qkv_bias=(self.qkv_bias, False, self.qkv_bias), layer_scale=self.init_values,
            class_token=self.class_token, register_tokens=self.num_reg_tokens, embedded_prefix_tokens=0,
            rope_theta=self.rope_temperature, rope_shift=self.rope_shift_coords, rope_jitter=self.rope_jitter_coords,
            rope_rescale=self.rope_rescale_coords, norm_eps=self.norm_eps, drop_path=self.drop_path_rates(),
            token_dropout=self.pos_drop_rate, attention_dropout=self.attn_drop_rate,
            proj_dropout=self.proj_drop_rate, pad_to_patches=self.dynamic_img_pad, require_patch_multiple=True)

    def pretrained_cfg_defaults(self) -> dict[str, Any]:
        return dict(interpolation="bicubic", crop_pct=1.0, first_conv="patch_embed.proj", classifier="head")
