"""transformers' DINOv2, DINOv2-with-registers and DINOv3-ViT configs: same fields, defaults and `config.json`.

Stages are `stem` (the embedded tokens) and `stage1` ... `stageN`, one per transformer block; every stage has
`hidden_size` channels at stride `patch_size`. Keys a config does not model are kept and written back. The modules
that read these configs are in `jaxbackbones/models/vit.py`.
"""

from __future__ import annotations

from typing import ClassVar

from ..backbone import BackboneConfigMixin
from ..configuration import TRAINING_DEFAULTS, PretrainedConfig, verify_training_fields
from ..layers import get_activation
from .common import pair


class _ViTConfig(BackboneConfigMixin, PretrainedConfig):
    """What the three configs share: the stage names, the checks, and the size helpers."""

    derived_keys = ("model_type", "stage_names")
    training_defaults: ClassVar[dict] = dict(TRAINING_DEFAULTS)
    dropout_fields: ClassVar[tuple[str, ...]] = ()

    def __init__(self, out_features: list[str] | None = None, out_indices: list[int] | None = None, **kwargs):
        super().__init__(**kwargs)
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
        for name in ("drop_path_rate", *self.dropout_fields):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        get_activation(self.hidden_act)
        self.stage_names = ["stem"] + [f"stage{idx}" for idx in range(1, self.num_hidden_layers + 1)]
        self.set_output_features_output_indices(out_features=out_features, out_indices=out_indices)
        verify_training_fields(self)

    @property
    def input_size(self) -> tuple[int, int]:
        """The (height, width) the checkpoint is trained at (`image_size`)."""
        return pair(self.image_size, "image_size")

    @property
    def patch_grid(self) -> tuple[int, int]:
        """Patches per column and row at `image_size`."""
        (height, width), (patch_h, patch_w) = self.input_size, pair(self.patch_size, "patch_size")
        return height // patch_h, width // patch_w


_DINOV2_DEFAULTS = {
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "mlp_ratio": 4,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.0,
    "attention_probs_dropout_prob": 0.0,
    "initializer_range": 0.02,
    "layer_norm_eps": 1e-6,
    "image_size": 224,
    "patch_size": 14,
    "num_channels": 3,
    "qkv_bias": True,
    "layerscale_value": 1.0,
    "drop_path_rate": 0.0,
    "use_swiglu_ffn": False,
    "apply_layernorm": True,
    "reshape_hidden_states": True,
}


class Dinov2Config(_ViTConfig):
    """transformers' Dinov2Config (`dinov2`); defaults are facebook/dinov2-base's layout at 224 (the hub checkpoints
    say `image_size: 518`). `use_swiglu_ffn` (ViT-g) makes the MLP a SwiGLU of `(int(2/3 * mlp_ratio * hidden) + 7)
    // 8 * 8` hidden features; `use_mask_token` only says whether the checkpoint carries the (pretraining) mask token,
    which the backbone does not use."""

    model_type = "dinov2"
    defaults: ClassVar[dict] = {**_DINOV2_DEFAULTS, "use_mask_token": True}
    dropout_fields = ("hidden_dropout_prob", "attention_probs_dropout_prob")


class Dinov2WithRegistersConfig(_ViTConfig):
    """transformers' Dinov2WithRegistersConfig (`dinov2_with_registers`): DINOv2 with `num_register_tokens` register
    tokens; defaults are facebook/dinov2-with-registers-base's layout at patch 16 and 224 (the hub checkpoints say
    patch 14 and 518)."""

    model_type = "dinov2_with_registers"
    defaults: ClassVar[dict] = {**_DINOV2_DEFAULTS, "patch_size": 16, "num_register_tokens": 4}
    dropout_fields = ("hidden_dropout_prob", "attention_probs_dropout_prob")

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        if self.num_register_tokens < 0:
            raise ValueError(f"num_register_tokens must be >= 0, got {self.num_register_tokens}")


class DINOv3ViTConfig(_ViTConfig):
    """transformers' DINOv3ViTConfig (`dinov3_vit`); defaults are facebook/dinov3-vits16-pretrain-lvd1689m's layout
    except `num_register_tokens` (0 here as in transformers; the checkpoints have 4).

    Rotary position embeddings with period base `rope_theta`, per-projection biases (`query_bias`, `key_bias`,
    `value_bias`, `proj_bias`, `mlp_bias`), a gated MLP (`use_gated_mlp`, `intermediate_size` features) and the
    train-mode coordinate augmentations `pos_embed_shift`, `pos_embed_jitter`, `pos_embed_rescale` (None: off;
    transformers' default rescale is 2.0, so train mode augments unless it is set to None). `return_class_token`,
    which transformers reads with `getattr` and is no field of its config, is kept the same way: written to
    `config.json` only when given.
    """

    model_type = "dinov3_vit"
    defaults: ClassVar[dict] = {
        "patch_size": 16,
        "hidden_size": 384,
        "intermediate_size": 1536,
        "num_hidden_layers": 12,
        "num_attention_heads": 6,
        "hidden_act": "gelu",
        "attention_dropout": 0.0,
        "initializer_range": 0.02,
        "layer_norm_eps": 1e-5,
        "rope_theta": 100.0,
        "image_size": 224,
        "num_channels": 3,
        "query_bias": True,
        "key_bias": False,
        "value_bias": True,
        "proj_bias": True,
        "mlp_bias": True,
        "layerscale_value": 1.0,
        "drop_path_rate": 0.0,
        "use_gated_mlp": False,
        "num_register_tokens": 0,
        "pos_embed_shift": None,
        "pos_embed_jitter": None,
        "pos_embed_rescale": 2.0,
        "apply_layernorm": True,
        "reshape_hidden_states": True,
    }
    dropout_fields = ("attention_dropout",)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        if self.num_register_tokens < 0:
            raise ValueError(f"num_register_tokens must be >= 0, got {self.num_register_tokens}")
        if (self.hidden_size // self.num_attention_heads) % 4:
            raise ValueError(f"rotary position embeddings need a head dimension (hidden_size / num_attention_heads = "
                             f"{self.hidden_size // self.num_attention_heads}) divisible by 4")
        if not isinstance(self.return_class_token, bool):
            raise ValueError(f"return_class_token must be True or False, got {self.return_class_token!r}")

    @property
    def return_class_token(self) -> bool:
        """Whether the backbone returns each selected stage's class token (`BackboneOutput.cls_tokens`)."""
        return self.extra.get("return_class_token", False)

    @return_class_token.setter
    def return_class_token(self, value: bool):
        if not isinstance(value, bool):
            raise ValueError(f"return_class_token must be True or False, got {value!r}")
        self.extra["return_class_token"] = value
