"""`load_backbone`: the backbone a downstream model's config describes, as transformers' heads build theirs.

A detection or segmentation config (MaskFormer-style) carries its backbone as `backbone_config` (a config object,
ours or transformers', or a `config.json`-style dict with `model_type`), or names a checkpoint in `backbone`
(with `use_pretrained_backbone` and `backbone_kwargs`, as transformers' `consolidate_backbone_kwargs_to_config`
reads them). A config without either is taken to be the backbone's own config.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
from flax import nnx

from .auto import FAMILIES, AutoBackbone, AutoConfig, _config_from_dict
from .configuration import PretrainedConfig


def _field(config: Any, name: str, default=None):
    if isinstance(config, Mapping):
        return config.get(name, default)
    value = getattr(config, name, default)
    return default if value is None else value


def to_backbone_config(config: Any) -> PretrainedConfig:
    """Our config class for a backbone config given as one of ours, a transformers config, or a dict."""
    if isinstance(config, PretrainedConfig):
        return config
    if isinstance(config, Mapping):
        config_dict = dict(config)
    elif hasattr(config, "to_dict"):  # a transformers PreTrainedConfig
        config_dict = config.to_dict()
    else:
        raise ValueError(f"backbone_config must be a config or a dict with a model_type, got {type(config).__name__}")
    if config_dict.get("model_type") not in FAMILIES:
        raise ValueError(f"backbone_config has model_type {config_dict.get('model_type')!r}; jaxbackbones supports "
                         f"{sorted(FAMILIES)}")
    return _config_from_dict(config_dict, "backbone_config")


def load_backbone(config: Any, *, rngs: nnx.Rngs | None = None, dtype=jnp.float32, param_dtype=jnp.float32,
                  data_format: str = "channels_last", mesh=None, shard_axis=None, **pretrained_kwargs) -> nnx.Module:
    """The backbone module `config` describes, as `transformers.backbone_utils.load_backbone` builds it.

    - `config.backbone_config` (a config or a dict): a randomly initialised backbone of that config (the head's
      weights, backbone included, come from the head's own checkpoint);
    - `config.backbone` (a hub repo id or folder) with `use_pretrained_backbone=True`: that checkpoint, loaded
      with `backbone_kwargs` (e.g. `out_indices`); without it, the checkpoint's config with random weights;
    - neither: `config` itself is the backbone config.

    `config` may be an object or a dict. Keyword arguments go to `AutoBackbone.from_config` / `from_pretrained`.
    Raises `ValueError` when both `backbone` and `backbone_config` are given, or `backbone_kwargs` come with a
    `backbone_config` (transformers refuses both too).
    """
    backbone_config = _field(config, "backbone_config")
    backbone = _field(config, "backbone")
    backbone_kwargs = dict(_field(config, "backbone_kwargs") or {})
    if backbone_config is not None and backbone is not None:
        raise ValueError("You can't specify both `backbone` and `backbone_config`.")
    if backbone_config is not None and backbone_kwargs:
        raise ValueError("You can't specify both `backbone_kwargs` and `backbone_config`.")
    options = dict(dtype=dtype, param_dtype=param_dtype, data_format=data_format, mesh=mesh, shard_axis=shard_axis)
    if backbone is not None:
        if _field(config, "use_pretrained_backbone", False):
            return AutoBackbone.from_pretrained(backbone, **options, **pretrained_kwargs, **backbone_kwargs)
        backbone_config = AutoConfig.from_pretrained(backbone, **backbone_kwargs)
    if backbone_config is None:
        backbone_config = config
    return AutoBackbone.from_config(to_backbone_config(backbone_config), rngs=rngs, **options)
