"""timm's ViT checkpoints (`VisionTransformer`: plain ViTs, DINOv2, DINOv2 with registers; `Eva`: DINOv3) <->
TimmBackbone.

timm names are nearly our state paths: `patch_embed.proj`, `cls_token`, `reg_token`, `pos_embed`,
`blocks.{i}.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}`. The differences:
- `VisionTransformer` keeps one fused `attn.qkv.bias`; ours are `attn.q_bias`, `k_bias`, `v_bias` (`prepare` splits
  it, export joins it); its layer scale is `ls1.gamma` / `ls2.gamma`, as ours.
- `Eva` has `attn.q_bias` and `attn.v_bias` (its `k_bias` is a zero, non-persistent buffer), layer scale
  `gamma_1` / `gamma_2`, and, for the SwiGLU of the "plus" and 7B DINOv3 models (`swiglu_align_to`), separate
  `mlp.fc1_g` (gate) and `mlp.fc1_x` (value), which `prepare` fuses into our `mlp.fc1` ([gate | value], as timm's
  packed `SwiGLUPacked` / `GluMlp` store it).

The final `norm` / `fc_norm` and the classifier `head` feed the classification head only (features_only maps are
the raw block outputs) and are ignored; export writes them as placeholders (norm weight 1, bias 0; a zero head of
the checkpoint's `num_classes`), where timm's model for the config has them, so that timm's strict loading accepts
the folder. transformers' TimmBackbone saves timm's features_only model (`FeatureGetterNet`, which holds the model as
`model`) under `_backbone.`; both prefixes are stripped.
"""

from __future__ import annotations

import functools
import re


from .rules import (
    CONV_KERNEL,
    Rule,
    Table,
    each_key_alone,
    fuse_parts,
    fused_groups,
    identity_norm,
    linear_rules,
    norm_rules,
    split_parts,
    zero_linear,
)

_BLOCK, _TARGET = "blocks.{block}", "blocks.{block}"
_QKV_BIASES = re.compile(r"(?P<attn>.*\.attn)\.(?P<part>[qkv])_bias")
_SWIGLU = re.compile(r"(?P<block>.*\.mlp)\.(?P<part>fc1_g|fc1_x)\.(?P<tensor>weight|bias)")


def _common_rules(gamma: tuple[str, str]) -> list[Rule]:
    return [
        Rule("patch_embed.proj.weight", "patch_embed.proj.kernel", CONV_KERNEL),
        Rule("patch_embed.proj.bias", "patch_embed.proj.bias"),
        Rule("cls_token", "cls_token"),
        Rule("reg_token", "reg_token"),
        Rule("pos_embed", "pos_embed"),
        *norm_rules(f"{_BLOCK}.norm1", f"{_TARGET}.norm1"),
        *linear_rules(f"{_BLOCK}.attn.qkv", f"{_TARGET}.attn.qkv", bias=False),
        *(Rule(f"{_BLOCK}.attn.{role}_bias", f"{_TARGET}.attn.{role}_bias") for role in "qkv"),
        *linear_rules(f"{_BLOCK}.attn.proj", f"{_TARGET}.attn.proj"),
        Rule(f"{_BLOCK}.{gamma[0]}", f"{_TARGET}.ls1.gamma"),
        *norm_rules(f"{_BLOCK}.norm2", f"{_TARGET}.norm2"),
        *linear_rules(f"{_BLOCK}.mlp.fc1", f"{_TARGET}.mlp.fc1"),
        *linear_rules(f"{_BLOCK}.mlp.fc2", f"{_TARGET}.mlp.fc2"),
        Rule(f"{_BLOCK}.{gamma[1]}", f"{_TARGET}.ls2.gamma"),
    ]


_IGNORE = (r"(?:fc_)?norm\.(?:weight|bias)", r"head\..*")
_PREFIXES = ("_backbone.model.", "model.")


