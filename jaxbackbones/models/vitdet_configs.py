"""transformers' VitDetConfig (`vitdet`), SamVisionConfig (`sam_vision_model`) and SamConfig (`sam`): same fields,
defaults and `config.json`.

Stages are `stem` (the patch embedding with its position embedding) and `stage1` ... `stageN`, one per block, every
one `hidden_size` channels at stride `patch_size`; SAM adds `neck`, its image embedding (`output_channels` channels,
the default selection, as `SamModel.vision_encoder(x).last_hidden_state`). Keys a config does not model are kept and
written back. The modules that read these configs are in `jaxbackbones/models/vitdet.py`.

`SamConfig` is a `SamModel` checkpoint's `config.json`: model_type `sam` with the encoder's fields nested under
`vision_config` (next to `prompt_encoder_config`, `mask_decoder_config`, kept as they are). It reads them as its own
attributes (`config.hidden_size`), takes them flat as keyword arguments too (`SamConfig(hidden_size=16, ...)`, which
override `vision_config`'s), and writes them back nested; the stage selection and jaxbackbones' training switches
sit at the top level, where transformers' SamConfig keeps (and ignores) them.

`interpolate_pos_encoding` (jaxbackbones' option, no field of transformers' config; written to `config.json` only
when set): transformers' SAM accepts only `image_size` (its patch embedding raises otherwise), and so do we by default;
with `interpolate_pos_encoding=True` other sizes run as timm's `samvit_*` runs them (the absolute position embedding
resampled with antialiased bicubic, the global blocks' relative position tables with linear interpolation).
"""

from __future__ import annotations

from typing import ClassVar

from ..backbone import BackboneConfigMixin
from ..configuration import TRAINING_DEFAULTS, PretrainedConfig, verify_training_fields
from ..layers import get_activation
from .common import pair


class _WindowedViTConfig(BackboneConfigMixin, PretrainedConfig):
    derived_keys = ("model_type", "stage_names")
    training_defaults: ClassVar[dict] = dict(TRAINING_DEFAULTS)
    dropout_fields: ClassVar[tuple[str, ...]] = ()
    extra_stages: ClassVar[tuple[str, ...]] = ()

    def __init__(self, out_features: list[str] | None = None, out_indices: list[int] | None = None, **kwargs):
        super().__init__(**kwargs)
        self._check()
        self.stage_names = ["stem", *(f"stage{idx}" for idx in range(1, self.num_hidden_layers + 1)),
                            *self.extra_stages]
        self.set_output_features_output_indices(out_features=out_features, out_indices=out_indices)
        verify_training_fields(self)

    def _check(self):
        for name in ("image_size", "patch_size"):
            value = getattr(self, name)
            if isinstance(value, tuple):
                setattr(self, name, list(value))
            pair(value, name)
        if self.num_hidden_layers < 1:
            raise ValueError(f"num_hidden_layers must be at least 1, got {self.num_hidden_layers}")
        if self.num_attention_heads < 1 or self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size={self.hidden_size} cannot be split into num_attention_heads="
                             f"{self.num_attention_heads} heads")
        if self.window_size < 0:
            raise ValueError(f"window_size must be >= 0, got {self.window_size}")
        for name in self.dropout_fields:
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        get_activation(self.hidden_act)

    def _check_indices(self, name: str):
        indices = getattr(self, name)
        if isinstance(indices, tuple):
            indices = list(indices)
            setattr(self, name, indices)
        # transformers asks `i in indices` for each block: an index past the last block selects nothing
        if not isinstance(indices, list) or any(not isinstance(i, int) or isinstance(i, bool) or i < 0
                                                for i in indices):
            raise ValueError(f"{name} must be a list of block indices (ints >= 0), got {indices!r}")

    @property
    def input_size(self) -> tuple[int, int]:
        return pair(self.image_size, "image_size")

    @property
    def patch_grid(self) -> tuple[int, int]:
        """Patches per column and row at `image_size` (the global blocks' relative position tables)."""
        (height, width), (patch_h, patch_w) = self.input_size, pair(self.patch_size, "patch_size")
        return height // patch_h, width // patch_w


class VitDetConfig(_WindowedViTConfig):
    """transformers' VitDetConfig (`vitdet`); defaults are transformers' (a ViT-B/16 at 224 with global attention
    only; ViTMatte's checkpoints use windows with relative positions and residual blocks).

    `window_block_indices` lists the windowed blocks (`window_size` windows; 0: global), every other block is
    global; `residual_block_indices` the blocks followed by a bottleneck residual block; the absolute position
    embedding is for the `pretrain_image_size` grid (plus a class token position that is never used), the global
    blocks' relative position tables for the `image_size` grid.
    """

    model_type = "vitdet"
    defaults: ClassVar[dict] = {
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "mlp_ratio": 4,
        "hidden_act": "gelu",
        "dropout_prob": 0.0,
        "initializer_range": 0.02,
        "layer_norm_eps": 1e-6,
        "image_size": 224,
        "pretrain_image_size": 224,
        "patch_size": 16,
        "num_channels": 3,
        "qkv_bias": True,
        "drop_path_rate": 0.0,
        "window_block_indices": [],
        "residual_block_indices": [],
        "use_absolute_position_embeddings": True,
        "use_relative_position_embeddings": False,
        "window_size": 0,
    }
    dropout_fields = ("dropout_prob", "drop_path_rate")

    def _check(self):
        super()._check()
        self._check_indices("window_block_indices")
        self._check_indices("residual_block_indices")
        if isinstance(self.pretrain_image_size, tuple):
            self.pretrain_image_size = list(self.pretrain_image_size)
        if self.use_absolute_position_embeddings:
            grid = self.pretrain_grid
            if grid[0] != grid[1]:
                raise ValueError(f"pretrain_image_size {self.pretrain_image_size!r} with patch_size "
                                 f"{self.patch_size!r} gives a {grid[0]}x{grid[1]} position grid; transformers' ViTDet "
                                 "needs a square one (its embedding is reshaped as sqrt(positions) squared)")

    @property
    def pretrain_grid(self) -> tuple[int, int]:
        (height, width) = pair(self.pretrain_image_size, "pretrain_image_size")
        patch_h, patch_w = pair(self.patch_size, "patch_size")
        return height // patch_h, width // patch_w


