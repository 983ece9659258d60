"""AutoConfig / AutoBackbone: a `config.json`'s `model_type` picks the config, the module and the mapping table."""

from __future__ import annotations

import dataclasses
import logging
import os
from types import ModuleType

import jax.numpy as jnp
from flax import nnx

from . import checkpoint, hub
from .configuration import PretrainedConfig
from .convert import hf_resnet, hf_swin
from .models.resnet import ResNetBackbone, ResNetConfig
from .models.swin import SwinBackbone, SwinConfig

logger = logging.getLogger("jaxbackbones")


@dataclasses.dataclass(frozen=True)
class Family:
    """What one `model_type` needs: its config, its backbone module, its checkpoint mapping."""

    config_class: type[PretrainedConfig]
    backbone_class: type[nnx.Module]
    # has RULES; ALLOW_MISSING when the checkpoint may lack some entries; prepare(state_dict) -> state_dict when
    # several torch keys make one entry (run before the rules)
    mapping: ModuleType


FAMILIES: dict[str, Family] = {
    "resnet": Family(ResNetConfig, ResNetBackbone, hf_resnet),
    "swin": Family(SwinConfig, SwinBackbone, hf_swin),
}


def _family(model_type: str | None, where: str) -> Family:
    if model_type not in FAMILIES:
        raise ValueError(
            f"{where} has model_type {model_type!r}, which jaxbackbones does not support; "
            f"supported model types: {sorted(FAMILIES)}"
        )
    return FAMILIES[model_type]


class AutoConfig:
    """Reads a `config.json` into the config class its `model_type` names."""

    @staticmethod
    def from_pretrained(name_or_path: str | os.PathLike, *, revision: str | None = None, **kwargs) -> PretrainedConfig:
        """Config of a local folder or hub repo id; `kwargs` override its values (e.g. `out_indices`)."""
        config_dict = hub.load_config_dict(name_or_path, revision=revision)
        family = _family(config_dict.get("model_type"), f"{name_or_path}/config.json")
        return family.config_class.from_dict(config_dict, **kwargs)

    @staticmethod
    def for_model(model_type: str, **kwargs) -> PretrainedConfig:
        """A default config of `model_type`, with `kwargs` overriding fields."""
        return _family(model_type, "for_model").config_class(**kwargs)


class AutoBackbone:
    """Builds the backbone module a config describes, with random weights or from a torch hub checkpoint."""

    @staticmethod
    def from_config(config: PretrainedConfig, *, rngs: nnx.Rngs | None = None, dtype=jnp.float32,
                    param_dtype=jnp.float32, data_format: str = "channels_last") -> nnx.Module:
        """A randomly initialised backbone (train mode, like a fresh torch module)."""
        family = _family(getattr(config, "model_type", None), type(config).__name__)
        return family.backbone_class(config, rngs=rngs or nnx.Rngs(0), dtype=dtype, param_dtype=param_dtype,
                                     data_format=data_format)

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
        output_loading_info: bool = False,
        **config_kwargs,
    ):
        """Load a backbone from a local folder or hub repo id holding a transformers checkpoint.

        `out_indices` / `out_features` select the stages, as in transformers; `config_kwargs` override other
        config fields. Weights are read from `model.safetensors` (preferred, sharded or not) or
        `pytorch_model.bin`, converted to NHWC Flax state and checked: a missing, unexpected or misshapen
        entry raises `CheckpointMismatchError`. The model is returned in eval mode; with
        `output_loading_info=True` it comes with the `ConversionReport`.
        """
        if out_indices is not None:
            config_kwargs["out_indices"] = list(out_indices)
        if out_features is not None:
            config_kwargs["out_features"] = list(out_features)
        config = AutoConfig.from_pretrained(name_or_path, revision=revision, **config_kwargs)
        family = FAMILIES[config.model_type]
        files = hub.resolve_weight_files(name_or_path, revision=revision)
        state_dict = checkpoint.read_state_dict(files)
        if hasattr(family.mapping, "prepare"):
            state_dict = family.mapping.prepare(state_dict)

        def build():
            return family.backbone_class(config, rngs=nnx.Rngs(0), dtype=dtype, param_dtype=param_dtype,
                                         data_format=data_format)

        model, report = checkpoint.load_converted(
            build, state_dict, family.mapping.RULES, allow_missing=getattr(family.mapping, "ALLOW_MISSING", ()),
            source=", ".join(str(path) for path in files),
        )
        if report.initialized:
            logger.warning("%s: newly initialised, not in the checkpoint: %s", name_or_path, report.initialized)
        if report.ignored:
            logger.info("%s: checkpoint entries not used by the backbone: %s", name_or_path, report.ignored)
        model.eval()
        return (model, report) if output_loading_info else model
