"""transformers' SAM checkpoints (`SamModel`: facebook/sam-vit-base, -large, -huge; `SamVisionModel`) <-> the SAM
vision backbone.

The image encoder sits under `vision_encoder.` in both: `patch_embed.projection`, `pos_embed` (1, gh, gw, C),
`layers.{i}.{layer_norm1, attn.qkv, attn.proj, attn.rel_pos_h, attn.rel_pos_w, layer_norm2, mlp.lin1, mlp.lin2}`,
`neck.{conv1, layer_norm1, conv2, layer_norm2}` (convolutions without bias). A bare `SamVisionEncoder` state dict (no
prefix) reads too; export writes the `vision_encoder.` names. SamModel's prompt encoder, mask decoder and
`shared_image_embedding` are not the backbone's: ignored on load (reported), not written on export (transformers
initialises them when it loads the exported folder as a SamModel).
"""

from __future__ import annotations

from .rules import CONV_KERNEL, Rule, Table, linear_rules, norm_rules


def _rules(prefix: str) -> list[Rule]:
    layer, block = prefix + "layers.{block}", "blocks.{block}"
    return [
        Rule(f"{prefix}patch_embed.projection.weight", "patch_embed.proj.kernel", CONV_KERNEL),
        Rule(f"{prefix}patch_embed.projection.bias", "patch_embed.proj.bias"),
        Rule(f"{prefix}pos_embed", "pos_embed"),
        *norm_rules(f"{layer}.layer_norm1", f"{block}.norm1"),
        *linear_rules(f"{layer}.attn.qkv", f"{block}.attn.qkv"),
        *linear_rules(f"{layer}.attn.proj", f"{block}.attn.proj"),
        Rule(f"{layer}.attn.rel_pos_h", f"{block}.attn.rel_pos_h"),
        Rule(f"{layer}.attn.rel_pos_w", f"{block}.attn.rel_pos_w"),
        *norm_rules(f"{layer}.layer_norm2", f"{block}.norm2"),
        *linear_rules(f"{layer}.mlp.lin1", f"{block}.mlp.fc1"),
        *linear_rules(f"{layer}.mlp.lin2", f"{block}.mlp.fc2"),
        Rule(f"{prefix}neck.conv1.weight", "neck.conv1.kernel", CONV_KERNEL),
        *norm_rules(f"{prefix}neck.layer_norm1", "neck.norm1"),
        Rule(f"{prefix}neck.conv2.weight", "neck.conv2.kernel", CONV_KERNEL),
        *norm_rules(f"{prefix}neck.layer_norm2", "neck.norm2"),
    ]


TABLE = Table(
    rules=(*_rules("vision_encoder."), *_rules("")),
    ignore=(r"(?:shared_image_embedding|prompt_encoder|mask_decoder)\..*",),
)
