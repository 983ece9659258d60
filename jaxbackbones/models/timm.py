"""timm architectures on jaxbackbones' own modules: `TimmBackboneConfig` and `TimmBackbone`, as transformers has them.

A timm checkpoint on the hub is a `config.json` with `architecture` (the timm model name), `model_args` (the
`timm.create_model` keyword arguments that differ from the architecture's defaults) and `pretrained_cfg`
(preprocessing), next to `model.safetensors` or `pytorch_model.bin` holding the full timm state dict.

`TIMM_ARCHITECTURES` lists the supported names with the keyword arguments timm's entrypoint functions pass to
their model class (copied from `timm/models/resnet.py` and `swin_transformer.py`; tests/test_timm.py checks every
entry against `timm.create_model(name)`). Those, overridden by the checkpoint's `model_args`, resolve to a
`ResNetSpec` or `SwinSpec`, from which `TimmBackbone` builds the same ResNet and Swin modules that serve the
transformers layout, with timm's options:

- ResNet family (ResNet, the c/d/s/t variants, ResNeXt, wide ResNets): deep 3x3 stem (`stem_type="deep"` /
  `"deep_tiered"`), average-pool shortcut (`avg_down`), grouped 3x3 (`cardinality`), bottleneck width
  (`base_width`). Stages are timm's `feature_info` modules: `act1` (the stem before its max-pool, stride 2),
  `layer1` ... `layer4` (strides 4 to 32).
- Swin v1: stages `layers.0` ... `layers.3` (strides 4 to 32), each stage's raw output (timm has no per-stage
  norms; its final `norm` and the head are not part of the backbone). As in timm, a stage whose feature map (at the
  configured `img_size`) fits in one window uses that size as its window and is not shifted (unless
  `always_partition`); windows are shifted before padding; stochastic depth acts on both residual branches. The
  window and shift of every stage are fixed from `img_size`, as timm fixes them when it builds the model, so any
  other input size gives what timm gives with `dynamic_img_size=True`.

Feature maps come out NHWC by default (`data_format="channels_first"`: NCHW), for both families: timm itself
returns NCHW maps for ResNet and NHWC maps for Swin (its Swin runs NHWC throughout).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ..backbone import BackboneConfigMixin, BackboneModuleMixin, BackboneOutput
from ..configuration import TRAINING_DEFAULTS, PretrainedConfig, verify_training_fields
from ..layers import DropPath
from ..training import configure as configure_training
from .common import from_channels_first, to_channels_first, validate_data_format, validate_pixel_values
from .resnet import ResNetConfig, ResNetStage, ResNetStem
from .swin import SwinPatchEmbed, SwinStage

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# ---------------------------------------------------------------------------------------------------------------
# The architectures: timm's entrypoint arguments.

_C = dict(stem_width=32, stem_type="deep")
_D = dict(stem_width=32, stem_type="deep", avg_down=True)
_S = dict(stem_width=64, stem_type="deep")
_T = dict(stem_width=32, stem_type="deep_tiered", avg_down=True)
_DEPTHS = {18: (2, 2, 2, 2), 26: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3),
           152: (3, 8, 36, 3), 200: (3, 24, 36, 3)}


def _resnet(block: str, layers: tuple[int, ...], **options) -> tuple[str, dict]:
    return "resnet", dict(block=block, layers=layers, **options)


def _swin(embed_dim: int, depths: tuple[int, ...], num_heads: tuple[int, ...], window_size, **options):
    return "swin", dict(patch_size=4, window_size=window_size, embed_dim=embed_dim, depths=depths,
                        num_heads=num_heads, **options)


_SWIN_T = dict(embed_dim=96, num_heads=(3, 6, 12, 24))  # tiny and small
_SWIN_B, _SWIN_L = dict(embed_dim=128, num_heads=(4, 8, 16, 32)), dict(embed_dim=192, num_heads=(6, 12, 24, 48))

# name -> (family, the keyword arguments timm's entrypoint gives the model class). Image sizes other than 224 come
# from the architecture's default pretrained_cfg `input_size`, as timm's builder sets `img_size` from it.
TIMM_ARCHITECTURES: dict[str, tuple[str, dict[str, Any]]] = {
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

# model_args every family accepts: the input channels, and the classifier's settings (not part of a backbone).
_HEAD_ARGS = {"in_chans", "num_classes", "global_pool", "drop_rate"}
# model_args that only affect weight initialisation or the input-size check (TimmBackbone takes any size).
_IGNORED_ARGS = {"resnet": {"zero_init_last"},
                 "swin": {"strict_img_size", "dynamic_img_size", "weight_init"}}
# Values only some arguments may take: timm's defaults (training-time options jaxbackbones does not implement).
_ONLY = {"resnet": {"output_stride": (32,), "drop_path_rate": (0, 0.0), "drop_block_rate": (0, 0.0),
                    "block_reduce_first": (1,), "down_kernel_size": (1,), "act_layer": ("relu",),
                    "norm_layer": ("batchnorm", "batchnorm2d"), "replace_stem_pool": (False,)},
         "swin": {"proj_drop_rate": (0, 0.0), "head_dim": (None,), "norm_layer": ("layernorm",)}}


@dataclasses.dataclass(frozen=True)
class ResNetSpec:
    """A timm ResNet, resolved: `timm.models.resnet.ResNet`'s arguments that shape the backbone."""

    block: str  # "basic" or "bottleneck"
    layers: tuple[int, ...]
    channels: tuple[int, ...] = (64, 128, 256, 512)  # timm's `planes` of every stage
    cardinality: int = 1
    base_width: int = 64
    stem_width: int = 64
    stem_type: str = ""  # "", "deep" or "deep_tiered"
    avg_down: bool = False

    family: ClassVar[str] = "resnet"

    def __post_init__(self):
        if self.block not in ("basic", "bottleneck"):
            raise ValueError(f"block must be 'basic' or 'bottleneck', got {self.block!r}")
        if self.stem_type not in ("", "deep", "deep_tiered"):
            raise ValueError(f"stem_type {self.stem_type!r} is not supported; expected '', 'deep' or 'deep_tiered'")
        if len(self.layers) != len(self.channels) or not self.layers or min(self.layers) < 1:
            raise ValueError(f"layers {self.layers} and channels {self.channels} must have one entry per stage, "
                             "each stage at least one block")
        if self.block == "basic" and (self.cardinality != 1 or self.base_width != 64):
            raise ValueError(f"basic blocks support neither cardinality nor base_width, got cardinality="
                             f"{self.cardinality}, base_width={self.base_width}")

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
    def reductions(self) -> tuple[int, ...]:
        return (2, *(4 * 2**i for i in range(len(self.layers))))


