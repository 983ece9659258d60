"""transformers' ResNet checkpoints (ResNetForImageClassification, ResNetModel, ResNetBackbone) -> ResNetBackbone."""

from .rules import Rule, conv_kernel

# ResNetForImageClassification nests the model under `resnet.`; ResNetModel and ResNetBackbone do not.
_PREFIX = r"(?:resnet\.)?"
_BATCH_NORM = [("weight", "scale"), ("bias", "bias"), ("running_mean", "mean"), ("running_var", "var")]


def _conv_bn(torch_prefix: str, conv_target: str, bn_target: str) -> list[Rule]:
    rules = [Rule(_PREFIX + torch_prefix + r"\.convolution\.weight", conv_target + ".kernel", conv_kernel)]
    rules += [
        Rule(_PREFIX + torch_prefix + rf"\.normalization\.{name}", f"{bn_target}.{target}")
        for name, target in _BATCH_NORM
    ]
    return rules


_LAYER = r"encoder\.stages\.(\d+)\.layers\.(\d+)"

RULES = [
    *_conv_bn(r"embedder\.embedder", "stem.conv", "stem.bn"),
    *_conv_bn(_LAYER + r"\.shortcut", r"stages.\1.blocks.\2.shortcut.conv", r"stages.\1.blocks.\2.shortcut.bn"),
    *_conv_bn(_LAYER + r"\.layer\.(\d+)", r"stages.\1.blocks.\2.convs.\3", r"stages.\1.blocks.\2.bns.\3"),
    # torch counts BatchNorm updates; our momentum is fixed, so the count carries no information.
    Rule(r".*\.num_batches_tracked", None),
    # The classification head of ResNetForImageClassification has no place in a backbone.
    Rule(r"classifier\..*", None),
]