def _split_qkv_bias(state_dict):
    """`attn.qkv.bias` -> `attn.q_bias`, `attn.k_bias`, `attn.v_bias`."""
    return split_parts(state_dict, "attn.qkv.bias", ("attn.q_bias", "attn.k_bias", "attn.v_bias"))


def _join_qkv_bias(state_dict):
    return fuse_parts(state_dict, _QKV_BIASES, {"q": 0, "k": 1, "v": 2},
                      lambda match: f"{match.group('attn')}.qkv.bias")


def _swiglu_name(match: re.Match) -> str:
    return f"{match.group('block')}.fc1.{match.group('tensor')}"


def _fuse_swiglu(state_dict):
    return fuse_parts(state_dict, _SWIGLU, {"fc1_g": 0, "fc1_x": 1}, _swiglu_name)


def _head_placeholders(state_dict, config, *, norm: bool, fc_norm: bool):
    """timm's final norm (or fc_norm) as identity, and a zero classifier of `config.num_classes` outputs."""
    dtype = state_dict["patch_embed.proj.weight"].dtype
    features = config.timm_spec.embed_dim
    for name, present in (("norm", norm), ("fc_norm", fc_norm)):
        if present:
            identity_norm(state_dict, name, features, dtype)
    if config.num_classes > 0:
        zero_linear(state_dict, "head", features, config.num_classes, dtype)
    return state_dict


def _vit_unprepare(state_dict, config):
    """Export: one qkv bias per block; timm's final norm / fc_norm (as `VisionTransformer` chooses them from
    `global_pool`, `fc_norm`, `final_norm`) and head as placeholders."""
    args = config.entrypoint_args
    global_pool = args.get("global_pool", "token")
    use_fc_norm = global_pool in ("avg", "avgmax", "max") if args.get("fc_norm") is None else args["fc_norm"]
    final_norm = args.get("final_norm", True)
    return _head_placeholders(_join_qkv_bias(state_dict), config, norm=final_norm and not use_fc_norm,
                              fc_norm=final_norm and use_fc_norm)


def _eva_unprepare(state_dict, config):
    """Export: separate SwiGLU projections where timm keeps them; the final norm / fc_norm (as `Eva` chooses them
    from `global_pool`, `use_fc_norm`, `use_post_transformer_norm`) and head as placeholders."""
    spec, args = config.timm_spec, config.entrypoint_args
    if spec.swiglu_mlp and spec.swiglu_align_to:
        state_dict = split_parts(state_dict, ".mlp.fc1.", (".mlp.fc1_g.", ".mlp.fc1_x."))
    use_fc_norm = args.get("global_pool", "avg") == "avg" if args.get("use_fc_norm") is None else args["use_fc_norm"]
    post_norm = args.get("use_post_transformer_norm")
    post_norm = not use_fc_norm if post_norm is None else post_norm
    return _head_placeholders(state_dict, config, norm=post_norm, fc_norm=use_fc_norm)


VIT_TABLE = Table(
    rules=tuple(_common_rules(("ls1.gamma", "ls2.gamma"))),
    ignore=_IGNORE,
    prefixes=_PREFIXES,
    prepare=_split_qkv_bias,
    prepare_groups=each_key_alone,
    unprepare=_vit_unprepare,
)


@functools.lru_cache(maxsize=None)
def eva_table(split_swiglu: bool) -> Table:
    """The table of timm's DINOv3 (`Eva`), with a packed or a split (`fc1_g`, `fc1_x`) SwiGLU."""
    return Table(
        rules=tuple(_common_rules(("gamma_1", "gamma_2"))),
        ignore=_IGNORE,
        prefixes=_PREFIXES,
        prepare=_fuse_swiglu if split_swiglu else None,
        prepare_groups=fused_groups((_SWIGLU, _swiglu_name)) if split_swiglu else None,
        unprepare=_eva_unprepare,
    )


def table_for(config) -> Table:
    """The table of a TimmBackboneConfig's ViT or Eva."""
    spec = config.timm_spec
    if spec.family == "eva":
        return eva_table(bool(spec.swiglu_mlp and spec.swiglu_align_to))
    return VIT_TABLE
