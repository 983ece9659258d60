"""transformers' RT-DETR ResNet-vd checkpoints (RTDetrResNetBackbone, models/rt_detr/modeling_rt_detr_resnet.py) <->
ResNetBackbone with an `RTDetrResNetConfig`.

torch names: the deep stem `embedder.embedder.{0,1,2}` (each `convolution` + `normalization`; the first two are our
`stem.deep_convs` / `stem.deep_bns`, the third `stem.conv` / `stem.bn`); blocks `encoder.stages.{i}.layers.{j}.layer.
{k}` (0-based, as ours). A shortcut is `shortcut.convolution` / `shortcut.normalization`, or, behind the average pool
(an `nn.Sequential(AvgPool2d, RTDetrResNetShortCut)`), `shortcut.1.convolution` / `shortcut.1.normalization`. Which
first blocks pool depends on the architecture (a strided bottleneck; a basic stage that changes channels), so the
table is one per set of pooled stages: `table_for(config)`. BatchNorm's `num_batches_tracked` is ignored (written
back as 0).
"""

from __future__ import annotations

import functools

from .hf_resnet import conv_bn_rules
from .rules import Table, add_num_batches_tracked

_LAYER = "encoder.stages.{stage}.layers.{block}"
_BLOCK = "stages.{stage}.blocks.{block}"


@functools.lru_cache(maxsize=None)
def table(pooled_stages: tuple[int, ...]) -> Table:
    """The table of RT-DETR ResNets whose stages `pooled_stages` (0-based) average-pool their first shortcut."""
    pooled = []
    for stage in pooled_stages:  # spelled out per stage, before the general rule, so that export writes `shortcut.1`
        pooled += conv_bn_rules(f"encoder.stages.{stage}.layers.0.shortcut.1", f"stages.{stage}.blocks.0.shortcut.conv",
                           f"stages.{stage}.blocks.0.shortcut.bn")
    return Table(
        rules=(
            *conv_bn_rules("embedder.embedder.0", "stem.deep_convs.0", "stem.deep_bns.0"),
            *conv_bn_rules("embedder.embedder.1", "stem.deep_convs.1", "stem.deep_bns.1"),
            *conv_bn_rules("embedder.embedder.2", "stem.conv", "stem.bn"),
            *pooled,
            *conv_bn_rules(f"{_LAYER}.shortcut", f"{_BLOCK}.shortcut.conv", f"{_BLOCK}.shortcut.bn"),
            *conv_bn_rules(f"{_LAYER}.layer.{{conv}}", f"{_BLOCK}.convs.{{conv}}", f"{_BLOCK}.bns.{{conv}}"),
        ),
        ignore=(
            # torch counts BatchNorm updates; our momentum is fixed, so the count carries no information.
            r".*\.num_batches_tracked",
        ),
        unprepare=add_num_batches_tracked,
    )


def pooled_stages(config) -> tuple[int, ...]:
    """The stages whose first block average-pools its shortcut (see models/resnet.py's docstring)."""
    in_channels = [config.embedding_size, *config.hidden_sizes[:-1]]
    pooled = []
    for index, (width_in, width_out) in enumerate(zip(in_channels, config.hidden_sizes)):
        stride = 2 if index > 0 or config.downsample_in_first_stage else 1
        if (stride == 2) if config.layer_type == "bottleneck" else (width_in != width_out):
            pooled.append(index)
    return tuple(pooled)


def table_for(config) -> Table:
    """The table of an RTDetrResNetConfig's backbone."""
    return table(pooled_stages(config))
