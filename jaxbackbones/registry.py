"""The family registry: every family jaxbackbones supports, one line each in `FAMILY_MODULES`.

A family's entry (`Family`, the `FAMILY` of `jaxbackbones/families/<name>.py`) states, in one place, its
`config.json` model types (config class, backbone module, mapping table, the transformers class export writes for),
its timm layouts (spec, architectures, mapping table), its offline catalog rows (`KnownCheckpoint`s), its benchmark
entries and its small example configs. Everything else reads it: `auto.FAMILIES` (AutoConfig, AutoBackbone, export,
Linen, `load_backbone`), `models.timm`'s `TIMM_SPECS` / `TIMM_ARCHITECTURES`, `catalog` (`jaxbackbones models`,
the CLI), benchmarks/run.py's `MODELS` and the tests' `SMALL_CONFIGS`.

Entries name classes and tables as strings ("models.resnet:ResNetConfig", relative to the `jaxbackbones` package),
resolved on first use: the registry and the family files import nothing of jaxbackbones, so any module can read
them (the timm dispatcher does while `models.timm` is still importing) without an import cycle, and configs still
never import modules (design.md).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
from typing import Any

# jaxbackbones/families/<name>.py, each with a `FAMILY`: adding a family adds its name here.
FAMILY_MODULES = ("resnet", "swin", "convnext", "vit", "hgnet_v2", "pvt_v2", "vitdet", "hiera")


@dataclasses.dataclass(frozen=True)
class ModelType:
    """One `config.json` `model_type`: its config class, backbone module and mapping table (a `Table`, or a function
    of the config returning one), the transformers backbone class export writes for, and the torch layout."""

    config: str
    backbone: str
    table: str
    transformers_backbone: str | None = None
    layout: str = "transformers"


@dataclasses.dataclass(frozen=True)
class TimmLayout:
    """One timm family (`TimmSpec.family`): its spec class, its architectures (timm name -> the keyword arguments
    timm's entrypoint gives the model class) and its mapping table (a function of the `TimmBackboneConfig`)."""

    spec: str
    architectures: str
    table: str


@dataclasses.dataclass(frozen=True)
class KnownCheckpoint:
    """A hub checkpoint's architecture, stated: its `model_type`, the `config.json` values that differ from the
    config class's defaults, and its `preprocessor_config.json`."""

    model_type: str
    config: dict
    preprocessing: dict


@dataclasses.dataclass(frozen=True)
class Family:
    """Everything about a family that code outside its own files needs.

    model_types: model_type -> `ModelType`, in listing order.
    timm: `TimmSpec.family` -> `TimmLayout`, for the family's timm architectures (`timm_backbone` checkpoints).
    checkpoints: hub repo id -> `KnownCheckpoint`, what `jaxbackbones models` / `info` know offline.
    examples: name -> small config as `AutoConfig.for_model` keyword arguments (`model_type` included), one per
        model type and layout, exercising the family's options; the tests that hold for every backbone (Linen, Orbax,
        the catalog's stages) run over them.
    benchmarks: name -> benchmarks/run.py `Entry` fields, with `model_type` and `config` (keyword arguments) for ours.
    """

    model_types: dict[str, ModelType]
    timm: dict[str, TimmLayout] = dataclasses.field(default_factory=dict)
    checkpoints: dict[str, KnownCheckpoint] = dataclasses.field(default_factory=dict)
    examples: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    benchmarks: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)


# timm checkpoints (a `config.json` with `architecture`) of every family's timm layouts: one dispatching model type.
TIMM_BACKBONE = ModelType("models.timm.backbone:TimmBackboneConfig", "models.timm.backbone:TimmBackbone",
                          "convert.timm_backbone:table_for", layout="timm")


def resolve(reference: str) -> Any:
    """The object "module:attribute" names, the module relative to the `jaxbackbones` package."""
    module, _, attribute = reference.partition(":")
    return getattr(importlib.import_module(f"jaxbackbones.{module}"), attribute)


@functools.cache
def families() -> dict[str, Family]:
    return {name: importlib.import_module(f"jaxbackbones.families.{name}").FAMILY for name in FAMILY_MODULES}


def _merged(field: str) -> dict:
    merged: dict = {}
    for name, family in families().items():
        entries = getattr(family, field)
        repeated = sorted(set(merged) & set(entries))
        if repeated:
            raise ValueError(f"family {name!r} registers {field} {repeated}, which another family already has")
        merged.update(entries)
    return merged


def model_types() -> dict[str, ModelType]:
    """Every `model_type`, family by family, then `timm_backbone`."""
    return {**_merged("model_types"), "timm_backbone": TIMM_BACKBONE}


def timm_layouts() -> dict[str, TimmLayout]:
    return _merged("timm")


def known_checkpoints() -> dict[str, KnownCheckpoint]:
    return _merged("checkpoints")


def examples() -> dict[str, dict[str, Any]]:
    return _merged("examples")


def benchmarks() -> dict[str, dict[str, Any]]:
    return _merged("benchmarks")
