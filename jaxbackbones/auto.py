"""AutoConfig / AutoBackbone: a `config.json`'s `model_type` picks the config, the module and the mapping table."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import jax.numpy as jnp
from flax import nnx

from . import checkpoint, heads, hub, registry
from .configuration import PretrainedConfig
from .convert.rules import Table, export_state_dict
from .initializers import build_with_random_weights
from .models.timm import TimmBackboneConfig
from .sharding import ShardingRule, shard_model

logger = logging.getLogger("jaxbackbones")


@dataclasses.dataclass(frozen=True)
class Family:
    """What one `model_type` needs: its config, its backbone module, its checkpoint mapping."""

    config_class: type[PretrainedConfig]
    backbone_class: type[nnx.Module]
    # How the family's torch checkpoints map onto the module; a function of the config where that depends on it.
    table: Table | Callable[[PretrainedConfig], Table]
    transformers_backbone: str | None = None  # the transformers class that export writes checkpoints for
    layout: str = "transformers"  # the torch layout the checkpoints come in, and export writes

    def table_for(self, config: PretrainedConfig) -> Table:
        return self.table(config) if callable(self.table) else self.table


def _family_of(model_type: registry.ModelType) -> Family:
    return Family(registry.resolve(model_type.config), registry.resolve(model_type.backbone),
                  registry.resolve(model_type.table), model_type.transformers_backbone, model_type.layout)


# model_type -> its Family, and timm family -> its mapping table as a function of the config, as
# `jaxbackbones.registry` lists them.
FAMILIES: dict[str, Family] = {name: _family_of(row) for name, row in registry.model_types().items()}
TIMM_TABLES: dict[str, Callable[[TimmBackboneConfig], Table]] = {
    name: registry.resolve(layout.table) for name, layout in registry.timm_layouts().items()}


def _model_type(config_dict: dict) -> str | None:
    """A config.json's model_type; timm's hub layout has none, but names the timm model in `architecture`."""
    if "model_type" not in config_dict and "architecture" in config_dict:
        return TimmBackboneConfig.model_type
    return config_dict.get("model_type")


def _family(model_type: str | None, where: str) -> Family:
    if model_type not in FAMILIES:
        raise ValueError(
            f"{where} has model_type {model_type!r}, which jaxbackbones does not support; "
            f"supported model types: {sorted(FAMILIES)}, and head checkpoints ({sorted(heads.HEADS)}) of those"
        )
    return FAMILIES[model_type]


def _config_from_dict(config_dict: dict, where: str, **kwargs) -> PretrainedConfig:
    """The backbone config a `config.json` dict states: its own, or a head checkpoint's backbone (`heads`), with the
    head's BatchNorm freezing as a default that `kwargs` override."""
    model_type = _model_type(config_dict)
    if model_type in heads.HEADS:
        head_config = config_dict
        config_dict, head = heads.backbone_config_dict(config_dict, where, hub.load_config_dict)
        backbone_type = _model_type(config_dict)
        if backbone_type not in FAMILIES:
            raise ValueError(
                f"{where} is a {model_type} checkpoint with a {backbone_type!r} backbone, which jaxbackbones does not "
                f"support; supported backbone model types: {sorted(FAMILIES)}")
        if head.freezes_batch_norm(head_config):
            kwargs = {**_frozen_batch_norm(FAMILIES[backbone_type].config_class), **kwargs}
        model_type = backbone_type
    family = _family(model_type, where)
    hub_config = {key: value for key, value in config_dict.items() if key != checkpoint.NATIVE_KEY}
    return family.config_class.from_dict(hub_config, **kwargs)


def _frozen_batch_norm(config_class: type[PretrainedConfig]) -> dict:
    """The config field that freezes every BatchNorm (`jaxbackbones.training`), set; none for a family without one."""
    for name in ("freeze_batch_norm", "freeze_batch_norm_2d"):
        if name in config_class.training_defaults or name in config_class.defaults:
            return {name: True}
    return {}


def _checkpoint_table(family: Family, config: PretrainedConfig, config_dict: dict) -> Table:
    """The mapping table of a torch checkpoint with this `config.json`: the family's, read through the head's prefix
    for a head checkpoint."""
    head = heads.HEADS.get(_model_type(config_dict))
    if head is None:
        return family.table_for(config)
    table = head.tables.get(config.model_type)
    return heads.backbone_table(family.table_for(config) if table is None else registry.resolve(table), head)


class AutoConfig:
    """Reads a `config.json` into the config class its `model_type` names."""

    @staticmethod
    def from_pretrained(name_or_path: str | os.PathLike, *, revision: str | None = None, **kwargs) -> PretrainedConfig:
        """Config of a local folder or hub repo id; `kwargs` override its values (e.g. `out_indices`)."""
        config_dict = hub.load_config_dict(name_or_path, revision=revision)
        return _config_from_dict(config_dict, f"{name_or_path}/config.json", **kwargs)

    @staticmethod
    def for_model(model_type: str, **kwargs) -> PretrainedConfig:
        """A default config of `model_type`, with `kwargs` overriding fields."""
        return _family(model_type, "for_model").config_class(**kwargs)


