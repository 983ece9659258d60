"""transformers' Swin checkpoints (SwinForImageClassification, SwinModel, SwinBackbone, SwinForMaskedImageModeling)
-> SwinBackbone.

Layouts handled:
- prefix: `swin.` (classification, masked image modeling, and transformers 5's in-memory SwinBackbone) or none
  (SwinModel, and SwinBackbone as transformers 4 wrote it and transformers 5 still saves it);
- names: transformers 4's (`attention.self.query/key/value`, `attention.self.relative_position_bias_table`,
  `attention.output.dense`, `intermediate.dense`, `output.dense`), which transformers 5 also writes on save,
  and transformers 5's in-memory ones (`attention.q_proj/k_proj/v_proj`, `attention.o_proj`,
  `attention.relative_position_bias.relative_position_bias_table`, `mlp.fc1`, `mlp.fc2`).

`prepare` runs before the rules: it fuses each block's query/key/value into one `attention.qkv` entry (our (C, 3C)
kernel) and checks any persistent `relative_position_index` buffer against the index we compute (the buffer itself
is then ignored: the index is recomputed). A block lacking one of query/key/value is left unfused, so its other
projections are reported as unexpected and its `attn.qkv` as missing.

MaskFormer's checkpoints hold their Swin as MaskFormerSwinBackbone (`maskformer-swin`), MASKFORMER_SWIN_TABLE: the
same model under `model.`, with a norm for every stage named by index (`hidden_states_norms.0` is stage1's).
MaskFormerSwin differs from Swin only where no checkpoint goes: no `stem` output, and absolute position embeddings
that do not run in torch.

The final `layernorm` of SwinModel, the classifier, and SimMIM's decoder and mask token are ignored.
`hidden_states_norms` that the checkpoint lacks (a classification checkpoint has none; a SwinBackbone checkpoint
only those of the stages it selected) keep weight 1, bias 0 and are reported as newly initialised.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping

import numpy as np

from ..models.swin import relative_position_index
from .rules import CONV_KERNEL, CheckpointMismatchError, Rule, Table, linear_rules, norm_rules

_BLOCK = "encoder.layers.{stage}.blocks.{block}"
_TARGET = "stages.{stage}.blocks.{block}"

# query/key/value of one block, in either naming: group 1 the attention prefix, 2/3 the projection, 4 the tensor.
_QKV = re.compile(r"(.*\.attention\.)(?:self\.(query|key|value)|([qkv])_proj)\.(weight|bias)")
_ROLE = {"query": "q", "key": "k", "value": "v", "q": "q", "k": "k", "v": "v"}


# Where transformers 4 and 5 name a module differently, the 4.x name (what save_pretrained writes) comes first,
# so that export writes it.
_RULES = (
    Rule("embeddings.patch_embeddings.projection.weight", "patch_embed.proj.kernel", CONV_KERNEL),
    Rule("embeddings.patch_embeddings.projection.bias", "patch_embed.proj.bias"),
    *norm_rules("embeddings.norm", "patch_embed.norm"),
    Rule("embeddings.position_embeddings", "absolute_pos_embed"),
    *linear_rules(f"{_BLOCK}.attention.qkv", f"{_TARGET}.attn.qkv"),  # fused by `prepare`
    *linear_rules(f"{_BLOCK}.attention.output.dense", f"{_TARGET}.attn.proj"),
    *linear_rules(f"{_BLOCK}.attention.o_proj", f"{_TARGET}.attn.proj"),
    Rule(f"{_BLOCK}.attention.self.relative_position_bias_table", f"{_TARGET}.attn.relative_position_bias_table"),
    Rule(f"{_BLOCK}.attention.relative_position_bias.relative_position_bias_table",
         f"{_TARGET}.attn.relative_position_bias_table"),
    *norm_rules(f"{_BLOCK}.layernorm_before", f"{_TARGET}.norm1"),
    *norm_rules(f"{_BLOCK}.layernorm_after", f"{_TARGET}.norm2"),
    *linear_rules(f"{_BLOCK}.intermediate.dense", f"{_TARGET}.mlp.fc1"),
    *linear_rules(f"{_BLOCK}.mlp.fc1", f"{_TARGET}.mlp.fc1"),
    *linear_rules(f"{_BLOCK}.output.dense", f"{_TARGET}.mlp.fc2"),
    *linear_rules(f"{_BLOCK}.mlp.fc2", f"{_TARGET}.mlp.fc2"),
    *linear_rules("encoder.layers.{stage}.downsample.reduction", "stages.{stage}.downsample.reduction", bias=False),
    *norm_rules("encoder.layers.{stage}.downsample.norm", "stages.{stage}.downsample.norm"),
    *norm_rules("hidden_states_norms.{stage}", "hidden_states_norms.{stage}"),
)


def check_relative_position_index(key: str, index: np.ndarray) -> None:
    """Raise `CheckpointMismatchError` unless `index` is the relative position index of a square window."""
    index = np.asarray(index)
    tokens = index.shape[0] if index.ndim == 2 else math.isqrt(index.size)
    window = math.isqrt(tokens)
    if index.size != tokens * tokens or window * window != tokens or (index.ndim == 2 and index.shape[1] != tokens):
        raise CheckpointMismatchError(
            f"{key} has shape {tuple(index.shape)}, which is not the relative position index of a square window "
            "((w*w, w*w), or flattened)"
        )
    expected = relative_position_index(window)
    found = index.reshape(tokens, tokens)
    if not np.array_equal(found, expected):
        row, col = (int(i) for i in np.argwhere(found != expected)[0])
        raise CheckpointMismatchError(
            f"{key} does not match the relative position index of a {window}x{window} window that jaxbackbones "
            f"computes: entry ({row}, {col}) is {found[row, col]}, expected {expected[row, col]}. The checkpoint "
            "reads its relative_position_bias_table in another order, so its attention biases would be wrong."
        )


def prepare(state_dict: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Fuse every block's query/key/value into `<attention>.qkv.{weight,bias}`, check relative position indices.

    Returns a new dict (the input is not modified). A group lacking query, key or value is left as it is.
    """
    groups: dict[tuple[str, str], dict[str, str]] = {}
    for key in state_dict:
        match = _QKV.fullmatch(key)
        if match:
            role = _ROLE[match.group(2) or match.group(3)]
            groups.setdefault((match.group(1), match.group(4)), {})[role] = key
        elif key.endswith("relative_position_index"):
            check_relative_position_index(key, state_dict[key])

    fused: dict[str, np.ndarray] = {}
    consumed: set[str] = set()
    for (prefix, tensor), roles in groups.items():
        if set(roles) == {"q", "k", "v"}:
            fused[f"{prefix}qkv.{tensor}"] = np.concatenate([np.asarray(state_dict[roles[r]]) for r in "qkv"], axis=0)
            consumed.update(roles.values())

    output: dict[str, np.ndarray] = {}
    for key, array in state_dict.items():
        if key in consumed:
            match = _QKV.fullmatch(key)
            name = f"{match.group(1)}qkv.{match.group(4)}"
            if name not in output:
                output[name] = fused[name]
        else:
            output[key] = array
    return output


