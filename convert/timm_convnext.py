"""timm's ConvNeXt / ConvNeXt V2 checkpoints (`timm.create_model("convnext_tiny").state_dict()`, as the hub and
`save_for_hf` store them) <-> TimmBackbone.

timm names: the stem `stem.{0: conv, 1: LayerNorm}` (overlapping stems: `stem.{0, 1: convs, 2: LayerNorm}`, or with
`overlap_act` `stem.{0: conv, 2: conv, 3: LayerNorm}`); `stages.{i}.downsample.{0: LayerNorm, 1: conv}`; blocks
`stages.{i}.blocks.{j}.{conv_dw, norm, mlp.fc1, mlp.grn, mlp.fc2, gamma}`, the same names as our state paths. With
`conv_mlp` the MLP's fc1/fc2 are 1x1 convolutions, (out, in, 1, 1) tensors; the stem therefore and the MLP shapes make
the table depend on the architecture: `table(stem_type, conv_mlp)`.

The head (`head.norm`, `head.pre_logits.fc`, `head.fc`) and `norm_pre` (`head_norm_first`) are not part of the
backbone and are ignored; export writes them as placeholders (norms weight 1, bias 0; zero linear layers of the
checkpoint's `num_classes` and `head_hidden_size`) so that timm's strict loading accepts the folder.
transformers' TimmBackbone saves timm's features_only model under `_backbone.`, whose flattened modules are named
`stem_{k}` and `stages_{i}`; `prepare` reads those names too.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping

import numpy as np

from .rules import (
    Rule,
    Table,
    Transform,
    conv_rules,
    each_key_alone,
    identity_norm,
    linear_rules,
    norm_rules,
    zero_linear,
)

# A 1x1 convolution (out, in, 1, 1) <-> an NNX Linear kernel (in, out).
POINTWISE_CONV_KERNEL = Transform(lambda array: array.reshape(array.shape[:2]).T,
                                  lambda array: array.T[:, :, None, None])
# The conv and norm positions in timm's `stem` Sequential, per stem_type.
STEM_LAYOUTS = {"patch": ((0,), 1), "overlap": ((0, 1), 2), "overlap_tiered": ((0, 1), 2), "overlap_act": ((0, 2), 3)}

_BLOCK = "stages.{stage}.blocks.{block}"


def _rules(stem_type: str, conv_mlp: bool) -> tuple[Rule, ...]:
    convs, norm = STEM_LAYOUTS[stem_type]
    rules = [rule for i, index in enumerate(convs) for rule in conv_rules(f"stem.{index}", f"stem.convs.{i}")]
    rules += norm_rules(f"stem.{norm}", "stem.norm")
    rules += norm_rules("stages.{stage}.downsample.0", "stages.{stage}.downsample.norm")
    rules += conv_rules("stages.{stage}.downsample.1", "stages.{stage}.downsample.conv")
    rules += conv_rules(f"{_BLOCK}.conv_dw", f"{_BLOCK}.conv_dw")
    rules += norm_rules(f"{_BLOCK}.norm", f"{_BLOCK}.norm")
    for fc in ("fc1", "fc2"):
        if conv_mlp:
            rules += [Rule(f"{_BLOCK}.mlp.{fc}.weight", f"{_BLOCK}.mlp.{fc}.kernel", POINTWISE_CONV_KERNEL),
                      Rule(f"{_BLOCK}.mlp.{fc}.bias", f"{_BLOCK}.mlp.{fc}.bias")]
        else:
            rules += linear_rules(f"{_BLOCK}.mlp.{fc}", f"{_BLOCK}.mlp.{fc}")
    rules += [Rule(f"{_BLOCK}.mlp.grn.{name}", f"{_BLOCK}.mlp.grn.{name}") for name in ("weight", "bias")]
    rules.append(Rule(f"{_BLOCK}.gamma", f"{_BLOCK}.layer_scale.gamma"))
    return tuple(rules)


_FEATURE_NET_NAME = re.compile(r"^(stem|stages)_(\d+)\.")


def prepare(state_dict: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Read transformers' TimmBackbone names (`_backbone.stem_0.weight` -> `stem.0.weight`)."""
    return {_FEATURE_NET_NAME.sub(r"\1.\2.", key.removeprefix("_backbone.")): array
            for key, array in state_dict.items()}


def unprepare(state_dict: dict[str, np.ndarray], config) -> dict[str, np.ndarray]:
    """Export: timm's head as placeholders (see the module docstring)."""
    spec = config.timm_spec
    dtype = state_dict["stem.0.weight"].dtype
    features = spec.dims[-1]
    norm = "norm_pre" if spec.head_norm_first else "head.norm"
    identity_norm(state_dict, norm, features, dtype)
    if spec.head_hidden_size and not spec.head_norm_first:
        zero_linear(state_dict, "head.pre_logits.fc", features, spec.head_hidden_size, dtype)
        features = spec.head_hidden_size
    if config.num_classes > 0:
        zero_linear(state_dict, "head.fc", features, config.num_classes, dtype)
    return state_dict


@functools.lru_cache(maxsize=None)
def table(stem_type: str, conv_mlp: bool) -> Table:
    """The table of timm ConvNeXts with this stem and MLP layout."""
    return Table(
        rules=_rules(stem_type, conv_mlp),
        # The head's norm and layers (and norm_pre) feed the classifier only.
        ignore=(r"head\..*", r"norm_pre\.(?:weight|bias)"),
        prepare=prepare,
        prepare_groups=each_key_alone,
        unprepare=unprepare,
    )


def table_for(config) -> Table:
    """The table of a TimmBackboneConfig's ConvNeXt."""
    spec = config.timm_spec
    return table(spec.stem_type, spec.conv_mlp)