@dataclasses.dataclass(frozen=True)
class SwinSpec:
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


def _pair(value, name: str) -> tuple[int, int]:
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
        height, width = _pair(window, "window_size")
        if height != width:
            raise ValueError(f"window_size {value!r}: jaxbackbones supports square windows only")
        windows.append(height)
    return tuple(windows)


def supported_architectures() -> list[str]:
    return sorted(TIMM_ARCHITECTURES)


def resolve_architecture(backbone: str | None, model_args: dict[str, Any]) -> ResNetSpec | SwinSpec:
    """The spec of timm architecture `backbone` with `model_args` (a checkpoint's or the caller's) applied.

    `backbone` may carry a pretrained tag, as timm names accept one (`resnet50.a1_in1k`). Raises `ValueError`
    naming an unsupported architecture (listing the supported ones) or argument.
    """
    architecture = backbone.split(".")[0] if isinstance(backbone, str) else backbone
    if architecture not in TIMM_ARCHITECTURES:
        given = "no backbone is set" if backbone is None else f"timm architecture {backbone!r} is not supported"
        supported = ", ".join(supported_architectures())
        raise ValueError(f"{given}; jaxbackbones builds these timm architectures: {supported}")
    family, defaults = TIMM_ARCHITECTURES[architecture]
    args = {**defaults, **model_args}
    for name, allowed in _ONLY[family].items():
        value = args.pop(name, allowed[0])
        if isinstance(value, str):
            value = value.lower()
        if value not in allowed:
            raise ValueError(f"{backbone}: model_args {name}={value!r} is not supported (only {allowed[0]!r})")
    for name in _HEAD_ARGS | _IGNORED_ARGS[family]:
        args.pop(name, None)
    spec_class = ResNetSpec if family == "resnet" else SwinSpec
    known = {field.name for field in dataclasses.fields(spec_class)}
    unknown = sorted(set(args) - known)
    if unknown:
        raise ValueError(
            f"{backbone}: model_args {unknown} are not supported; jaxbackbones understands "
            f"{sorted(known | _HEAD_ARGS | _IGNORED_ARGS[family] | set(_ONLY[family]))}"
        )
    if family == "resnet":
        for name in ("layers", "channels"):
            if name in args:
                args[name] = tuple(int(value) for value in args[name])
        return ResNetSpec(**args)
    args["img_size"] = _pair(args.get("img_size", 224), "img_size")
    args["depths"] = tuple(int(depth) for depth in args.get("depths", SwinSpec.depths))
    args["num_heads"] = tuple(int(heads) for heads in args.get("num_heads", SwinSpec.num_heads))
    args["window_size"] = _stage_windows(args.get("window_size", 7), len(args["depths"]))
    if isinstance(args.get("patch_size"), (list, tuple)):
        height, width = _pair(args["patch_size"], "patch_size")
        if height != width:
            raise ValueError(f"{backbone}: patch_size {args['patch_size']!r}: square patches only")
        args["patch_size"] = height
    return SwinSpec(**args)


