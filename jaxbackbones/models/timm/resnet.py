"""timm's ResNet family (ResNet, the c/d/s/t variants, ResNeXt, wide ResNets) on jaxbackbones' ResNet modules.

timm options: deep 3x3 stem (`stem_type="deep"` / `"deep_tiered"`), average-pool shortcut (`avg_down`), grouped 3x3
(`cardinality`), bottleneck width (`base_width`). Stages are timm's `feature_info` modules: `act1` (the stem before
its max-pool, stride 2), `layer1` ... `layer4` (strides 4 to 32). State paths are `ResNetBackbone`'s (`stem`,
`stages.i.blocks.j`).

Dilation (`output_stride` 16 or 8, as `timm.create_model(name, output_stride=...)`; timm's `make_blocks`): once the
network's stride has reached `output_stride`, a stage keeps stride 1 and multiplies the dilation by the 2 it would
have strided instead (os16: layer4 dilation 2; os8: layer3 2, layer4 4). A stage's first block has the previous
stage's dilation in its first 3x3 (`first_dilation`), every other 3x3 the stage's; the weights do not change.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

import jax
from flax import nnx

from ..resnet import ResNetConfig, ResNetStage, ResNetStem
from .spec import TimmSpec

_C = dict(stem_width=32, stem_type="deep")
_D = dict(stem_width=32, stem_type="deep", avg_down=True)
_S = dict(stem_width=64, stem_type="deep")
_T = dict(stem_width=32, stem_type="deep_tiered", avg_down=True)
_DEPTHS = {18: (2, 2, 2, 2), 26: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3),
           152: (3, 8, 36, 3), 200: (3, 24, 36, 3)}


def _resnet(block: str, layers: tuple[int, ...], **options) -> dict[str, Any]:
    return dict(block=block, layers=layers, **options)


# name -> the keyword arguments timm's entrypoint (timm/models/resnet.py) gives `ResNet`.
ARCHITECTURES: dict[str, dict[str, Any]] = {
    "resnet10t": _resnet("basic", (1, 1, 1, 1), **_T),
    "resnet14t": _resnet("bottleneck", (1, 1, 1, 1), **_T),
    "resnet18": _resnet("basic", _DEPTHS[18]),
    "resnet18d": _resnet("basic", _DEPTHS[18], **_D),
    "resnet26": _resnet("bottleneck", _DEPTHS[26]),
    "resnet26d": _resnet("bottleneck", _DEPTHS[26], **_D),
    "resnet26t": _resnet("bottleneck", _DEPTHS[26], **_T),
    "resnet34": _resnet("basic", _DEPTHS[34]),
    "resnet34d": _resnet("basic", _DEPTHS[34], **_D),
    **{f"resnet{depth}{variant}": _resnet("bottleneck", _DEPTHS[depth], **options)
       for depth in (50, 101, 152) for variant, options in (("", {}), ("c", _C), ("d", _D), ("s", _S))},
    "resnet50t": _resnet("bottleneck", _DEPTHS[50], **_T),
    "resnet200": _resnet("bottleneck", _DEPTHS[200]),
    "resnet200d": _resnet("bottleneck", _DEPTHS[200], **_D),
    "wide_resnet50_2": _resnet("bottleneck", _DEPTHS[50], base_width=128),
    "wide_resnet101_2": _resnet("bottleneck", _DEPTHS[101], base_width=128),
    "resnext50_32x4d": _resnet("bottleneck", _DEPTHS[50], cardinality=32, base_width=4),
    "resnext50d_32x4d": _resnet("bottleneck", _DEPTHS[50], cardinality=32, base_width=4, **_D),
    "resnext101_32x4d": _resnet("bottleneck", _DEPTHS[101], cardinality=32, base_width=4),
    "resnext101_32x8d": _resnet("bottleneck", _DEPTHS[101], cardinality=32, base_width=8),
    "resnext101_32x16d": _resnet("bottleneck", _DEPTHS[101], cardinality=32, base_width=16),
    "resnext101_32x32d": _resnet("bottleneck", _DEPTHS[101], cardinality=32, base_width=32),
    "resnext101_64x4d": _resnet("bottleneck", _DEPTHS[101], cardinality=64, base_width=4),
}


@dataclasses.dataclass(frozen=True)
class ResNetSpec(TimmSpec):
    """A timm ResNet, resolved: `timm.models.resnet.ResNet`'s arguments that shape the backbone."""

    block: str  # "basic" or "bottleneck"
    layers: tuple[int, ...]
    channels: tuple[int, ...] = (64, 128, 256, 512)  # timm's `planes` of every stage
    cardinality: int = 1
    base_width: int = 64
    stem_width: int = 64
    stem_type: str = ""  # "", "deep" or "deep_tiered"
    avg_down: bool = False
    output_stride: int = 32  # 8 or 16: the later stages dilate instead of striding

    family: ClassVar[str] = "resnet"
    ignored_args: ClassVar[frozenset[str]] = frozenset({"zero_init_last"})
    # Training-time options and variants jaxbackbones does not implement: only timm's defaults.
    only_args: ClassVar[dict[str, tuple]] = {
        "drop_path_rate": (0, 0.0), "drop_block_rate": (0, 0.0), "block_reduce_first": (1,),
        "down_kernel_size": (1,), "act_layer": ("relu",), "norm_layer": ("batchnorm", "batchnorm2d"),
        "replace_stem_pool": (False,)}

    def __post_init__(self):
        if self.block not in ("basic", "bottleneck"):
            raise ValueError(f"block must be 'basic' or 'bottleneck', got {self.block!r}")
        if self.stem_type not in ("", "deep", "deep_tiered"):
            raise ValueError(f"stem_type {self.stem_type!r} is not supported; expected '', 'deep' or 'deep_tiered'")
        if len(self.layers) != len(self.channels) or not self.layers or min(self.layers) < 1:
            raise ValueError(f"layers {self.layers} and channels {self.channels} must have one entry per stage, "
                             "each stage at least one block")
        if isinstance(self.output_stride, bool) or self.output_stride not in (8, 16, 32):
            raise ValueError(f"output_stride={self.output_stride!r} is not supported: timm's ResNets take 8, 16 or 32")
        if self.block == "basic" and (self.cardinality != 1 or self.base_width != 64):
            raise ValueError(f"basic blocks support neither cardinality nor base_width, got cardinality="
                             f"{self.cardinality}, base_width={self.base_width}")

    @classmethod
    def normalize(cls, name: str, args: dict[str, Any]) -> dict[str, Any]:
        for arg in ("layers", "channels"):
            if arg in args:
                args[arg] = tuple(int(value) for value in args[arg])
        return args

    @property
    def deep_stem(self) -> bool:
        return "deep" in self.stem_type

    @property
    def deep_widths(self) -> tuple[int, int] | None:
        if not self.deep_stem:
            return None
        return (3 * (self.stem_width // 4), self.stem_width) if "tiered" in self.stem_type else (self.stem_width,) * 2

    @property
    def stem_channels(self) -> int:
        return self.stem_width * 2 if self.deep_stem else 64

    @property
    def out_channels(self) -> tuple[int, ...]:
        expansion = 4 if self.block == "bottleneck" else 1
        return tuple(planes * expansion for planes in self.channels)

    @property
    def mid_channels(self) -> tuple[int | None, ...]:
        """The bottleneck's inner width per stage (timm's `width`)."""
        if self.block == "basic":
            return (None,) * len(self.channels)
        return tuple(int(math.floor(planes * (self.base_width / 64)) * self.cardinality) for planes in self.channels)

    @property
    def stage_names(self) -> list[str]:
        return ["act1"] + [f"layer{i}" for i in range(1, len(self.layers) + 1)]

    @property
    def num_features(self) -> tuple[int, ...]:
        return (self.stem_channels, *self.out_channels)

    @property
    def stage_geometry(self) -> tuple[tuple[int, int, int], ...]:
        """(stride, dilation, first_dilation) of every stage, as timm's `make_blocks` counts them."""
        geometry, net_stride, dilation = [], 4, 1
        for index in range(len(self.layers)):
            stride, previous = (1 if index == 0 else 2), dilation
            if net_stride >= self.output_stride:
                dilation, stride = dilation * stride, 1
            else:
                net_stride *= stride
            geometry.append((stride, dilation, previous))
        return tuple(geometry)

    @property
    def reductions(self) -> tuple[int, ...]:
        reductions, net_stride = [2], 4  # act1, then the max-pool's stride 4 times each stage's stride
        for stride, _, _ in self.stage_geometry:
            net_stride *= stride
            reductions.append(net_stride)
        return tuple(reductions)

    def build(self, num_channels: int, *, dtype, param_dtype, rngs: nnx.Rngs) -> dict[str, nnx.Module]:
        options = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        layers = ResNetConfig(num_channels=num_channels, embedding_size=self.stem_channels,
                              hidden_sizes=list(self.out_channels), depths=list(self.layers), layer_type=self.block)
        in_channels = (self.stem_channels, *self.out_channels[:-1])
        geometry = self.stage_geometry
        return {
            "stem": ResNetStem(layers, deep_widths=self.deep_widths, **options),
            "stages": nnx.List([
                ResNetStage(layers, in_channels[i], self.out_channels[i], self.layers[i], geometry[i][0],
                            dilation=geometry[i][1], first_dilation=geometry[i][2],
                            mid_channels=self.mid_channels[i], groups=self.cardinality, avg_down=self.avg_down,
                            **options)
                for i in range(len(self.layers))
            ]),
        }

    def forward(self, backbone: nnx.Module, x: jax.Array, rngs: nnx.Rngs | None) -> list[jax.Array]:
        x = backbone.stem.embed(x)
        hidden_states = [x]
        x = backbone.stem.pool(x)
        for stage in backbone.stages:
            x = stage(x)
            hidden_states.append(x)
        return hidden_states

    def stage_paths(self) -> dict[str, list[tuple]]:
        """`act1` is the stem, `layer{k}` stage k's blocks."""
        names = self.stage_names
        return {names[0]: [("stem",)], **{name: [("stages", i)] for i, name in enumerate(names[1:])}}

    def pretrained_cfg_defaults(self) -> dict[str, Any]:
        return dict(interpolation="bilinear", crop_pct=0.875, first_conv="conv1.0" if self.deep_stem else "conv1",
                    classifier="fc")
