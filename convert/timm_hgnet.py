"""timm's HGNet / HGNetV2 checkpoints (`timm.create_model("hgnetv2_b4").state_dict()`, as the hub and `save_for_hf`
store them) <-> TimmBackbone.

timm names a conv layer `{conv, bn, lab}`, as our ConvBNAct; the v2 stem `stem.stem{1,2a,2b,3,4}`, the v1 stem
`stem.stem.{k}` (ours `stem.convs.{k}`); stages `stages.{i}.downsample` and `stages.{i}.blocks.{j}.layers.{k}[.conv1|
.conv2]`, `aggregation.{0,1}` (v1: `aggregation.1.conv` is ESE's biased 1x1), the same names as our state paths.
The classifier head (`head.last_conv`, `head.fc`) and BatchNorm's `num_batches_tracked` are ignored; export writes
them back (the counters as 0, the head as zero convolution / linear layers, a LAB of scale 1 and bias 0 with
`use_lab`), so that timm's strict loading accepts the folder. transformers' TimmBackbone saves timm's
features_only model under `_backbone.` with the stages flattened to `stages_{i}`; `prepare` reads those names.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping

import numpy as np

from .rules import CONV_KERNEL, Rule, Table, add_num_batches_tracked, each_key_alone, zero_linear

_BATCH_NORM = [("weight", "scale"), ("bias", "bias"), ("running_mean", "mean"), ("running_var", "var")]


def _conv_layers(torch_root: str, target_root: str) -> list[Rule]:
    torch_layer, target = f"{torch_root}.{{layer*}}", f"{target_root}.{{layer*}}"
    rules = [Rule(f"{torch_layer}.conv.weight", f"{target}.conv.kernel", CONV_KERNEL),
             Rule(f"{torch_layer}.conv.bias", f"{target}.conv.bias")]  # ESE's 1x1 only
    rules += [Rule(f"{torch_layer}.bn.{name}", f"{target}.bn.{field}") for name, field in _BATCH_NORM]
    rules += [Rule(f"{torch_layer}.lab.{name}", f"{target}.lab.{name}") for name in ("scale", "bias")]
    return rules


_FEATURE_NET_NAME = re.compile(r"^stages_(\d+)\.")


def prepare(state_dict: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Read transformers' TimmBackbone names (`_backbone.stages_0.blocks...` -> `stages.0.blocks...`)."""
    return {_FEATURE_NET_NAME.sub(r"stages.\1.", key.removeprefix("_backbone.")): array
            for key, array in state_dict.items()}


def unprepare(state_dict: dict[str, np.ndarray], config) -> dict[str, np.ndarray]:
    """Export: BatchNorm counters, and timm's head as placeholders (see the module docstring)."""
    state_dict = add_num_batches_tracked(state_dict)
    spec = config.timm_spec
    dtype = state_dict["stages.0.blocks.0.aggregation.0.conv.weight"].dtype
    features = spec.num_features[-1]
    if spec.head_hidden_size:
        state_dict["head.last_conv.0.weight"] = np.zeros((spec.head_hidden_size, features, 1, 1), dtype)
        if spec.use_lab:
            state_dict["head.last_conv.2.scale"] = np.ones((1,), dtype)
            state_dict["head.last_conv.2.bias"] = np.zeros((1,), dtype)
        features = spec.head_hidden_size
    if config.num_classes > 0:
        zero_linear(state_dict, "head.fc", features, config.num_classes, dtype)
    return state_dict


@functools.lru_cache(maxsize=None)
def table(stem_type: str) -> Table:
    """The table of timm HGNets with this stem ("v1" or "v2")."""
    stem = (_conv_layers("stem.stem", "stem.convs") if stem_type == "v1" else _conv_layers("stem", "stem"))
    return Table(
        rules=(*stem, *_conv_layers("stages", "stages")),
        ignore=(r".*\.num_batches_tracked", r"head\..*"),
        prepare=prepare,
        prepare_groups=each_key_alone,
        unprepare=unprepare,
    )


def table_for(config) -> Table:
    """The table of a TimmBackboneConfig's HGNet."""
    return table(config.timm_spec.stem_type)
