"""transformers' DINOv2, DINOv2-with-registers and DINOv3-ViT checkpoints <-> the ViT backbones.

DINOv2 and DINOv2 with registers (`Dinov2Model`, `Dinov2Backbone`, `Dinov2ForImageClassification`, and the
`WithRegisters` ones):
- prefix `dinov2.` / `dinov2_with_registers.` (classification) or none;
- names: transformers 4's (`attention.attention.query/key/value`, `attention.output.dense`, the SwiGLU's fused
  `mlp.weights_in` / `mlp.weights_out`), which the hub checkpoints have and transformers 5 writes on save, and
  transformers 5's in-memory ones (`attention.q_proj/k_proj/v_proj/o_proj`, `mlp.gate_proj/up_proj/down_proj`).

DINOv3 (`DINOv3ViTModel`, `DINOv3ViTBackbone`): blocks under `layer.{i}` as saved (and on the hub), `model.layer.{i}`
in memory (transformers 5 nests the encoder; the prefix `model.` is stripped); `attention.q_proj/k_proj/v_proj/o_proj`
with per-projection biases; `mlp.up_proj/down_proj`, gated: `mlp.gate_proj/up_proj/down_proj`.

`prepare` fuses q/k/v weights into our (C, 3C) `attn.qkv` kernel (their biases stay apart: `attn.q_bias` ...), and a
gated MLP's gate and up projections into `mlp.fc1` ([gate | up]); export splits them again. The mask token (for
masked-image pretraining; the backbone does not take `bool_masked_pos`) and a classifier are ignored; export writes
the mask token as transformers initialises it (zeros). A DINOv3 `rope_embeddings.inv_freq` buffer is ignored:
it is computed from `rope_theta`, and transformers does not load it either.
"""

from __future__ import annotations

import functools
import re

import numpy as np

from .rules import (
    CONV_KERNEL,
    Rule,
    Table,
    fuse_parts,
    fused_groups,
    linear_rules,
    norm_rules,
    split_parts,
)

_QKV_ROLES = {"query": 0, "key": 1, "value": 2, "q_proj": 0, "k_proj": 1, "v_proj": 2}
_GATE_ROLES = {"gate_proj": 0, "up_proj": 1}


def _block_rules(block: str, *, proj: tuple[str, ...], biases: tuple[tuple[str, str, str], ...],
                 mlp: tuple[tuple[str, str], ...]) -> list[Rule]:
    """The rules of one transformer block: `proj` the names of the attention output projection, `biases` the
    (q, k, v) names of the biases, `mlp` (torch name, our fc1/fc2) pairs. Where two names map to one path, the
    first is what export writes."""
    target = "blocks.{block}"
    rules = [
        *norm_rules(f"{block}.norm1", f"{target}.norm1"),
        *linear_rules(f"{block}.attention.qkv", f"{target}.attn.qkv", bias=False),  # fused by `prepare`
        *(rule for name in proj for rule in linear_rules(f"{block}.attention.{name}", f"{target}.attn.proj")),
        *(Rule(f"{block}.attention.{name}.bias", f"{target}.attn.{role}_bias")
          for names in biases for role, name in zip("qkv", names)),
        Rule(f"{block}.layer_scale1.lambda1", f"{target}.ls1.gamma"),
        *norm_rules(f"{block}.norm2", f"{target}.norm2"),
        *(rule for name, ours in mlp for rule in linear_rules(f"{block}.mlp.{name}", f"{target}.mlp.{ours}")),
        Rule(f"{block}.layer_scale2.lambda1", f"{target}.ls2.gamma"),
    ]
    return rules


def _fusions(block: str, mlp_fused: str):
    """The (pattern, fused name) pairs of `fuse_parts`: each block's q/k/v weights into `<block>.attention.qkv.weight`,
    a gated MLP's gate and up projections into `<block>.mlp.<mlp_fused>.{weight,bias}` (`block`: the regex of a
    block's key prefix, any wrapper before)."""
    qkv = re.compile(rf"(?P<block>(?:.*\.)?{block})\.attention\.(?:attention\.)?(?P<part>query|key|value|[qkv]_proj)"
                     r"\.weight")
    gate = re.compile(rf"(?P<block>(?:.*\.)?{block})\.mlp\.(?P<part>gate_proj|up_proj)\.(?P<tensor>weight|bias)")
    return ((qkv, lambda match: f"{match.group('block')}.attention.qkv.weight"),
            (gate, lambda match: f"{match.group('block')}.mlp.{mlp_fused}.{match.group('tensor')}"))


def _prepare(state_dict, fusions):
    """Fuse q/k/v and gate/up (`_fusions`); drop an empty `register_tokens` (transformers keeps a (1, 0, C)
    parameter when there are no registers)."""
    state_dict = {key: array for key, array in state_dict.items()
                  if not (key.endswith("embeddings.register_tokens") and np.size(array) == 0)}
    (qkv, qkv_name), (gate, gate_name) = fusions
    return fuse_parts(fuse_parts(state_dict, qkv, _QKV_ROLES, qkv_name), gate, _GATE_ROLES, gate_name)