# ---------------------------------------------------------------------------------------------------------------
# Config


class TimmBackboneConfig(BackboneConfigMixin, PretrainedConfig):
    """transformers' TimmBackboneConfig (`model_type` "timm_backbone"): same fields and stage semantics.

    `backbone` names the timm architecture (`TIMM_ARCHITECTURES`); `model_args` holds `timm.create_model` keyword
    arguments that change it (as a timm hub `config.json` records them, e.g. `{"depths": [2, 2, 18, 2]}`;
    `in_chans` there becomes `num_channels`). Stages are timm's `feature_info` module names (`act1`, `layer1`... or
    `layers.0`...); without a selection, `out_indices` is `[-1]`, as in transformers. `freeze_batch_norm_2d` makes
    every BatchNorm use its running statistics and never update them (see `jaxbackbones.training`).
    `use_pretrained_backbone` is kept for transformers 4 configs: weights come from `AutoBackbone.from_pretrained`,
    `from_config` builds random ones. `features_only` must be True and `output_stride` None or 32 (dilated ResNets
    are not implemented).

    A timm `config.json` (with `architecture`, no `model_type`) reads into this class too: `architecture` is the
    `backbone`, its other keys (`pretrained_cfg`, `num_classes`, ...) are kept, and `to_timm_dict` writes a timm
    `config.json` back.
    """

    model_type = "timm_backbone"
    defaults: ClassVar[dict] = {
        "backbone": None,
        "num_channels": 3,
        "features_only": True,
        "use_pretrained_backbone": True,
        "freeze_batch_norm_2d": False,
        "output_stride": None,
        "model_args": {},
    }
    training_defaults: ClassVar[dict] = dict(TRAINING_DEFAULTS)
    derived_keys = ("model_type", "stage_names", "architecture")

    def __init__(self, backbone: str | None = None, out_features: list[str] | None = None,
                 out_indices: list[int] | None = None, **kwargs):
        architecture = kwargs.pop("architecture", None)  # what a timm config.json calls the backbone
        if backbone is not None and architecture is not None and backbone != architecture:
            raise ValueError(f"backbone {backbone!r} and architecture {architecture!r} name different models")
        model_args = dict(kwargs.pop("model_args", None) or {})
        if "in_chans" in model_args:
            in_chans = model_args.pop("in_chans")
            if kwargs.get("num_channels", in_chans) != in_chans:
                raise ValueError(f"num_channels={kwargs['num_channels']} contradicts model_args in_chans={in_chans}")
            kwargs["num_channels"] = in_chans
        super().__init__(backbone=backbone or architecture, model_args=model_args, **kwargs)
        if self.features_only is not True:
            raise ValueError("features_only must be True: TimmBackbone returns the feature maps of timm's "
                             f"features_only model, got features_only={self.features_only!r}")
        if self.output_stride not in (None, 32):
            raise ValueError(f"output_stride={self.output_stride!r} is not supported: jaxbackbones has no dilated "
                             "timm backbones yet; use None (or 32)")
        self.timm_spec = resolve_architecture(self.backbone, self.model_args)
        self.stage_names = self.timm_spec.stage_names
        if out_features is None and out_indices is None:
            out_indices = [-1]  # transformers' TimmBackboneConfig default
        self.set_output_features_output_indices(out_features=out_features, out_indices=out_indices)
        verify_training_fields(self)

    @property
    def num_classes(self) -> int:
        """The classifier size of the timm checkpoint (not part of the backbone; `export` writes its placeholder)."""
        pretrained_cfg = self.extra.get("pretrained_cfg") or {}
        for source in (self.model_args, self.extra, pretrained_cfg):
            if source.get("num_classes") is not None:
                return int(source["num_classes"])
        return 1000

    @property
    def input_size(self) -> tuple[int, int]:
        """The (height, width) the architecture is trained at: Swin's `img_size`, else the pretrained config's."""
        if isinstance(self.timm_spec, SwinSpec):
            return self.timm_spec.img_size
        size = (self.extra.get("pretrained_cfg") or self.extra).get("input_size") or (3, 224, 224)
        return int(size[-2]), int(size[-1])

    def to_dict(self) -> dict:
        output = super().to_dict()
        output.update(architecture=self.backbone)
        return output

    def to_timm_dict(self) -> dict:
        """A timm hub `config.json`: `architecture`, `num_classes`, `num_features`, `global_pool`, `model_args`
        and `pretrained_cfg` (the checkpoint's, or timm's defaults for the family when it came without one)."""
        spec = self.timm_spec
        extra = copy.deepcopy(self.extra)
        pretrained_cfg = extra.get("pretrained_cfg")
        if pretrained_cfg is None:  # a config built in jaxbackbones, or a legacy single-dict timm config
            pretrained_cfg = {key: extra[key] for key in ("input_size", "interpolation", "crop_pct", "crop_mode",
                                                          "mean", "std") if key in extra}
        swin = isinstance(spec, SwinSpec)
        first_conv = "patch_embed.proj" if swin else ("conv1.0" if spec.deep_stem else "conv1")
        height, width = self.input_size
        for key, value in (("input_size", [self.num_channels, height, width]),
                           ("interpolation", "bicubic" if swin else "bilinear"), ("crop_pct", 0.9 if swin else 0.875),
                           ("crop_mode", "center"), ("mean", list(IMAGENET_MEAN)), ("std", list(IMAGENET_STD)),
                           ("first_conv", first_conv), ("classifier", "head.fc" if swin else "fc")):
            pretrained_cfg.setdefault(key, value)
        pretrained_cfg["num_classes"] = self.num_classes
        global_pool = self.model_args.get("global_pool", extra.get("global_pool", "avg"))
        output = {"architecture": self.backbone, "num_classes": self.num_classes,
                  "num_features": spec.num_features[-1], "global_pool": global_pool}
        for key in ("label_names", "label_descriptions"):
            if key in extra:
                output[key] = extra[key]
        output["model_args"] = {**self.model_args, "in_chans": self.num_channels, "num_classes": self.num_classes}
        output["pretrained_cfg"] = pretrained_cfg
        return output


