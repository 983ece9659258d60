"""timm architectures on jaxbackbones' own modules: `TimmBackboneConfig` and `TimmBackbone`, as transformers has them.

A timm checkpoint on the hub is a `config.json` with `architecture` (the timm model name), `model_args` (the
`timm.create_model` keyword arguments that differ from the architecture's defaults) and `pretrained_cfg`
(preprocessing), next to `model.safetensors` or `pytorch_model.bin` holding the full timm state dict.

`TIMM_ARCHITECTURES` lists the supported names with the keyword arguments timm's entrypoint functions pass to
their model class, one table per family in this package (`resnet.py`, `swin.py`, `convnext.py`, `vit.py`, as the
families' `registry.TimmLayout`s name them; tests/test_timm.py checks every entry against `timm.create_model(name)`). Those, overridden by the checkpoint's
`model_args`, resolve to the family's `TimmSpec`, which builds the same modules that serve the transformers layout,
with timm's options, and runs them; `TimmBackbone` only dispatches. The family modules' docstrings name each
family's stages and quirks.

Feature maps come out NHWC by default (`data_format="channels_first"`: NCHW), for every family, whatever layout
timm itself returns them in.
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from flax import nnx

from ...backbone import BackboneConfigMixin, BackboneModuleMixin, BackboneOutput
from ...configuration import TRAINING_DEFAULTS, PretrainedConfig, verify_training_fields
from ... import registry
from ...training import configure as configure_training
from ..common import from_channels_first, to_channels_first, validate_data_format, validate_pixel_values
from .spec import TimmSpec

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _specs() -> dict[str, type[TimmSpec]]:
    specs = {name: registry.resolve(layout.spec) for name, layout in registry.timm_layouts().items()}
    for name, spec in specs.items():
        if spec.family != name:
            raise ValueError(f"the registry lists {spec.__name__} as timm family {name!r}, but its family is "
                             f"{spec.family!r}")
    return specs


_SPEC_OF_FAMILY = _specs()
TIMM_SPECS: tuple[type[TimmSpec], ...] = tuple(_SPEC_OF_FAMILY.values())
# timm name -> (family, the keyword arguments timm's entrypoint gives the family's model class).
TIMM_ARCHITECTURES: dict[str, tuple[str, dict[str, Any]]] = {
    name: (family, args) for family, layout in registry.timm_layouts().items()
    for name, args in registry.resolve(layout.architectures).items()}


def supported_architectures() -> list[str]:
    return sorted(TIMM_ARCHITECTURES)


def resolve_architecture(backbone: str | None, model_args: dict[str, Any]) -> TimmSpec:
    """The spec of timm architecture `backbone` with `model_args` (a checkpoint's or the caller's) applied.

    `backbone` may carry a pretrained tag, as timm names accept one (`resnet50.a1_in1k`). Raises `ValueError`
    naming an unsupported architecture (listing the supported ones) or argument.
    """
    architecture = backbone.split(".")[0] if isinstance(backbone, str) else backbone
    if architecture not in TIMM_ARCHITECTURES:
        given = "no backbone is set" if backbone is None else f"timm architecture {backbone!r} is not supported"
        supported = ", ".join(supported_architectures())
        raise ValueError(f"{given}; jaxbackbones builds these timm architectures: {supported}")
    family, _ = TIMM_ARCHITECTURES[architecture]
    return _SPEC_OF_FAMILY[family].from_args(backbone, entrypoint_args(architecture, model_args))


def entrypoint_args(architecture: str, model_args: dict[str, Any]) -> dict[str, Any]:
    """`timm.create_model(architecture, **model_args)`'s arguments to the model class: the entrypoint's, then
    `model_args`; timm drops None-valued keyword arguments, so they leave the entrypoint's value in place."""
    return {**TIMM_ARCHITECTURES[architecture][1],
            **{key: value for key, value in model_args.items() if value is not None}}


# ---------------------------------------------------------------------------------------------------------------
# Config


