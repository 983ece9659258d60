"""timm's SAM ViT checkpoints (`VisionTransformerSAM`) <-> TimmBackbone.

timm names are our state paths: `patch_embed.proj`, `pos_embed` (1, gh, gw, C), `blocks.{i}.{norm1, attn.qkv,
attn.proj, attn.rel_pos_h, attn.rel_pos_w, norm2, mlp.fc1, mlp.fc2}`. The `neck` (1x1 conv, LayerNorm2d, 3x3 conv,
LayerNorm2d; `samvit_base_patch16_224`: one LayerNorm2d) and the classifier `head` feed timm's pooled output only
(features_only maps are the raw block outputs) and are ignored; export writes them as placeholders (zero convolutions,
identity norms, a zero head of the checkpoint's `num_classes`) so that timm's strict loading accepts the folder.
transformers' TimmBackbone prefixes (`_backbone.model.`, `model.`) are stripped.
"""

from __future__ import annotations

import numpy as np

from .rules import CONV_KERNEL, Rule, Table, identity_norm, linear_rules, norm_rules, zero_linear

_BLOCK = "blocks.{block}"


def _unprepare(state_dict, config):
    spec = config.timm_spec
    dtype = state_dict["patch_embed.proj.weight"].dtype
    channels = spec.neck_chans or spec.embed_dim
    if spec.neck_chans:
        state_dict["neck.0.weight"] = np.zeros((channels, spec.embed_dim, 1, 1), dtype)
        identity_norm(state_dict, "neck.1", channels, dtype)
        state_dict["neck.2.weight"] = np.zeros((channels, channels, 3, 3), dtype)
        identity_norm(state_dict, "neck.3", channels, dtype)
    else:
        identity_norm(state_dict, "neck", channels, dtype)
    if config.num_classes > 0:
        zero_linear(state_dict, "head.fc", channels, config.num_classes, dtype)
    return state_dict


TABLE = Table(
    rules=(
        Rule("patch_embed.proj.weight", "patch_embed.proj.kernel", CONV_KERNEL),
        Rule("patch_embed.proj.bias", "patch_embed.proj.bias"),
        Rule("pos_embed", "pos_embed"),
        *norm_rules(f"{_BLOCK}.norm1", f"{_BLOCK}.norm1"),
        *linear_rules(f"{_BLOCK}.attn.qkv", f"{_BLOCK}.attn.qkv"),
        *linear_rules(f"{_BLOCK}.attn.proj", f"{_BLOCK}.attn.proj"),
        Rule(f"{_BLOCK}.attn.rel_pos_h", f"{_BLOCK}.attn.rel_pos_h"),
        Rule(f"{_BLOCK}.attn.rel_pos_w", f"{_BLOCK}.attn.rel_pos_w"),
        *norm_rules(f"{_BLOCK}.norm2", f"{_BLOCK}.norm2"),
        *linear_rules(f"{_BLOCK}.mlp.fc1", f"{_BLOCK}.mlp.fc1"),
        *linear_rules(f"{_BLOCK}.mlp.fc2", f"{_BLOCK}.mlp.fc2"),
    ),
    ignore=(r"neck\..*", r"head\..*"),
    prefixes=("_backbone.model.", "model."),
    unprepare=_unprepare,
)


def table_for(config) -> Table:
    return TABLE