_SAM_VISION_DEFAULTS = {
    "hidden_size": 768,
    "output_channels": 256,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "num_channels": 3,
    "image_size": 1024,
    "patch_size": 16,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-6,
    "attention_dropout": 0.0,
    "initializer_range": 1e-10,
    "qkv_bias": True,
    "mlp_ratio": 4.0,
    "use_abs_pos": True,
    "use_rel_pos": True,
    "window_size": 14,
    "global_attn_indexes": [2, 5, 8, 11],
    "num_pos_feats": 128,
    "mlp_dim": None,
}


class SamVisionConfig(_WindowedViTConfig):
    """transformers' SamVisionConfig (`sam_vision_model`, a `SamVisionModel` checkpoint); defaults are SAM ViT-B's
    (transformers' docs say ViT-H; its defaults are B's sizes). `mlp_dim` None means `hidden_size * mlp_ratio`, as
    transformers sets it. Blocks in `global_attn_indexes` attend globally, the others in `window_size` windows."""

    model_type = "sam_vision_model"
    defaults: ClassVar[dict] = dict(_SAM_VISION_DEFAULTS)
    dropout_fields = ("attention_dropout",)
    extra_stages = ("neck",)

    def _check(self):
        for name in ("image_size", "patch_size"):
            if not isinstance(getattr(self, name), int):
                raise ValueError(f"SAM's {name} must be an int (transformers divides them), got "
                                 f"{getattr(self, name)!r}")
        super()._check()
        self._check_indices("global_attn_indexes")
        if self.mlp_dim is None:
            self.mlp_dim = int(self.hidden_size * self.mlp_ratio)
        if self.output_channels < 1:
            raise ValueError(f"output_channels must be >= 1, got {self.output_channels}")
        if not isinstance(self.interpolate_pos_encoding, bool):
            raise ValueError(f"interpolate_pos_encoding must be True or False, got {self.interpolate_pos_encoding!r}")

    @property
    def interpolate_pos_encoding(self) -> bool:
        """Accept other input sizes than `image_size`, resampling positions as timm does (see the module docstring)."""
        return self.extra.get("interpolate_pos_encoding", False)

    @interpolate_pos_encoding.setter
    def interpolate_pos_encoding(self, value: bool):
        if not isinstance(value, bool):
            raise ValueError(f"interpolate_pos_encoding must be True or False, got {value!r}")
        self.extra["interpolate_pos_encoding"] = value


# Top-level keys of a SamConfig that belong to jaxbackbones (stage selection, training switches, options).
_TOP_LEVEL = ("out_features", "out_indices", "interpolate_pos_encoding", *TRAINING_DEFAULTS)


class SamConfig(SamVisionConfig):
    """transformers' SamConfig (`sam`, a `SamModel` checkpoint: facebook/sam-vit-base, -large, -huge), read for its
    vision encoder (`vision_config`); see the module docstring."""

    model_type = "sam"

    def __init__(self, vision_config: dict | None = None, **kwargs):
        vision = dict(vision_config or {})
        # SamConfig's own `initializer_range` (the prompt encoder's and mask decoder's) stays at the top level
        flat = {key: kwargs.pop(key) for key in list(kwargs) if key in self.defaults and key != "initializer_range"}
        top = {key: kwargs.pop(key) for key in list(kwargs) if key in _TOP_LEVEL}
        # the rest (prompt_encoder_config, mask_decoder_config, initializer_range, architectures...) is kept in
        # `extra`, top-level keys of config.json as for every config
        vision.pop("model_type", None)
        vision.update(flat)
        if "interpolate_pos_encoding" in vision:
            top.setdefault("interpolate_pos_encoding", vision.pop("interpolate_pos_encoding"))
        fields = {key: vision.pop(key) for key in list(vision) if key in self.defaults}
        self._vision_extra = vision  # keys of vision_config this config does not model
        super().__init__(**fields, **top)
        self.extra.update(kwargs)  # (`initializer_range` here is SamConfig's, the field is the encoder's)

    def to_dict(self) -> dict:
        output = super().to_dict()
        vision = {**self._vision_extra, **{name: output.pop(name) for name in self.defaults}}
        vision["model_type"] = SamVisionConfig.model_type
        output.update({key: value for key, value in self.extra.items() if key in self.defaults})
        output["vision_config"] = vision
        return output
