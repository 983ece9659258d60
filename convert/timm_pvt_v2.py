"""timm's PVTv2 checkpoints (`timm.create_model("pvt_v2_b0").state_dict()`, as the hub and `save_for_hf` store them)
<-> TimmBackbone.

timm names: `patch_embed.{proj, norm}` (the first stage's patch embedding), `stages.{i}.downsample.{proj, norm}`
(the others'), blocks `stages.{i}.blocks.{j}.{norm1, attn.{q, kv, sr, norm, proj}, norm2, mlp.{fc1, dwconv, fc2}}`
(key and value already fused, keys first, as ours), `stages.{i}.norm`. The classifier `head` is not part of the
backbone and is ignored; export writes it as a zero placeholder of the checkpoint's `num_classes` so that timm's
strict loading accepts the folder. transformers' TimmBackbone saves timm's features_only model under `_backbone.`,
its stages flattened to `stages_{i}`; `prepare` reads those names too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np

from .rules import Table, conv_rules, each_key_alone, linear_rules, norm_rules, zero_linear

_BLOCK = "stages.{stage}.blocks.{block}"
_FEATURE_NET_NAME = re.compile(r"^stages_(\d+)\.")


def prepare(state_dict: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Read transformers' TimmBackbone names (`_backbone.stages_0.norm.weight` -> `stages.0.norm.weight`)."""
    return {_FEATURE_NET_NAME.sub(r"stages.\1.", key.removeprefix("_backbone.")): array
            for key, array in state_dict.items()}


def unprepare(state_dict: dict[str, np.ndarray], config) -> dict[str, np.ndarray]:
    """Export: timm's classifier as a zero placeholder (see the module docstring)."""
    if config.num_classes > 0:
        zero_linear(state_dict, "head", config.timm_spec.embed_dims[-1], config.num_classes,
                    state_dict["patch_embed.proj.weight"].dtype)
    return state_dict


TABLE = Table(
    rules=(
        *conv_rules("patch_embed.proj", "stages.0.patch_embed.proj"),
        *norm_rules("patch_embed.norm", "stages.0.patch_embed.norm"),
        *conv_rules("stages.{stage}.downsample.proj", "stages.{stage}.patch_embed.proj"),
        *norm_rules("stages.{stage}.downsample.norm", "stages.{stage}.patch_embed.norm"),
        *norm_rules(f"{_BLOCK}.norm1", f"{_BLOCK}.norm1"),
        *linear_rules(f"{_BLOCK}.attn.q", f"{_BLOCK}.attn.q"),
        *linear_rules(f"{_BLOCK}.attn.kv", f"{_BLOCK}.attn.kv"),
        *conv_rules(f"{_BLOCK}.attn.sr", f"{_BLOCK}.attn.sr"),
        *norm_rules(f"{_BLOCK}.attn.norm", f"{_BLOCK}.attn.norm"),
        *linear_rules(f"{_BLOCK}.attn.proj", f"{_BLOCK}.attn.proj"),
        *norm_rules(f"{_BLOCK}.norm2", f"{_BLOCK}.norm2"),
        *linear_rules(f"{_BLOCK}.mlp.fc1", f"{_BLOCK}.mlp.fc1"),
        *conv_rules(f"{_BLOCK}.mlp.dwconv", f"{_BLOCK}.mlp.dwconv"),
        *linear_rules(f"{_BLOCK}.mlp.fc2", f"{_BLOCK}.mlp.fc2"),
        *norm_rules("stages.{stage}.norm", "stages.{stage}.norm"),
    ),
    ignore=(r"head\..*",),
    prepare=prepare,
    prepare_groups=each_key_alone,
    unprepare=unprepare,
)


def table_for(config) -> Table:
    """The table of a TimmBackboneConfig's PVTv2 (one layout for every variant)."""
    return TABLE
