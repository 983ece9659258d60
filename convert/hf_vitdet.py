"""transformers' ViTDet checkpoints (`VitDetBackbone`, `VitDetModel`; ViTMatte's backbone under `backbone.`, read
through `heads.HEADS["vitmatte"]`) <-> VitDetBackbone.

Names: `embeddings.projection`, `embeddings.position_embeddings` (1, 1 + gh * gw, C: a class token position first),
`encoder.layer.{i}.{norm1, attention.qkv, attention.proj, attention.rel_pos_h, attention.rel_pos_w, norm2, mlp.fc1,
mlp.fc2}` and the bottleneck `encoder.layer.{i}.residual.{conv1, norm1, conv2, norm2, conv3, norm3}` (convolutions
without bias, channel LayerNorms). Every tensor maps one to one; nothing is ignored.
"""

from __future__ import annotations

from .rules import CONV_KERNEL, Rule, Table, linear_rules, norm_rules

_LAYER, _BLOCK = "encoder.layer.{block}", "blocks.{block}"

TABLE = Table(
    rules=(
        Rule("embeddings.projection.weight", "patch_embed.proj.kernel", CONV_KERNEL),
        Rule("embeddings.projection.bias", "patch_embed.proj.bias"),
        Rule("embeddings.position_embeddings", "pos_embed"),
        *norm_rules(f"{_LAYER}.norm1", f"{_BLOCK}.norm1"),
        *linear_rules(f"{_LAYER}.attention.qkv", f"{_BLOCK}.attn.qkv"),
        *linear_rules(f"{_LAYER}.attention.proj", f"{_BLOCK}.attn.proj"),
        Rule(f"{_LAYER}.attention.rel_pos_h", f"{_BLOCK}.attn.rel_pos_h"),
        Rule(f"{_LAYER}.attention.rel_pos_w", f"{_BLOCK}.attn.rel_pos_w"),
        *norm_rules(f"{_LAYER}.norm2", f"{_BLOCK}.norm2"),
        *linear_rules(f"{_LAYER}.mlp.fc1", f"{_BLOCK}.mlp.fc1"),
        *linear_rules(f"{_LAYER}.mlp.fc2", f"{_BLOCK}.mlp.fc2"),
        *(Rule(f"{_LAYER}.residual.conv{i}.weight", f"{_BLOCK}.residual.conv{i}.kernel", CONV_KERNEL)
          for i in (1, 2, 3)),
        *(rule for i in (1, 2, 3) for rule in norm_rules(f"{_LAYER}.residual.norm{i}", f"{_BLOCK}.residual.norm{i}")),
    ),
    prefixes=("vitdet.",),
)
