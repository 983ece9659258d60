"""transformers' Hiera checkpoints (HieraBackbone, HieraModel, HieraForImageClassification, HieraForPreTraining:
facebook/hiera-*-224-hf and the MAE repos) <-> HieraBackbone.

Names: `embeddings.position_embeddings`, `embeddings.patch_embeddings.projection`, blocks
`encoder.stages.{s}.layers.{j}.{layernorm_before, proj, attn.{qkv, proj}, layernorm_after, mlp.{fc1, fc2}}` (ours are
numbered across stages: `trunk.blocks.{i}`, so the table is built from the config's depths), the backbone's per-stage
`hidden_states_norms.{stem, stage1, ...}`. The classification and pre-training models nest the model under `hiera.`;
their pooler norm, classifier, MAE decoder, fusion heads and encoder norm are not part of the backbone and are
ignored. A checkpoint without `hidden_states_norms` (all but HieraBackbone's) gets them at weight 1, bias 0, as
transformers initialises them; export writes those of the selected stages, as HieraBackbone has them.
"""

from __future__ import annotations

import numpy as np

from .rules import Rule, Table, conv_rules, linear_rules, norm_rules

_BLOCK_PARTS = (("layernorm_before", "norm1", norm_rules), ("layernorm_after", "norm2", norm_rules),
                ("attn.qkv", "attn.qkv", linear_rules), ("attn.proj", "attn.proj", linear_rules),
                ("mlp.fc1", "mlp.fc1", linear_rules), ("mlp.fc2", "mlp.fc2", linear_rules),
                ("proj", "proj", linear_rules))


def block_rules(depths) -> list[Rule]:
    """`encoder.stages.{s}.layers.{j}` <-> `trunk.blocks.{i}`, i counting blocks across stages."""
    rules, index = [], 0
    for stage, depth in enumerate(depths):
        for layer in range(depth):
            for theirs, ours, make in _BLOCK_PARTS:
                rules += make(f"encoder.stages.{stage}.layers.{layer}.{theirs}", f"trunk.blocks.{index}.{ours}")
            index += 1
    return rules


def unprepare(state_dict: dict[str, np.ndarray], config) -> dict[str, np.ndarray]:
    """Export: the per-stage norms of the selected stages only, as HieraBackbone has them."""
    return {key: array for key, array in state_dict.items()
            if not key.startswith("hidden_states_norms.") or key.split(".")[1] in config.out_features}


def table_for(config) -> Table:
    return Table(
        rules=(
            Rule("embeddings.position_embeddings", "trunk.pos_embed"),
            *conv_rules("embeddings.patch_embeddings.projection", "trunk.patch_embed.proj"),
            *block_rules(config.depths),
            *norm_rules("hidden_states_norms.{stage}", "hidden_states_norms.{stage}"),
        ),
        ignore=(r"pooler\..*", r"classifier\..*", r"decoder\..*", r"multiscale_fusion\..*", r"encoder_norm\..*"),
        prefixes=("hiera.",),
        allow_missing=((r"hidden_states_norms\.[^.]+\.scale", np.ones),
                       (r"hidden_states_norms\.[^.]+\.bias", np.zeros)),
        unprepare=unprepare,
    )