class TimmBackboneConfig(BackboneConfigMixin, PretrainedConfig):
    """transformers' TimmBackboneConfig (`model_type` "timm_backbone"): same fields and stage semantics.

    `backbone` names the timm architecture (`TIMM_ARCHITECTURES`); `model_args` holds `timm.create_model` keyword
    arguments that change it (as a timm hub `config.json` records them, e.g. `{"depths": [2, 2, 18, 2]}`;
    `in_chans` there becomes `num_channels`). Stages are timm's `feature_info` module names (`act1`, `layer1`...,
    `layers.0`... or `stages.0`...); without a selection, `out_indices` is `[-1]`, as in transformers.
    `freeze_batch_norm_2d` makes every BatchNorm use its running statistics and never update them (see
    `jaxbackbones.training`). `model_args` set to None leave the entrypoint's value, as `timm.create_model` does.
    `use_pretrained_backbone` is kept for transformers 4 configs: weights come from `AutoBackbone.from_pretrained`,
    `from_config` builds random ones. `features_only` must be True. `output_stride` (None: the checkpoint's
    `model_args` value, else 32) is passed to the architecture as `timm.create_model(..., output_stride=...)` is,
    overriding `model_args`: the ResNets take 8 and 16 (dilated later stages), the other families only 32.

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
        self.timm_spec = resolve_architecture(self.backbone, self.architecture_args)
        self.stage_names = self.timm_spec.stage_names
        if out_features is None and out_indices is None:
            out_indices = [-1]  # transformers' TimmBackboneConfig default
        self.set_output_features_output_indices(out_features=out_features, out_indices=out_indices)
        verify_training_fields(self)

    @property
    def num_classes(self) -> int:
        """The classifier size of the timm checkpoint (not part of the backbone; `export` writes its placeholder);
        without one, that of the architecture's default weights."""
        pretrained_cfg = self.extra.get("pretrained_cfg") or {}
        for source in (self.model_args, self.extra, pretrained_cfg, self.entrypoint_args):
            if source.get("num_classes") is not None:
                return int(source["num_classes"])
        return 1000

    @property
    def architecture_args(self) -> dict[str, Any]:
        """`model_args` with `output_stride` (when set) in place, as transformers' TimmBackbone passes it to
        `timm.create_model`."""
        if self.output_stride is None:
            return dict(self.model_args)
        return {**self.model_args, "output_stride": self.output_stride}

    @property
    def entrypoint_args(self) -> dict[str, Any]:
        """timm's `create_model` keyword arguments for this checkpoint: the architecture's, then `model_args` (and
        `output_stride`)."""
        return entrypoint_args(self.backbone.split(".")[0], self.architecture_args)

    @property
    def input_size(self) -> tuple[int, int]:
        """The (height, width) the architecture is trained at: the spec's `img_size` where it has one, else the
        pretrained config's `input_size`."""
        if self.timm_spec.img_size is not None:
            return tuple(self.timm_spec.img_size)
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
        height, width = self.input_size
        defaults = dict(input_size=[self.num_channels, height, width], crop_mode="center", mean=list(IMAGENET_MEAN),
                        std=list(IMAGENET_STD), **spec.pretrained_cfg_defaults())
        for key, value in defaults.items():
            pretrained_cfg.setdefault(key, value)
        pretrained_cfg["num_classes"] = self.num_classes
        global_pool = self.model_args.get("global_pool", extra.get("global_pool", "avg"))
        output = {"architecture": self.backbone, "num_classes": self.num_classes,
                  "num_features": spec.num_features[-1], "global_pool": global_pool}
        for key in ("label_names", "label_descriptions"):
            if key in extra:
                output[key] = extra[key]
        output["model_args"] = {**self.architecture_args, "in_chans": self.num_channels,
                                "num_classes": self.num_classes}
        output["pretrained_cfg"] = pretrained_cfg
        return output


# ---------------------------------------------------------------------------------------------------------------
# Module


class TimmBackbone(BackboneModuleMixin, nnx.Module):
    """A timm architecture as a feature extractor, in Flax NNX: feature map for feature map equal to
    `timm.create_model(backbone, features_only=True, out_indices=...)`, with transformers' TimmBackbone semantics.

    Args:
        config: the architecture (`backbone`, `model_args`) and the selected stages.
        rngs: initialises the weights (random until loaded).
        dtype: compute dtype; BatchNorm statistics, LayerNorm statistics and attention softmax are float32.
        param_dtype: dtype of the parameters.
        data_format: "channels_last" (default) takes and returns NHWC; "channels_first" NCHW.

    `model(pixel_values)` returns a `BackboneOutput` with the selected stages' maps (`output_hidden_states=True`
    adds every stage's). The modules and their state paths are the family's transformers-layout ones (ResNet:
    `stem`, `stages.i.blocks.j`; Swin: `patch_embed`, `stages.i`; ConvNeXt: `stem`, `stages.i`; ViT: `patch_embed`,
    `cls_token`, `blocks.i`), so the two layouts share modules. Stochastic depth (and DINOv3's RoPE coordinate
    augmentation, when the checkpoint asks for it) acts in train mode only, with keys from the call's `rngs`.
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
        for name, module in spec.build(config.num_channels, dtype=dtype, param_dtype=param_dtype, rngs=rngs).items():
            setattr(self, name, module)
        configure_training(self)

    def stage_paths(self) -> dict[str, list[tuple]]:
        """State-path prefixes of what each stage owns (what `freeze_stages` freezes); see the family's spec."""
        return self.config.timm_spec.stage_paths()

    def freeze_batch_norm_2d(self):
        """transformers' method: from now on every BatchNorm uses its running statistics and never updates them."""
        self.config.freeze_batch_norm_2d = True
        configure_training(self)

    def unfreeze_batch_norm_2d(self):
        self.config.freeze_batch_norm_2d = False
        configure_training(self)

    def __call__(self, pixel_values: jax.Array, output_hidden_states: bool = False, output_attentions: bool = False,
                 *, rngs: nnx.Rngs | None = None) -> BackboneOutput:
        if output_attentions:
            raise ValueError("Cannot output attentions for timm backbones at the moment")  # as transformers says
        self.check_rngs(rngs)
        pixel_values = validate_pixel_values(pixel_values, self.config.num_channels, self.data_format)
        x = from_channels_first(pixel_values, self.data_format).astype(self.dtype)
        hidden_states = self.config.timm_spec.forward(self, x, rngs)
        hidden_states = tuple(to_channels_first(h, self.data_format) for h in hidden_states)
        feature_maps = tuple(hidden_states[self.stage_names.index(name)] for name in self.out_features)
        return BackboneOutput(feature_maps=feature_maps, hidden_states=hidden_states if output_hidden_states else None)
