"""What every timm family provides to `TimmBackbone`: a spec of the architecture, resolved from timm's arguments.

A family module (`resnet.py`, `swin.py`, ...) defines a frozen dataclass subclassing `TimmSpec` (the arguments of
timm's model class that shape the backbone) and `ARCHITECTURES` (timm name -> the keyword arguments timm's
entrypoint passes to that class). The spec builds the family's modules onto the backbone and runs them, so
`TimmBackbone` stays a dispatcher; the torch <-> Flax tables live in `convert/timm_<family>.py`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax
from flax import nnx

# model_args every family accepts: the input channels, and the classifier's settings (not part of a backbone).
HEAD_ARGS = frozenset({"in_chans", "num_classes", "global_pool", "drop_rate"})


class TimmSpec:
    """Base of the family specs. Subclasses are frozen dataclasses and set the class attributes below."""

    family: ClassVar[str]
    # model_args that only affect weight initialisation or input-size checks (TimmBackbone takes any size).
    ignored_args: ClassVar[frozenset[str]] = frozenset()
    # model_args jaxbackbones implements only at timm's default: name -> accepted values (the first is the default).
    only_args: ClassVar[dict[str, tuple]] = {}

    @classmethod
    def from_args(cls, name: str, args: dict[str, Any]) -> TimmSpec:
        """The spec of architecture `name` from its entrypoint arguments with the checkpoint's `model_args` applied.

        Checks `only_args`, drops `HEAD_ARGS` and `ignored_args`, rejects unknown arguments (naming the ones
        jaxbackbones understands), then lets `normalize` turn JSON values into the spec's field types.
        """
        args = dict(args)
        known = {field.name for field in dataclasses.fields(cls)}
        if "output_stride" not in known and "output_stride" not in cls.only_args:
            output_stride = args.pop("output_stride", 32)
            if output_stride != 32:  # dilation is a ResNet option (timm's other families have no output_stride)
                raise ValueError(f"{name}: output_stride={output_stride!r} is not supported for timm family "
                                 f"{cls.family!r} (only 32)")
        for arg, allowed in cls.only_args.items():
            value = args.pop(arg, allowed[0])
            if isinstance(value, str):
                value = value.lower()
            if value not in allowed:
                raise ValueError(f"{name}: model_args {arg}={value!r} is not supported (only {allowed[0]!r})")
        for arg in HEAD_ARGS | cls.ignored_args:
            args.pop(arg, None)
        unknown = sorted(set(args) - known)
        if unknown:
            raise ValueError(f"{name}: model_args {unknown} are not supported; jaxbackbones understands "
                             f"{sorted(known | HEAD_ARGS | cls.ignored_args | set(cls.only_args))}")
        return cls(**cls.normalize(name, args))

    @classmethod
    def normalize(cls, name: str, args: dict[str, Any]) -> dict[str, Any]:
        """`args` with JSON lists turned into the tuples and pairs the spec's fields hold."""
        return args

    # The stages as timm's `feature_info` describes them.
    @property
    def stage_names(self) -> list[str]:
        raise NotImplementedError

    @property
    def num_features(self) -> tuple[int, ...]:
        raise NotImplementedError

    @property
    def reductions(self) -> tuple[int, ...]:
        raise NotImplementedError

    @property
    def img_size(self) -> tuple[int, int] | None:
        """The input size the architecture is built for, where it shapes the modules (Swin's windows); else None."""
        return None

    def build(self, num_channels: int, *, dtype, param_dtype, rngs: nnx.Rngs) -> dict[str, nnx.Module]:
        """The family's modules, by the attribute name `TimmBackbone` holds each under (its state-path root)."""
        raise NotImplementedError

    def forward(self, backbone: nnx.Module, x: jax.Array, rngs: nnx.Rngs | None) -> list[jax.Array]:
        """Every stage's feature map (NHWC, in `stage_names` order) of the modules `build` made, held by `backbone`."""
        raise NotImplementedError

    def stage_paths(self) -> dict[str, list[tuple]]:
        """State-path prefixes of what each stage owns (what `freeze_stages` freezes)."""
        raise NotImplementedError

    def pretrained_cfg_defaults(self) -> dict[str, Any]:
        """The family's `pretrained_cfg` entries (`interpolation`, `crop_pct`, `first_conv`, `classifier`) that export
        writes when a config carries none."""
        raise NotImplementedError
