"""timm's Hiera and HieraDet checkpoints (`timm.create_model("hiera_tiny_224" / "sam2_hiera_tiny").state_dict()`, as
the hub and `save_for_hf` store them) <-> TimmBackbone.

timm names: `patch_embed.proj`, `pos_embed` (Hiera: (1, N, C), or with `abs_win_pos_embed` (1, C, 16, 16) plus
`pos_embed_win`; HieraDet: (1, C, 7, 7) plus `pos_embed_window`), blocks `blocks.{i}.{norm1, proj, attn.{qkv, proj},
ls1.gamma, norm2, mlp.{fc1, fc2}, ls2.gamma}`: ours under `trunk.`. The classifier head (`head.norm`, `head.fc`) is
not part of the backbone and is ignored; export writes it as a placeholder (norm weight 1, bias 0; a zero `head.fc`
of the checkpoint's `num_classes`) so that timm's strict loading accepts the folder. transformers' TimmBackbone saves
timm's features_only model (a FeatureGetterNet) under `_backbone.model.`; those names read too.
"""

from __future__ import annotations

import numpy as np

from .rules import Rule, Table, conv_rules, identity_norm, linear_rules, norm_rules, zero_linear

_BLOCK = "blocks.{block}"
_TARGET = "trunk.blocks.{block}"


def unprepare(state_dict: dict[str, np.ndarray], config) -> dict[str, np.ndarray]:
    width, dtype = config.timm_spec.num_features[-1], state_dict["patch_embed.proj.weight"].dtype
    identity_norm(state_dict, "head.norm", width, dtype)
    if config.num_classes > 0:
        zero_linear(state_dict, "head.fc", width, config.num_classes, dtype)
    return state_dict


TABLE = Table(
    rules=(
        *conv_rules("patch_embed.proj", "trunk.patch_embed.proj"),
        *(Rule(name, f"trunk.{name}") for name in ("pos_embed", "pos_embed_win", "pos_embed_window")),
        *norm_rules(f"{_BLOCK}.norm1", f"{_TARGET}.norm1"),
        *linear_rules(f"{_BLOCK}.proj", f"{_TARGET}.proj"),
        *linear_rules(f"{_BLOCK}.attn.qkv", f"{_TARGET}.attn.qkv"),
        *linear_rules(f"{_BLOCK}.attn.proj", f"{_TARGET}.attn.proj"),
        Rule(f"{_BLOCK}.ls1.gamma", f"{_TARGET}.ls1.gamma"),
        *norm_rules(f"{_BLOCK}.norm2", f"{_TARGET}.norm2"),
        *linear_rules(f"{_BLOCK}.mlp.fc1", f"{_TARGET}.mlp.fc1"),
        *linear_rules(f"{_BLOCK}.mlp.fc2", f"{_TARGET}.mlp.fc2"),
        Rule(f"{_BLOCK}.ls2.gamma", f"{_TARGET}.ls2.gamma"),
    ),
    ignore=(r"head\..*",),
    prefixes=("_backbone.model.",),
    unprepare=unprepare,
)


def table_for(config) -> Table:
    """The table of a TimmBackboneConfig's Hiera or HieraDet (one layout for every variant)."""
    return TABLE
