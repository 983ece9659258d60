"""transformers' HGNetV2 checkpoints (HGNetV2ForImageClassification, HGNetV2Backbone) <-> HGNetV2Backbone.

transformers names a conv layer `{convolution, normalization, lab}` where our ConvBNAct has `{conv, bn, lab}`; the
stem is `embedder.stem{1,2a,2b,3,4}` (ours `stem.*`), the stages `encoder.stages.{i}` (ours `stages.{i}`), with the
same `downsample`, `blocks.{j}.layers.{k}[.conv1|.conv2]` and `aggregation.{0,1}` below. Neither class nests the
model under a prefix; the classifier (`fc`) is not part of a backbone.
"""

from .rules import CONV_KERNEL, Rule, Table, add_num_batches_tracked

_BATCH_NORM = [("weight", "scale"), ("bias", "bias"), ("running_mean", "mean"), ("running_var", "var")]


def _conv_layers(torch_root: str, target_root: str) -> list[Rule]:
    torch_layer, target = f"{torch_root}.{{layer*}}", f"{target_root}.{{layer*}}"
    rules = [Rule(f"{torch_layer}.convolution.weight", f"{target}.conv.kernel", CONV_KERNEL)]
    rules += [Rule(f"{torch_layer}.normalization.{name}", f"{target}.bn.{field}") for name, field in _BATCH_NORM]
    rules += [Rule(f"{torch_layer}.lab.{name}", f"{target}.lab.{name}") for name in ("scale", "bias")]
    return rules


TABLE = Table(
    rules=(*_conv_layers("embedder", "stem"), *_conv_layers("encoder.stages", "stages")),
    ignore=(
        # torch counts BatchNorm updates; our momentum is fixed, so the count carries no information.
        r".*\.num_batches_tracked",
        # HGNetV2ForImageClassification's classifier.
        r"fc\.(?:weight|bias)",
    ),
    unprepare=add_num_batches_tracked,
)
