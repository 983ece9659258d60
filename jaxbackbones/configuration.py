"""Plain configs that read and write the hub's `config.json`.

A config class lists its fields and defaults once (`defaults`). Keys it does not model (`id2label`,
`architectures`, `torch_dtype`, ...) are kept in `extra` and written back, so load -> save round-trips.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any, ClassVar

from . import hub


class PretrainedConfig:
    """Base of every config: fields from `defaults`, unknown keys kept, JSON in and out."""

    model_type: ClassVar[str] = ""
    defaults: ClassVar[dict[str, Any]] = {}
    # Fine-tuning switches of jaxbackbones (not transformers fields): set like `defaults`, but written to
    # `config.json` only when they differ from their default, so a hub config round-trips unchanged.
    training_defaults: ClassVar[dict[str, Any]] = {}
    # Keys recomputed from the fields, so a stale value in a file is ignored rather than trusted.
    derived_keys: ClassVar[tuple[str, ...]] = ("model_type",)

    def __init__(self, **kwargs):
        for name, default in {**self.defaults, **self.training_defaults}.items():
            setattr(self, name, copy.deepcopy(kwargs.pop(name, default)))
        for key in self.derived_keys:
            kwargs.pop(key, None)
        self.extra = kwargs

    def __getattr__(self, name: str) -> Any:
        # Only reached when normal lookup fails: expose kept hub keys (`config.id2label`) as attributes.
        extra = self.__dict__.get("extra", {})
        if name in extra:
            return extra[name]
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def to_dict(self) -> dict[str, Any]:
        """The `config.json` content: kept keys, then every field, then `model_type`."""
        output = copy.deepcopy(self.extra)
        output.update({name: copy.deepcopy(getattr(self, name)) for name in self.defaults})
        output.update({name: copy.deepcopy(getattr(self, name)) for name, default in self.training_defaults.items()
                       if getattr(self, name) != default})
        output["model_type"] = self.model_type
        return output

    def to_json_string(self) -> str:
        """`to_dict()` as `config.json` text: sorted keys, two-space indent."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def save_pretrained(self, save_directory: str | os.PathLike) -> Path:
        """Write `config.json` into `save_directory` (created if needed); returns its path."""
        directory = Path(save_directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / hub.CONFIG_NAME
        path.write_text(self.to_json_string())
        return path

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs) -> PretrainedConfig:
        """Build from a `config.json` dict; `kwargs` override its values."""
        model_type = config_dict.get("model_type")
        if cls.model_type and model_type not in (None, cls.model_type):
            raise ValueError(f"{cls.__name__} expects model_type {cls.model_type!r}, the config has {model_type!r}")
        merged = {**config_dict, **kwargs}
        # A stage selection given by the caller replaces the file's whole, as transformers' setters do.
        for given, stale in (("out_indices", "out_features"), ("out_features", "out_indices")):
            if given in kwargs and stale not in kwargs:
                merged.pop(stale, None)
        return cls(**merged)

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, *, revision: str | None = None, **kwargs):
        """Read `config.json` from a local folder or a hub repo id."""
        return cls.from_dict(hub.load_config_dict(name_or_path, revision=revision), **kwargs)

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.to_dict() == other.to_dict()

    # Modules keep their config as static metadata, and jit caches on it: the hash must follow the content.
    def __hash__(self) -> int:
        return hash((type(self).__name__, self.to_json_string()))

    def __repr__(self) -> str:
        return f"{type(self).__name__} {self.to_json_string()}"


# The training switches every backbone family understands (see `jaxbackbones.training`).
TRAINING_DEFAULTS: dict[str, Any] = {"freeze_stages": 0, "gradient_checkpointing": False}


def verify_training_fields(config) -> None:
    """`ValueError` unless `freeze_stages` is an int in [0, len(stage_names)] and the flags are bools."""
    stages = getattr(config, "freeze_stages", 0)
    if isinstance(stages, bool) or not isinstance(stages, int) or not 0 <= stages <= len(config.stage_names):
        raise ValueError(
            f"freeze_stages must be an int in [0, {len(config.stage_names)}] (the number of leading entries of "
            f"stage_names {config.stage_names} to freeze), got {stages!r}"
        )
    for name in ("gradient_checkpointing", "freeze_batch_norm"):
        if not isinstance(getattr(config, name, False), bool):
            raise ValueError(f"{name} must be True or False, got {getattr(config, name)!r}")
