"""timm's Swin v1 checkpoints (`timm.create_model("swin_tiny_patch4_window7_224").state_dict()`) <-> TimmBackbone.

timm names: `patch_embed.proj` / `patch_embed.norm`; blocks `layers.{i}.blocks.{j}.{norm1, attn.qkv (fused),
attn.proj, attn.relative_position_bias_table, norm2, mlp.fc1, mlp.fc2}`, the same as our state paths under
`stages.{i}.blocks.{j}`. timm merges patches at the START of a stage (`layers.{i}.downsample`, i >= 1, runs before
stage i's blocks), our SwinStage at the END of the previous one, so `layers.{i}.downsample` is
`stages.{i-1}.downsample`, one rule per stage index. Checkpoints of older timm versions and of the original
repository merge at the end (`layers.0.downsample` present): `prepare` moves them to the current layout, as timm's
`checkpoint_filter_fn` does.

transformers' TimmBackbone saves timm's features_only model under `_backbone.`, whose flattened stages are named
`layers_{i}`; `prepare` reads those names too.

Buffers: `relative_position_index` (persistent in older timm) is checked against the index jaxbackbones computes,
then ignored; `attn_mask` is ignored (recomputed per input size). timm's final `norm` and the classifier `head` are
not part of the backbone and are ignored; export writes them as placeholders (norm weight 1, bias 0; a zero
`head.fc` of the checkpoint's `num_classes`) so that timm's strict loading accepts the folder.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np

from .hf_swin import check_relative_position_index
from .rules import CONV_KERNEL, Rule, Table, identity_norm, linear_rules, norm_rules, zero_linear

MAX_STAGES = 8  # the downsample re-indexing is spelled out per stage; timm's Swins have 4 stages

_BLOCK = "layers.{stage}.blocks.{block}"
_TARGET = "stages.{stage}.blocks.{block}"


_RULES = (
    Rule("patch_embed.proj.weight", "patch_embed.proj.kernel", CONV_KERNEL),
    Rule("patch_embed.proj.bias", "patch_embed.proj.bias"),
    *norm_rules("patch_embed.norm", "patch_embed.norm"),
    *norm_rules(f"{_BLOCK}.norm1", f"{_TARGET}.norm1"),
    *linear_rules(f"{_BLOCK}.attn.qkv", f"{_TARGET}.attn.qkv"),
    *linear_rules(f"{_BLOCK}.attn.proj", f"{_TARGET}.attn.proj"),
    Rule(f"{_BLOCK}.attn.relative_position_bias_table", f"{_TARGET}.attn.relative_position_bias_table"),
    *norm_rules(f"{_BLOCK}.norm2", f"{_TARGET}.norm2"),
    *linear_rules(f"{_BLOCK}.mlp.fc1", f"{_TARGET}.mlp.fc1"),
    *linear_rules(f"{_BLOCK}.mlp.fc2", f"{_TARGET}.mlp.fc2"),
    *(rule for stage in range(1, MAX_STAGES + 1) for rule in (
        *norm_rules(f"layers.{stage}.downsample.norm", f"stages.{stage - 1}.downsample.norm"),
        *linear_rules(f"layers.{stage}.downsample.reduction", f"stages.{stage - 1}.downsample.reduction", bias=False),
    )),
)

_OLD_DOWNSAMPLE = re.compile(r"layers\.(\d+)\.downsample\.")
_FEATURE_NET_STAGE = re.compile(r"^layers_(\d+)\.")
_DOWNSAMPLE = re.compile(r"^(?:_backbone\.)?layers[._]\d+\.downsample\.")


def prepare(state_dict: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Read transformers' TimmBackbone names; check `relative_position_index` buffers; move an end-of-stage patch
    merging to the next stage's start."""
    state_dict = {_FEATURE_NET_STAGE.sub(r"layers.\1.", key.removeprefix("_backbone.")): array
                  for key, array in state_dict.items()}
    for key, array in state_dict.items():
        if key.endswith("relative_position_index"):
            check_relative_position_index(key, array)
    if "layers.0.downsample.reduction.weight" not in state_dict:
        return state_dict
    return {_OLD_DOWNSAMPLE.sub(lambda m: f"layers.{int(m.group(1)) + 1}.downsample.", key): array
            for key, array in state_dict.items()}


def prepare_group(key: str) -> str | None:
    """Whether the patch merging moves depends on every stage's `downsample` keys: they are prepared together;
    `prepare` renames and checks every other key on its own."""
    return "downsample" if _DOWNSAMPLE.search(key) else None


def unprepare(state_dict: dict[str, np.ndarray], config) -> dict[str, np.ndarray]:
    """Export: timm's final norm (identity) and a zero classifier of `config.num_classes` outputs (none for 0)."""
    dtype = state_dict["patch_embed.norm.weight"].dtype
    features = config.timm_spec.num_features[-1]
    identity_norm(state_dict, "norm", features, dtype)
    if config.num_classes > 0:
        zero_linear(state_dict, "head.fc", features, config.num_classes, dtype)
    return state_dict


TABLE = Table(
    rules=_RULES,
    ignore=(
        # Recomputed from the window size (checked against the checkpoint's by `prepare`) and per input size.
        r"layers\.\d+\.blocks\.\d+\.attn\.relative_position_index",
        r"layers\.\d+\.blocks\.\d+\.attn_mask",
        # The final norm feeds the classifier only (timm's features are the raw stage outputs), and the classifier.
        r"norm\.(?:weight|bias)",
        r"head\..*",
    ),
    prepare=prepare,
    prepare_groups=prepare_group,
    unprepare=unprepare,
)


def table_for(config) -> Table:
    """The table of a TimmBackboneConfig's Swin (one for every Swin)."""
    return TABLE