def _cached_conversion(config_path: Path, name_or_path, param_dtype) -> Path | None:
    """The conversion-cache folder of a hub checkpoint: repo id, exact commit and parameter dtype."""
    root = hub.conversion_cache_dir()
    commit = hub.snapshot_commit(config_path)
    if root is None or commit is None or Path(name_or_path).is_dir():
        return None
    return root / ("models--" + str(name_or_path).replace("/", "--")) / commit / jnp.dtype(param_dtype).name


class AutoBackbone:
    """Builds the backbone module a config describes, with random weights or from a checkpoint."""

    @staticmethod
    def from_config(config: PretrainedConfig, *, rngs: nnx.Rngs | None = None, dtype=jnp.float32,
                    param_dtype=jnp.float32, data_format: str = "channels_last", mesh=None,
                    shard_axis=None) -> nnx.Module:
        """A randomly initialised backbone (train mode, like a fresh torch module).

        The weights are those the backbone class draws from `rngs` (default `nnx.Rngs(0)`) when built directly, bit
        for bit, but made all at once (`initializers.build_with_random_weights`, ~10x faster on CPU).
        With a `mesh`, each variable goes straight onto it: sharded along `shard_axis` (FSDP-style), or replicated
        when it is None (see `jaxbackbones.sharding`).
        """
        family = _family(getattr(config, "model_type", None), type(config).__name__)
        rule = _sharding_rule(mesh, shard_axis)
        model = build_with_random_weights(
            lambda: family.backbone_class(config, rngs=rngs or nnx.Rngs(0), dtype=dtype, param_dtype=param_dtype,
                                          data_format=data_format),
            sharding=rule)
        return _place_on_mesh(model, mesh, shard_axis)

    @staticmethod
    def from_pretrained(
        name_or_path: str | os.PathLike,
        *,
        out_indices: list[int] | tuple[int, ...] | None = None,
        out_features: list[str] | None = None,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
        data_format: str = "channels_last",
        revision: str | None = None,
        cache_conversion: bool = True,
        output_loading_info: bool = False,
        progress: bool = False,
        mesh=None,
        shard_axis=None,
        **config_kwargs,
    ):
        """Load a backbone from a local folder or hub repo id.

        The folder or repo holds a torch checkpoint in the transformers layout, or a native folder written by
        `save_pretrained` / `jaxbackbones convert` (read without torch). `out_indices` / `out_features` select
        the stages, as in transformers; `config_kwargs` override other config fields.

        Torch weights are read from `model.safetensors` (preferred, sharded or not) or `pytorch_model.bin`,
        converted to NHWC Flax state and checked: a missing, unexpected or misshapen entry raises
        `CheckpointMismatchError`. A hub checkpoint's conversion is cached per repo id, commit and
        `param_dtype` (see `hub.conversion_cache_dir`; `cache_conversion=False` skips it), so later loads read
        the native format. The model is returned in eval mode; with `output_loading_info=True` it comes with
        the `ConversionReport`. `progress=True` shows a progress bar while converting.
        With a `jax.sharding.Mesh`, the weights are placed on it, sharded along `shard_axis` (FSDP-style) or
        replicated when it is None (see `jaxbackbones.sharding`; multi-host after `jax.distributed.initialize()`):
        each converted array goes straight to its devices, each device reading only its own slice of the
        memory-mapped checkpoint, and a sharded checkpoint is read file by file (`checkpoint.iter_checkpoint`), so
        neither the host nor any device ever holds the whole model.
        Training switches (`freeze_stages`, `freeze_batch_norm`, `gradient_checkpointing`) are config kwargs.
        """
        if out_indices is not None:
            config_kwargs["out_indices"] = list(out_indices)
        if out_features is not None:
            config_kwargs["out_features"] = list(out_features)
        config_path = hub.resolve_file(name_or_path, hub.CONFIG_NAME, revision=revision)
        cache = _cached_conversion(config_path, name_or_path, param_dtype) if cache_conversion else None
        if cache is not None and (cache / checkpoint.NATIVE_WEIGHTS_NAME).is_file():
            name_or_path, revision, config_path = cache, None, cache / hub.CONFIG_NAME
        config_dict = hub.read_json(config_path)
        config = _config_from_dict(config_dict, str(config_path), **config_kwargs)
        family = FAMILIES[config.model_type]

        native = checkpoint.is_native(config_dict)
        if native:
            files = [hub.inside_checkpoint(hub.resolve_file(name_or_path, checkpoint.NATIVE_WEIGHTS_NAME,
                                                            revision=revision))]
            table = checkpoint.NATIVE_TABLE
        else:
            files = hub.resolve_weight_files(name_or_path, revision=revision)
            table = _checkpoint_table(family, config, config_dict)

        def build():
            return family.backbone_class(config, rngs=nnx.Rngs(0), dtype=dtype, param_dtype=param_dtype,
                                         data_format=data_format)

        model, report = checkpoint.load_parts(
            build, checkpoint.iter_checkpoint(files, table), table, source=", ".join(str(path) for path in files),
            progress=progress, shardings=_sharding_rule(mesh, shard_axis),
        )
        if native:
            report.initialized = list(config_dict[checkpoint.NATIVE_KEY].get("newly_initialized", []))
        elif cache is not None and not all(variable[...].is_fully_addressable
                                           for variable in checkpoint.flat_state(model).values()):
            logger.info("%s: not caching the conversion: the mesh spans several processes and none holds the whole "
                        "model (convert it once with `jaxbackbones convert` to skip the conversion)", name_or_path)
        elif cache is not None:
            try:
                checkpoint.save_native(model, cache, config_dict=config_dict, newly_initialized=report.initialized)
            except OSError as error:
                logger.warning("could not cache the converted checkpoint at %s: %s", cache, error)
        if report.initialized:
            logger.warning("%s: newly initialised, not in the checkpoint: %s", name_or_path, report.initialized)
        if report.ignored:
            logger.info("%s: checkpoint entries not used by the backbone: %s", name_or_path, report.ignored)
        model.eval()
        return (model, report) if output_loading_info else model


