"""timm's ResNet-family checkpoints (`timm.create_model("resnet50").state_dict()`, as the hub and `save_for_hf` store
them) <-> TimmBackbone.

timm names: stem `conv1` + `bn1` (deep stems: `conv1.{0,1,3,4,6}` = conv, BatchNorm, conv, BatchNorm, conv, the
ReLUs at 2 and 5 hold no weights, then `bn1`); blocks `layer{i}.{j}.conv{k}` / `bn{k}` (both 1-based); the
projection shortcut `downsample.0` (conv) + `downsample.1` (BatchNorm), or, after the average pool of the d/t
variants (`avg_down`), `downsample.1` + `downsample.2`. The two shortcut styles reuse `downsample.1` for different
tensors, and a deep stem's last conv and a plain stem's conv are both our `stem.conv`, so the table depends on the
architecture: `table(deep_stem, avg_down)`. Re-indexing (1-based stages and convolutions) is spelled out as one
rule per index. The classifier (`fc`) and BatchNorm's `num_batches_tracked` are ignored; export writes them back
(the counter as 0, `fc` as a zero placeholder of the checkpoint's `num_classes`, so that timm's strict loading
accepts the folder: the classifier is not part of a backbone). transformers' TimmBackbone saves the same names
under `_backbone.`.
"""

from __future__ import annotations

import functools

import numpy as np

from .rules import Rule, Table, add_num_batches_tracked, conv_rules, zero_linear

MAX_STAGES = 8  # rules are spelled out per stage index; timm's ResNets have 4 stages
_BATCH_NORM = [("weight", "scale"), ("bias", "bias"), ("running_mean", "mean"), ("running_var", "var")]


def _bn(torch_prefix: str, target: str) -> list[Rule]:
    return [Rule(f"{torch_prefix}.{name}", f"{target}.{field}") for name, field in _BATCH_NORM]


def _rules(deep_stem: bool, avg_down: bool) -> tuple[Rule, ...]:
    if deep_stem:
        rules = [*conv_rules("conv1.0", "stem.deep_convs.0", bias=False), *_bn("conv1.1", "stem.deep_bns.0"),
                 *conv_rules("conv1.3", "stem.deep_convs.1", bias=False), *_bn("conv1.4", "stem.deep_bns.1"),
                 *conv_rules("conv1.6", "stem.conv", bias=False)]
    else:
        rules = conv_rules("conv1", "stem.conv", bias=False)
    rules += _bn("bn1", "stem.bn")
    conv, bn = (1, 2) if avg_down else (0, 1)
    for stage in range(1, MAX_STAGES + 1):
        block, target = f"layer{stage}.{{block}}", f"stages.{stage - 1}.blocks.{{block}}"
        for k in (1, 2, 3):
            rules += conv_rules(f"{block}.conv{k}", f"{target}.convs.{k - 1}", bias=False)
            rules += _bn(f"{block}.bn{k}", f"{target}.bns.{k - 1}")
        rules += conv_rules(f"{block}.downsample.{conv}", f"{target}.shortcut.conv", bias=False)
        rules += _bn(f"{block}.downsample.{bn}", f"{target}.shortcut.bn")
    return tuple(rules)


def unprepare(state_dict: dict[str, np.ndarray], config) -> dict[str, np.ndarray]:
    """Export: BatchNorm counters (0), and a zero classifier `fc` of `config.num_classes` outputs (none for 0)."""
    state_dict = add_num_batches_tracked(state_dict)
    if config.num_classes > 0:
        dtype = state_dict["bn1.weight"].dtype
        features = config.timm_spec.num_features[-1]
        zero_linear(state_dict, "fc", features, config.num_classes, dtype)
    return state_dict


@functools.lru_cache(maxsize=None)
def table(deep_stem: bool, avg_down: bool) -> Table:
    """The table of timm ResNets with (or without) a deep stem and an average-pool shortcut."""
    return Table(
        rules=_rules(deep_stem, avg_down),
        ignore=(
            # torch counts BatchNorm updates; our momentum is fixed, so the count carries no information.
            r".*\.num_batches_tracked",
            # The classifier has no place in a backbone.
            r"fc\.(?:weight|bias)",
        ),
        prefixes=("_backbone.",),  # transformers' TimmBackbone
        unprepare=unprepare,
    )


def table_for(config) -> Table:
    """The table of a TimmBackboneConfig's ResNet."""
    spec = config.timm_spec
    return table(spec.deep_stem, spec.avg_down)