# ---------------------------------------------------------------------------------------------------------------
# Module


class TimmBackbone(BackboneModuleMixin, nnx.Module):
    """A timm ResNet or Swin as a feature extractor, in Flax NNX: feature map for feature map equal to
    `timm.create_model(backbone, features_only=True, out_indices=...)`, with transformers' TimmBackbone semantics.

    Args:
        config: the architecture (`backbone`, `model_args`) and the selected stages.
        rngs: initialises the weights (random until loaded).
        dtype: compute dtype; BatchNorm statistics, LayerNorm statistics and attention softmax are float32.
        param_dtype: dtype of the parameters.
        data_format: "channels_last" (default) takes and returns NHWC; "channels_first" NCHW.

    `model(pixel_values)` returns a `BackboneOutput` with the selected stages' maps (`output_hidden_states=True`
    adds every stage's). ResNet state paths are those of `ResNetBackbone` (`stem`, `stages.i.blocks.j`), Swin's those
    of `SwinBackbone` (`patch_embed`, `stages.i`; timm's `layers.{i+1}.downsample` is `stages.i.downsample`, run at the
    end of stage i), so the two layouts share modules. Swin's stochastic depth acts in train mode only, with keys
    from the call's `rngs`.
    """

    def __init__(self, config: TimmBackboneConfig, *, rngs: nnx.Rngs, dtype=jnp.float32, param_dtype=jnp.float32,
                 data_format: str = "channels_last"):
        self.config = config
        self.data_format = validate_data_format(data_format)
        self.dtype = dtype
        spec = config.timm_spec
        self.family = spec.family
        self.num_features = tuple(spec.num_features)
        self.reductions = tuple(spec.reductions)
        options = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        if isinstance(spec, ResNetSpec):
            layers = ResNetConfig(num_channels=config.num_channels, embedding_size=spec.stem_channels,
                                  hidden_sizes=list(spec.out_channels), depths=list(spec.layers),
                                  layer_type=spec.block)
            self.stem = ResNetStem(layers, deep_widths=spec.deep_widths, **options)
            in_channels = (spec.stem_channels, *spec.out_channels[:-1])
            self.stages = nnx.List([
                ResNetStage(layers, in_channels[i], spec.out_channels[i], spec.layers[i], 1 if i == 0 else 2,
                            mid_channels=spec.mid_channels[i], groups=spec.cardinality, avg_down=spec.avg_down,
                            **options)
                for i in range(len(spec.layers))
            ])
        else:
            self.patch_embed = SwinPatchEmbed(config.num_channels, spec.embed_dim, spec.patch_size, eps=1e-5,
                                              **options)
            total = sum(spec.depths)
            rates = [spec.drop_path_rate * i / max(total - 1, 1) for i in range(total)]
            starts = np.cumsum([0, *spec.depths])
            dims = spec.num_features
            self.stages = nnx.List([
                SwinStage(dims[i], spec.depths[i], spec.num_heads[i], window_size=window, shift_size=shift,
                          drop_path=rates[starts[i]:starts[i + 1]], downsample=i < len(dims) - 1,
                          mlp_ratio=spec.mlp_ratio, qkv_bias=spec.qkv_bias, hidden_act="gelu", layer_norm_eps=1e-5,
                          attention_dropout=spec.attn_drop_rate, mlp_drop_path=True, shift_before_pad=True,
                          **options)
                for i, (window, shift) in enumerate(spec.stage_windows())
            ])
        configure_training(self)

    def stage_paths(self) -> dict[str, list[tuple]]:
        """State-path prefixes of what each stage owns (what `freeze_stages` freezes). ResNet: `act1` is the stem,
        `layer{k}` stage k's blocks. Swin: `layers.0` is the patch embedding and the first blocks, `layers.{k}` its
        blocks and the patch merging in front of them (timm's `layers.{k}.downsample`)."""
        names = self.stage_names
        if self.family == "resnet":
            return {names[0]: [("stem",)], **{name: [("stages", i)] for i, name in enumerate(names[1:])}}
        paths = {names[0]: [("patch_embed",), ("stages", 0, "blocks")]}
        for i, name in enumerate(names[1:], start=1):
            paths[name] = [("stages", i, "blocks"), ("stages", i - 1, "downsample")]
        return paths

    def freeze_batch_norm_2d(self):
        """transformers' method: from now on every BatchNorm uses its running statistics and never updates them."""
        self.config.freeze_batch_norm_2d = True
        configure_training(self)

    def unfreeze_batch_norm_2d(self):
        self.config.freeze_batch_norm_2d = False
        configure_training(self)

    def _stochastic(self) -> bool:
        return any(
            isinstance(node, (nnx.Dropout, DropPath)) and node.rate > 0 and not node.deterministic
            for _, node in nnx.iter_graph(self)
        )

    def __call__(self, pixel_values: jax.Array, output_hidden_states: bool = False, output_attentions: bool = False,
                 *, rngs: nnx.Rngs | None = None) -> BackboneOutput:
        if output_attentions:
            raise ValueError("Cannot output attentions for timm backbones at the moment")  # as transformers says
        pixel_values = validate_pixel_values(pixel_values, self.config.num_channels, self.data_format)
        x = from_channels_first(pixel_values, self.data_format).astype(self.dtype)
        if self.family == "resnet":
            x = self.stem.embed(x)
            hidden_states = [x]
            x = self.stem.pool(x)
            for stage in self.stages:
                x = stage(x)
                hidden_states.append(x)
        else:
            if rngs is None and self._stochastic():
                raise ValueError(
                    f"TimmBackbone ({self.config.backbone}) is in train mode with active stochastic depth "
                    f"(drop_path_rate={self.config.timm_spec.drop_path_rate}) but no rngs were given; pass "
                    "rngs=nnx.Rngs(dropout=seed), or call .eval() for deterministic inference"
                )
            x = self.patch_embed(x)
            hidden_states = []
            for stage in self.stages:
                x, before, _ = stage(x, rngs=rngs)
                hidden_states.append(before)
        hidden_states = tuple(to_channels_first(h, self.data_format) for h in hidden_states)
        feature_maps = tuple(hidden_states[self.stage_names.index(name)] for name in self.out_features)
        return BackboneOutput(feature_maps=feature_maps, hidden_states=hidden_states if output_hidden_states else None)