def _sharding_rule(mesh, shard_axis) -> ShardingRule | None:
    if mesh is None:
        if shard_axis is not None:
            raise ValueError(f"shard_axis={shard_axis!r} needs a mesh (mesh=jaxbackbones.sharding.make_mesh(...))")
        return None
    return ShardingRule(mesh, shard_axis)


def _place_on_mesh(model: nnx.Module, mesh, shard_axis) -> nnx.Module:
    return model if _sharding_rule(mesh, shard_axis) is None else shard_model(model, mesh, shard_axis)


def export_pretrained(native_dir: str | os.PathLike, out_dir: str | os.PathLike, *, layout: str | None = None,
                      overwrite: bool = False) -> Path:
    """Write a native folder back as a torch checkpoint in its family's layout (`layout`, if given, must name it).

    "transformers" (ResNet, Swin): a folder `transformers` loads (`ResNetBackbone.from_pretrained`). "timm"
    (TimmBackbone): a timm hub folder, `config.json` in timm's format and the full timm state dict in
    `model.safetensors`, which `timm.create_model(arch, pretrained=True, pretrained_cfg_overlay=dict(file=...))`
    and `timm.create_model("local-dir:<folder>", pretrained=True)` load; the classifier (and Swin's final norm),
    which a backbone does not have, are written as placeholders (see convert/timm_resnet.py, timm_swin.py).

    Parameters keep their dtype; BatchNorm statistics included. The torch -> Flax -> torch round trip is
    bit-exact. `preprocessor_config.json` is copied when present. Written atomically.
    """
    native_dir = Path(native_dir)
    config_dict = hub.read_json(native_dir / hub.CONFIG_NAME)
    if not checkpoint.is_native(config_dict):
        raise ValueError(f"{native_dir} is not a native jaxbackbones folder (its config.json has no "
                         f"{checkpoint.NATIVE_KEY!r} entry); convert it first with `jaxbackbones convert`")
    config = _config_from_dict(config_dict, str(native_dir / hub.CONFIG_NAME))
    family = FAMILIES[config.model_type]
    if layout not in (None, family.layout):
        raise ValueError(f"{config.model_type} checkpoints export to the {family.layout!r} layout, not {layout!r}")
    state = checkpoint.read_safetensors(hub.inside_checkpoint(native_dir / checkpoint.NATIVE_WEIGHTS_NAME))
    torch_state = export_state_dict(state, family.table_for(config), config)
    if family.layout == "timm":
        torch_config = config.to_timm_dict()
    else:
        torch_config = {key: value for key, value in config_dict.items() if key != checkpoint.NATIVE_KEY}
        torch_config["architectures"] = [family.transformers_backbone]
    processor = native_dir / "preprocessor_config.json"
    with checkpoint.atomic_directory(out_dir, overwrite=overwrite) as staging:
        (staging / hub.CONFIG_NAME).write_text(json.dumps(torch_config, indent=2, sort_keys=True) + "\n")
        checkpoint.write_safetensors(staging / "model.safetensors", torch_state, metadata={"format": "pt"})
        if processor.is_file():
            shutil.copyfile(processor, staging / processor.name)
    return Path(out_dir)