def prepare_group(key: str) -> str | None:
    """`prepare` fuses the query, key and value of one attention: they are prepared together."""
    match = _QKV.fullmatch(key)
    return match.group(1) if match else None


def unprepare(state_dict: dict[str, np.ndarray], config, every_norm: bool = False) -> dict[str, np.ndarray]:
    """Export's inverse of `prepare`: split each fused qkv into query/key/value; keep the per-stage norms of the
    selected stages only, as transformers' SwinBackbone has them (all of them with `every_norm`)."""
    output: dict[str, np.ndarray] = {}
    for key, array in state_dict.items():
        if ".attention.qkv." in key:
            prefix, tensor = key.split(".attention.qkv.")
            for role, part in zip(("query", "key", "value"), np.split(array, 3, axis=0)):
                output[f"{prefix}.attention.self.{role}.{tensor}"] = part
        elif (key.startswith("hidden_states_norms.") and key.split(".")[1] not in config.out_features
              and not every_norm):
            continue
        else:
            output[key] = array
    return output


TABLE = Table(
    rules=_RULES,
    ignore=(
        # Recomputed from the window size (and checked against the checkpoint's by `prepare`).
        r"encoder\.layers\.\d+\.blocks\.\d+\.attention\.(?:self|relative_position_bias)\.relative_position_index",
        # SwinModel's final norm (the backbone normalises each stage itself), the classifier, SimMIM's head.
        r"layernorm\.(?:weight|bias)",
        r"classifier\..*",
        r"embeddings\.mask_token",
        r"decoder\..*",
    ),
    # SwinForImageClassification, SwinForMaskedImageModeling and transformers 5's in-memory SwinBackbone nest the
    # model under `swin.`; SwinModel and saved SwinBackbone checkpoints do not.
    prefixes=("swin.",),
    # transformers initialises the LayerNorms it creates with weight 1, bias 0.
    allow_missing=((r"hidden_states_norms\.[^.]+\.scale", np.ones), (r"hidden_states_norms\.[^.]+\.bias", np.zeros)),
    prepare=prepare,
    prepare_groups=prepare_group,
    unprepare=unprepare,
)


_INDEXED_NORM = re.compile(r"hidden_states_norms\.(\d+)\.(.*)")
_NAMED_NORM = re.compile(r"hidden_states_norms\.stage(\d+)\.(.*)")


def prepare_maskformer_swin(state_dict: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """MaskFormerSwinBackbone's keys as SwinBackbone's: stage norms by name, then `prepare`."""
    renamed = {}
    for key, array in state_dict.items():
        match = _INDEXED_NORM.fullmatch(key)
        renamed[f"hidden_states_norms.stage{int(match.group(1)) + 1}.{match.group(2)}" if match else key] = array
    return prepare(renamed)


def unprepare_maskformer_swin(state_dict: dict[str, np.ndarray], config) -> dict[str, np.ndarray]:
    """Export to MaskFormerSwinBackbone's layout: the model under `model.`, every stage's norm, named by index."""
    output: dict[str, np.ndarray] = {}
    for key, array in unprepare(state_dict, config, every_norm=True).items():
        match = _NAMED_NORM.fullmatch(key)
        if match:
            output[f"hidden_states_norms.{int(match.group(1)) - 1}.{match.group(2)}"] = array
        elif not key.startswith("hidden_states_norms."):  # the stem's: MaskFormerSwin has none
            output["model." + key] = array
    return output


MASKFORMER_SWIN_TABLE = dataclasses.replace(
    TABLE, prefixes=("model.",), prepare=prepare_maskformer_swin, unprepare=unprepare_maskformer_swin,
    # the stem's norm, which MaskFormerSwinBackbone lacks (it has no stem output)
    allow_missing=((r"hidden_states_norms\.stem\.scale", np.ones), (r"hidden_states_norms\.stem\.bias", np.zeros)))
