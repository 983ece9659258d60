"""transformers' ResNet checkpoints (ResNetForImageClassification, ResNetModel, ResNetBackbone) <-> ResNetBackbone."""

from .rules import CONV_KERNEL, Rule, Table, add_num_batches_tracked

_BATCH_NORM = [("weight", "scale"), ("bias", "bias"), ("running_mean", "mean"), ("running_var", "var")]


def conv_bn_rules(torch_prefix: str, conv_target: str, bn_target: str) -> list[Rule]:
    """transformers' `{convolution, normalization}` pair (conv without bias, BatchNorm) <-> our conv and BatchNorm."""
    rules = [Rule(f"{torch_prefix}.convolution.weight", f"{conv_target}.kernel", CONV_KERNEL)]
    rules += [Rule(f"{torch_prefix}.normalization.{name}", f"{bn_target}.{target}") for name, target in _BATCH_NORM]
    return rules


_LAYER = "encoder.stages.{stage}.layers.{block}"
_BLOCK = "stages.{stage}.blocks.{block}"

TABLE = Table(
    rules=(
        *conv_bn_rules("embedder.embedder", "stem.conv", "stem.bn"),
        *conv_bn_rules(f"{_LAYER}.shortcut", f"{_BLOCK}.shortcut.conv", f"{_BLOCK}.shortcut.bn"),
        *conv_bn_rules(f"{_LAYER}.layer.{{conv}}", f"{_BLOCK}.convs.{{conv}}", f"{_BLOCK}.bns.{{conv}}"),
    ),
    ignore=(
        # torch counts BatchNorm updates; our momentum is fixed, so the count carries no information.
        r".*\.num_batches_tracked",
        # The classification head of ResNetForImageClassification has no place in a backbone.
        r"classifier\..*",
    ),
    # ResNetForImageClassification nests the model under `resnet.`; ResNetModel and ResNetBackbone do not.
    prefixes=("resnet.",),
    unprepare=add_num_batches_tracked,
)
