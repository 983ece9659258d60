"""timm's ConvNeXt and ConvNeXt V2 (`timm/models/convnext.py`) on jaxbackbones' ConvNeXt modules.

Stages are timm's `feature_info` modules `stages.0` ... `stages.3`, each stage's raw output (timm's final norm,
`head.norm` or, with `head_norm_first`, `norm_pre`, feeds the classifier only). timm options: `ls_init_value` (layer
scale; None: none), `use_grn` (V2), `conv_mlp` (1x1 convolutions and channels-first norms in the blocks: the same
computation, other tensor shapes), `conv_bias`, `kernel_sizes` (per stage), `stem_type` (`patch`, or the overlapping
3x3 stems of the `_ols` variants), `patch_size`, `norm_eps`, `act_layer` (`gelu`, `gelu_tanh`), `drop_path_rate`.
The head options (`head_norm_first` of the `_hnf` variants, `head_hidden_size`) only shape what export writes back.
Only LayerNorm models are built (`convnext_*_rms` and `convnext_zepto_*`, with RMS or "simple" norms, are not); no
dilation (`output_stride` 32).

State paths are `ConvNextBackbone`'s (`stem`, `stages.i.downsample`, `stages.i.blocks.j`); timm's stage `stages.0`
owns the stem.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax
from flax import nnx

from ...layers import drop_path_rates
from ..convnext import STEM_TYPES, ConvNeXtStage, ConvNeXtStem
from .spec import TimmSpec


def _convnext(depths: tuple[int, ...], dims: tuple[int, ...], **options) -> dict[str, Any]:
    return dict(depths=depths, dims=dims, **options)


_SMALL = dict(conv_mlp=True)  # timm's own small variants: 1x1-conv MLPs
_OLS = dict(conv_mlp=True, stem_type="overlap_tiered")
_V2 = dict(use_grn=True, ls_init_value=None)
_ATTO, _FEMTO, _PICO = ((2, 2, 6, 2), (40, 80, 160, 320)), ((2, 2, 6, 2), (48, 96, 192, 384)), \
    ((2, 2, 6, 2), (64, 128, 256, 512))
_NANO, _TINY = ((2, 2, 8, 2), (80, 160, 320, 640)), ((3, 3, 9, 3), (96, 192, 384, 768))
_S27 = (3, 3, 27, 3)

# name -> the keyword arguments timm's entrypoint (timm/models/convnext.py) gives `ConvNeXt`.
ARCHITECTURES: dict[str, dict[str, Any]] = {
    "convnext_atto": _convnext(*_ATTO, **_SMALL),
    "convnext_atto_ols": _convnext(*_ATTO, **_OLS),
    "convnext_femto": _convnext(*_FEMTO, **_SMALL),
    "convnext_femto_ols": _convnext(*_FEMTO, **_OLS),
    "convnext_pico": _convnext(*_PICO, **_SMALL),
    "convnext_pico_ols": _convnext(*_PICO, **_OLS),
    "convnext_nano": _convnext(*_NANO, **_SMALL),
    "convnext_nano_ols": _convnext(*_NANO, conv_mlp=True, stem_type="overlap"),
    "convnext_tiny_hnf": _convnext(*_TINY, head_norm_first=True, conv_mlp=True),
    "convnext_tiny": _convnext(*_TINY),
    "convnext_small": _convnext(_S27, (96, 192, 384, 768)),
    "convnext_base": _convnext(_S27, (128, 256, 512, 1024)),
    "convnext_large": _convnext(_S27, (192, 384, 768, 1536)),
    "convnext_large_mlp": _convnext(_S27, (192, 384, 768, 1536), head_hidden_size=1536),
    "convnext_xlarge": _convnext(_S27, (256, 512, 1024, 2048)),
    "convnext_xxlarge": _convnext((3, 4, 30, 3), (384, 768, 1536, 3072), norm_eps=1e-5),
    "convnextv2_atto": _convnext(*_ATTO, **_V2, **_SMALL),
    "convnextv2_femto": _convnext(*_FEMTO, **_V2, **_SMALL),
    "convnextv2_pico": _convnext(*_PICO, **_V2, **_SMALL),
    "convnextv2_nano": _convnext(*_NANO, **_V2, **_SMALL),
    "convnextv2_tiny": _convnext(*_TINY, **_V2),
    "convnextv2_small": _convnext(_S27, (96, 192, 384, 768), **_V2),
    "convnextv2_base": _convnext(_S27, (128, 256, 512, 1024), **_V2),
    "convnextv2_large": _convnext(_S27, (192, 384, 768, 1536), **_V2),
    "convnextv2_huge": _convnext(_S27, (352, 704, 1408, 2816), **_V2),
}

# timm's act_layer names -> jaxbackbones' (transformers') activation names.
ACTIVATIONS = {"gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh"}


@dataclasses.dataclass(frozen=True)
class ConvNeXtSpec(TimmSpec):
    """A timm ConvNeXt, resolved: `timm.models.convnext.ConvNeXt`'s arguments that shape the backbone (and its
    head, for export)."""

    depths: tuple[int, ...] = (3, 3, 9, 3)
    dims: tuple[int, ...] = (96, 192, 384, 768)
    kernel_sizes: tuple[int, ...] = (7, 7, 7, 7)  # per stage
    ls_init_value: float | None = 1e-6
    stem_type: str = "patch"
    patch_size: int = 4
    conv_mlp: bool = False
    conv_bias: bool = True
    use_grn: bool = False
    act_layer: str = "gelu"
    norm_eps: float | None = None
    drop_path_rate: float = 0.0
    head_norm_first: bool = False
    head_hidden_size: int | None = None

    family: ClassVar[str] = "convnext"
    ignored_args: ClassVar[frozenset[str]] = frozenset({"head_init_scale"})
    only_args: ClassVar[dict[str, tuple]] = {"output_stride": (32,),
                                             "norm_layer": (None, "layernorm", "layernorm2d")}

    def __post_init__(self):
        if len(self.depths) != 4 or len(self.dims) != 4 or min(self.depths) < 0:
            raise ValueError(f"timm's ConvNeXt has 4 stages: depths {self.depths} and dims {self.dims} need 4 entries "
                             "each (depths >= 0)")
        if len(self.kernel_sizes) != 4 or any(size < 1 or size % 2 == 0 for size in self.kernel_sizes):
            raise ValueError(f"kernel_sizes {self.kernel_sizes}: one odd size per stage")
        if self.stem_type not in STEM_TYPES:
            raise ValueError(f"stem_type {self.stem_type!r} is not one of {STEM_TYPES}")
        if self.act_layer not in ACTIVATIONS:
            raise ValueError(f"act_layer {self.act_layer!r} is not supported; expected one of {sorted(ACTIVATIONS)}")
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {self.drop_path_rate}")

    @classmethod
    def normalize(cls, name: str, args: dict[str, Any]) -> dict[str, Any]:
        for arg in ("depths", "dims"):
            if arg in args:
                args[arg] = tuple(int(value) for value in args[arg])
        sizes = args.get("kernel_sizes", 7)
        args["kernel_sizes"] = tuple(int(size) for size in sizes) if isinstance(sizes, (list, tuple)) else \
            (int(sizes),) * 4
        if isinstance(args.get("act_layer"), str):
            args["act_layer"] = args["act_layer"].lower()
        return args

    @property
    def stage_strides(self) -> tuple[int, ...]:
        """Each stage's stride, as timm's ConvNeXt computes them: stage 0 downsamples only after a stride-2 stem."""
        current = self.patch_size if self.stem_type == "patch" else 4
        strides = []
        for i in range(4):
            strides.append(2 if current == 2 or i > 0 else 1)
            current *= strides[-1]
        return tuple(strides)

    @property
    def stage_names(self) -> list[str]:
        return [f"stages.{i}" for i in range(4)]

    @property
    def num_features(self) -> tuple[int, ...]:
        return tuple(self.dims)

    @property
    def reductions(self) -> tuple[int, ...]:
        current, reductions = self.patch_size if self.stem_type == "patch" else 4, []
        for stride in self.stage_strides:
            current *= stride
            reductions.append(current)
        return tuple(reductions)

    def build(self, num_channels: int, *, dtype, param_dtype, rngs: nnx.Rngs) -> dict[str, nnx.Module]:
        options = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        eps = 1e-6 if self.norm_eps is None else self.norm_eps
        activation = ACTIVATIONS[self.act_layer]
        rates = drop_path_rates(self.drop_path_rate, self.depths)
        in_channels = (self.dims[0], *self.dims[:-1])
        return {
            "stem": ConvNeXtStem(num_channels, self.dims[0], stem_type=self.stem_type, patch_size=self.patch_size,
                                 eps=eps, use_bias=self.conv_bias, activation=activation, **options),
            "stages": nnx.List([
                ConvNeXtStage(in_channels[i], self.dims[i], self.depths[i], downsample=stride > 1,
                              drop_path=rates[i], eps=eps, conv_bias=self.conv_bias,
                              kernel_size=self.kernel_sizes[i], activation=activation, use_grn=self.use_grn,
                              layer_scale=self.ls_init_value, **options)
                for i, stride in enumerate(self.stage_strides)
            ]),
        }

    def forward(self, backbone: nnx.Module, x: jax.Array, rngs: nnx.Rngs | None) -> list[jax.Array]:
        x = backbone.stem(x)
        hidden_states = []
        for stage in backbone.stages:
            x = stage(x, rngs=rngs)
            hidden_states.append(x)
        return hidden_states

    def stage_paths(self) -> dict[str, list[tuple]]:
        """`stages.0` is the stem and the first blocks, `stages.{k}` its downsampling and blocks."""
        paths = {name: [("stages", i)] for i, name in enumerate(self.stage_names)}
        paths["stages.0"].append(("stem",))
        return paths

    def pretrained_cfg_defaults(self) -> dict[str, Any]:
        return dict(interpolation="bicubic", crop_pct=0.875, first_conv="stem.0", classifier="head.fc")
