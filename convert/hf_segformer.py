"""transformers' SegFormer checkpoints (SegformerModel, SegformerForImageClassification, the encoder of
SegformerForSemanticSegmentation: nvidia/mit-b*, nvidia/segformer-b*) <-> PvtV2Backbone.

Two sets of names, both accepted:
- the hub's, which transformers 5 still writes on `save_pretrained` (its conversion_mapping.py renames them on load
  and back on save): `encoder.patch_embeddings.{i}.{proj, layer_norm}`, blocks `encoder.block.{i}.{j}.{layer_norm_1,
  attention.self.{query, key, value, sr, layer_norm}, attention.output.dense, layer_norm_2, mlp.{dense1,
  dwconv.dwconv, dense2}}`, the stage norms `encoder.layer_norm.{i}`. Export writes these.
- transformers 5's in-memory names (a `state_dict()`): `stages.{i}.patch_embeddings.{proj, layer_norm}`, blocks
  `stages.{i}.blocks.{j}.{layernorm_before, attention.{q_proj, k_proj, v_proj, o_proj, sequence_reduction.
  {sequence_reduction, layer_norm}}, layernorm_after, mlp.{fc1, dwconv.dwconv, fc2}}`, `stages.{i}.layer_norm`.
The classification and segmentation models nest the encoder under `segformer.`. `prepare` fuses each attention's key
and value into our (C, 2C) `attn.kv` (keys first); export splits them again. Ignored: the classifier and the
decode head.
"""

from __future__ import annotations

from .hf_pvt_v2 import kv_fusion, kv_prepare, kv_unprepare
from .rules import Table, conv_rules, fused_groups, linear_rules, norm_rules

_TARGET = "stages.{stage}.blocks.{block}"
_HUB = "encoder.block.{stage}.{block}"
_MEMORY = "stages.{stage}.blocks.{block}"
_HUB_FUSION = kv_fusion("attention.self", "key|value", "kv")
_MEMORY_FUSION = kv_fusion("attention", "k_proj|v_proj", "kv_proj")

TABLE = Table(
    rules=(
        # the hub's names (what export writes: the first rule of a path)
        *conv_rules("encoder.patch_embeddings.{stage}.proj", "stages.{stage}.patch_embed.proj"),
        *norm_rules("encoder.patch_embeddings.{stage}.layer_norm", "stages.{stage}.patch_embed.norm"),
        *norm_rules(f"{_HUB}.layer_norm_1", f"{_TARGET}.norm1"),
        *linear_rules(f"{_HUB}.attention.self.query", f"{_TARGET}.attn.q"),
        *linear_rules(f"{_HUB}.attention.self.kv", f"{_TARGET}.attn.kv"),  # fused by `prepare`
        *conv_rules(f"{_HUB}.attention.self.sr", f"{_TARGET}.attn.sr"),
        *norm_rules(f"{_HUB}.attention.self.layer_norm", f"{_TARGET}.attn.norm"),
        *linear_rules(f"{_HUB}.attention.output.dense", f"{_TARGET}.attn.proj"),
        *norm_rules(f"{_HUB}.layer_norm_2", f"{_TARGET}.norm2"),
        *linear_rules(f"{_HUB}.mlp.dense1", f"{_TARGET}.mlp.fc1"),
        *conv_rules(f"{_HUB}.mlp.dwconv.dwconv", f"{_TARGET}.mlp.dwconv"),
        *linear_rules(f"{_HUB}.mlp.dense2", f"{_TARGET}.mlp.fc2"),
        *norm_rules("encoder.layer_norm.{stage}", "stages.{stage}.norm"),
        # transformers 5's in-memory names
        *conv_rules("stages.{stage}.patch_embeddings.proj", "stages.{stage}.patch_embed.proj"),
        *norm_rules("stages.{stage}.patch_embeddings.layer_norm", "stages.{stage}.patch_embed.norm"),
        *norm_rules(f"{_MEMORY}.layernorm_before", f"{_TARGET}.norm1"),
        *linear_rules(f"{_MEMORY}.attention.q_proj", f"{_TARGET}.attn.q"),
        *linear_rules(f"{_MEMORY}.attention.kv_proj", f"{_TARGET}.attn.kv"),  # fused by `prepare`
        *conv_rules(f"{_MEMORY}.attention.sequence_reduction.sequence_reduction", f"{_TARGET}.attn.sr"),
        *norm_rules(f"{_MEMORY}.attention.sequence_reduction.layer_norm", f"{_TARGET}.attn.norm"),
        *linear_rules(f"{_MEMORY}.attention.o_proj", f"{_TARGET}.attn.proj"),
        *norm_rules(f"{_MEMORY}.layernorm_after", f"{_TARGET}.norm2"),
        *linear_rules(f"{_MEMORY}.mlp.fc1", f"{_TARGET}.mlp.fc1"),
        *conv_rules(f"{_MEMORY}.mlp.dwconv.dwconv", f"{_TARGET}.mlp.dwconv"),
        *linear_rules(f"{_MEMORY}.mlp.fc2", f"{_TARGET}.mlp.fc2"),
        *norm_rules("stages.{stage}.layer_norm", "stages.{stage}.norm"),
    ),
    ignore=(r"classifier\..*", r"decode_head\..*"),
    prefixes=("segformer.",),
    prepare=kv_prepare(_HUB_FUSION, _MEMORY_FUSION),
    prepare_groups=fused_groups(_HUB_FUSION, _MEMORY_FUSION),
    unprepare=kv_unprepare("attention.self.kv", "attention.self.key", "attention.self.value"),
)