# ---------------------------------------------------------------------------------------------------------------
# DINOv2 (with or without registers)


_DINOV2_FUSIONS = _fusions(r"encoder\.layer\.\d+", "weights_in")


def _dinov2_prepare(state_dict):
    return _prepare(state_dict, _DINOV2_FUSIONS)


def _dinov2_unprepare(state_dict, config):
    state_dict = split_parts(state_dict, "attention.qkv.weight",
                             ("attention.attention.query.weight", "attention.attention.key.weight",
                              "attention.attention.value.weight"))
    if getattr(config, "use_mask_token", True):  # the registers model always has one
        state_dict["embeddings.mask_token"] = np.zeros((1, config.hidden_size),
                                                       state_dict["embeddings.cls_token"].dtype)
    return _empty_registers(state_dict, config)


def _empty_registers(state_dict, config):
    """transformers' (1, 0, C) register tokens of a model without registers (a registers model or DINOv3)."""
    if getattr(config, "num_register_tokens", None) == 0:
        state_dict["embeddings.register_tokens"] = np.zeros((1, 0, config.hidden_size),
                                                            state_dict["embeddings.cls_token"].dtype)
    return state_dict


@functools.lru_cache(maxsize=None)
def dinov2_table(gated: bool) -> Table:
    """The table of DINOv2 checkpoints (with or without registers) with a plain or a SwiGLU MLP."""
    # the SwiGLU's saved names, then transformers 5's in-memory down projection (gate and up are fused by prepare)
    mlp = (("weights_in", "fc1"), ("weights_out", "fc2"), ("down_proj", "fc2")) if gated else \
        (("fc1", "fc1"), ("fc2", "fc2"))
    rules = [
        Rule("embeddings.patch_embeddings.projection.weight", "patch_embed.proj.kernel", CONV_KERNEL),
        Rule("embeddings.patch_embeddings.projection.bias", "patch_embed.proj.bias"),
        Rule("embeddings.cls_token", "cls_token"),
        Rule("embeddings.register_tokens", "reg_token"),
        Rule("embeddings.position_embeddings", "pos_embed"),
        *_block_rules("encoder.layer.{block}", proj=("output.dense", "o_proj"), mlp=mlp,
                      biases=(("attention.query", "attention.key", "attention.value"), ("q_proj", "k_proj", "v_proj"))),
        *norm_rules("layernorm", "norm"),
    ]
    return Table(
        rules=tuple(rules),
        ignore=(r"embeddings\.mask_token", r"classifier\..*"),
        prefixes=("dinov2_with_registers.", "dinov2."),
        prepare=_dinov2_prepare,
        prepare_groups=fused_groups(*_DINOV2_FUSIONS),
        unprepare=_dinov2_unprepare,
    )


def dinov2_table_for(config) -> Table:
    return dinov2_table(bool(config.use_swiglu_ffn))


# ---------------------------------------------------------------------------------------------------------------
# DINOv3


_DINOV3_FUSIONS = _fusions(r"layer\.\d+", "gate_up")


def _dinov3_prepare(state_dict):
    return _prepare(state_dict, _DINOV3_FUSIONS)


def _dinov3_unprepare(state_dict, config):
    state_dict = split_parts(state_dict, "attention.qkv.weight",
                             ("attention.q_proj.weight", "attention.k_proj.weight", "attention.v_proj.weight"))
    state_dict = split_parts(state_dict, "mlp.gate_up.", ("mlp.gate_proj.", "mlp.up_proj."))
    state_dict["embeddings.mask_token"] = np.zeros((1, 1, config.hidden_size),
                                                   state_dict["embeddings.cls_token"].dtype)
    return _empty_registers(state_dict, config)


@functools.lru_cache(maxsize=None)
def dinov3_table(gated: bool) -> Table:
    """The table of DINOv3 ViT checkpoints with a plain or a gated MLP."""
    mlp = (("gate_up", "fc1"), ("down_proj", "fc2")) if gated else (("up_proj", "fc1"), ("down_proj", "fc2"))
    rules = [
        Rule("embeddings.patch_embeddings.weight", "patch_embed.proj.kernel", CONV_KERNEL),
        Rule("embeddings.patch_embeddings.bias", "patch_embed.proj.bias"),
        Rule("embeddings.cls_token", "cls_token"),
        Rule("embeddings.register_tokens", "reg_token"),
        *_block_rules("layer.{block}", proj=("o_proj",), biases=(("q_proj", "k_proj", "v_proj"),), mlp=mlp),
        *norm_rules("norm", "norm"),
    ]
    return Table(
        rules=tuple(rules),
        ignore=(r"embeddings\.mask_token", r"rope_embeddings\.inv_freq"),
        prefixes=("model.",),
        prepare=_dinov3_prepare,
        prepare_groups=fused_groups(*_DINOV3_FUSIONS),
        unprepare=_dinov3_unprepare,
    )


def dinov3_table_for(config) -> Table:
    return dinov3_table(bool(config.use_gated_mlp))
