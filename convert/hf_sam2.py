"""transformers' SAM2 checkpoints (Sam2VideoModel, model_type "sam2_video": the hub's facebook/sam2.1-hiera-*;
Sam2Model, "sam2": facebook/sam2-hiera-tiny-hf) <-> Sam2VisionBackbone, the vision encoder.

Names under `vision_encoder.`: the trunk `backbone.{patch_embed.projection, pos_embed, pos_embed_window}`, blocks
`backbone.blocks.{i}.{layer_norm1, proj, attn.{qkv, proj}, layer_norm2, mlp.{proj_in, proj_out}}` (ours timm's:
norm1, proj, attn, norm2, mlp.fc1, mlp.fc2), the neck `neck.convs.{k}`. Everything else of Sam2Model (the prompt
encoder, mask decoder, `shared_image_embedding`, `no_memory_embedding`, the video model's memory modules) is not
part of the vision encoder and is ignored. Export writes the vision encoder under `vision_encoder.` with the
checkpoint's config: `Sam2Model.from_pretrained` (`Sam2VideoModel`'s) loads it and initialises the rest.
"""

from __future__ import annotations

import numpy as np

from .rules import Rule, Table, conv_rules, linear_rules, norm_rules

_BLOCK = "backbone.blocks.{block}"


def unprepare(state_dict: dict[str, np.ndarray], config) -> dict[str, np.ndarray]:
    return {f"vision_encoder.{key}": array for key, array in state_dict.items()}


TABLE = Table(
    rules=(
        *conv_rules("backbone.patch_embed.projection", "backbone.patch_embed.proj"),
        Rule("backbone.pos_embed", "backbone.pos_embed"),
        Rule("backbone.pos_embed_window", "backbone.pos_embed_window"),
        *norm_rules(f"{_BLOCK}.layer_norm1", f"{_BLOCK}.norm1"),
        *linear_rules(f"{_BLOCK}.proj", f"{_BLOCK}.proj"),
        *linear_rules(f"{_BLOCK}.attn.qkv", f"{_BLOCK}.attn.qkv"),
        *linear_rules(f"{_BLOCK}.attn.proj", f"{_BLOCK}.attn.proj"),
        *norm_rules(f"{_BLOCK}.layer_norm2", f"{_BLOCK}.norm2"),
        *linear_rules(f"{_BLOCK}.mlp.proj_in", f"{_BLOCK}.mlp.fc1"),
        *linear_rules(f"{_BLOCK}.mlp.proj_out", f"{_BLOCK}.mlp.fc2"),
        *conv_rules("neck.convs.{level}", "neck.convs.{level}"),
    ),
    ignore=(r"(?!backbone\.|neck\.).*",),
    prefixes=("vision_encoder.",),
    unprepare=unprepare,
)
