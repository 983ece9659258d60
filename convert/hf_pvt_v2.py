"""transformers' PVTv2 checkpoints (PvtV2Model, PvtV2Backbone, PvtV2ForImageClassification: OpenGVLab/pvt_v2_b*)
<-> PvtV2Backbone.

Names: `encoder.layers.{i}.patch_embedding.{proj, layer_norm}`, blocks `encoder.layers.{i}.blocks.{j}.{layer_norm_1,
attention.{query, key, value, proj, spatial_reduction, layer_norm}, layer_norm_2, mlp.{dense1, dwconv.dwconv,
dense2}}`, the stage norm `encoder.layers.{i}.layer_norm`; the classification model nests them under `pvt_v2.`
(transformers 5 keeps these names in memory and on save: no conversion mapping renames them). `prepare` fuses each
attention's key and value into our (C, 2C) `attn.kv` (keys first); export splits them again. Ignored: the
classifier.
"""

from __future__ import annotations

import re

from .rules import Table, conv_rules, fuse_parts, fused_groups, linear_rules, norm_rules, split_parts

_KV_ROLES = {"key": 0, "value": 1, "k_proj": 0, "v_proj": 1}
_TARGET = "stages.{stage}.blocks.{block}"


def kv_fusion(attention: str, parts: str, fused: str):
    """A (pattern, fused name) pair for `fuse_parts`: the key and value tensors (`parts`, a regex alternative of
    their names) of every `<prefix>.<attention>` into `<prefix>.<attention>.<fused>.{weight, bias}`."""
    pattern = re.compile(rf"(?P<prefix>.*\.){re.escape(attention)}\.(?P<part>{parts})\.(?P<tensor>weight|bias)")
    return pattern, lambda match: f"{match.group('prefix')}{attention}.{fused}.{match.group('tensor')}"


def kv_prepare(*fusions):
    """`Table.prepare` fusing key and value with each of `fusions` (from `kv_fusion`)."""

    def prepare(state_dict):
        for pattern, fused in fusions:
            state_dict = fuse_parts(state_dict, pattern, _KV_ROLES, fused)
        return state_dict

    return prepare


def kv_unprepare(fused: str, key: str, value: str):
    """`Table.unprepare`: split every fused `<...>.<fused>.{weight, bias}` into `key` and `value` again."""

    def unprepare(state_dict, config):
        for tensor in ("weight", "bias"):
            state_dict = split_parts(state_dict, f"{fused}.{tensor}", (f"{key}.{tensor}", f"{value}.{tensor}"))
        return state_dict

    return unprepare


_LAYER = "encoder.layers.{stage}"
_BLOCK = _LAYER + ".blocks.{block}"
_FUSION = kv_fusion("attention", "key|value", "kv")

TABLE = Table(
    rules=(
        *conv_rules(f"{_LAYER}.patch_embedding.proj", "stages.{stage}.patch_embed.proj"),
        *norm_rules(f"{_LAYER}.patch_embedding.layer_norm", "stages.{stage}.patch_embed.norm"),
        *norm_rules(f"{_BLOCK}.layer_norm_1", f"{_TARGET}.norm1"),
        *linear_rules(f"{_BLOCK}.attention.query", f"{_TARGET}.attn.q"),
        *linear_rules(f"{_BLOCK}.attention.kv", f"{_TARGET}.attn.kv"),  # fused by `prepare`
        *linear_rules(f"{_BLOCK}.attention.proj", f"{_TARGET}.attn.proj"),
        *conv_rules(f"{_BLOCK}.attention.spatial_reduction", f"{_TARGET}.attn.sr"),
        *norm_rules(f"{_BLOCK}.attention.layer_norm", f"{_TARGET}.attn.norm"),
        *norm_rules(f"{_BLOCK}.layer_norm_2", f"{_TARGET}.norm2"),
        *linear_rules(f"{_BLOCK}.mlp.dense1", f"{_TARGET}.mlp.fc1"),
        *conv_rules(f"{_BLOCK}.mlp.dwconv.dwconv", f"{_TARGET}.mlp.dwconv"),
        *linear_rules(f"{_BLOCK}.mlp.dense2", f"{_TARGET}.mlp.fc2"),
        *norm_rules(f"{_LAYER}.layer_norm", "stages.{stage}.norm"),
    ),
    ignore=(r"classifier\..*",),
    prefixes=("pvt_v2.",),
    prepare=kv_prepare(_FUSION),
    prepare_groups=fused_groups(_FUSION),
    unprepare=kv_unprepare("attention.kv", "attention.key", "attention.value"),
)
