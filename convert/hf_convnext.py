"""transformers' ConvNeXt checkpoints <-> ConvNextBackbone: ConvNeXt v1 and V2 (ConvNext(V2)ForImageClassification,
ConvNext(V2)Model, ConvNext(V2)Backbone) and DINOv3-ConvNeXt (DINOv3ConvNextModel, DINOv3ConvNextBackbone).

v1/V2 names: `embeddings.patch_embeddings` + `embeddings.layernorm` (the stem), `encoder.stages.{i}.downsampling_layer.
{0: LayerNorm, 1: conv}`, blocks `encoder.stages.{i}.layers.{j}.{dwconv, layernorm, pwconv1, grn, pwconv2,
layer_scale_parameter}`, `hidden_states_norms.{stage}`. The classification model nests them under `convnext.` /
`convnextv2.`; ConvNext(V2)Model and the backbone do not. V2's GRN `weight` and `bias` are (1, 1, 1, C) tensors, ours
(C,). The names have not changed between transformers 4 and 5.

DINOv3 names: `stages.{i}.downsample_layers.{...}` (stage 0: 0 the patch convolution, 1 its LayerNorm, our stem;
later stages: 0 the LayerNorm, 1 the convolution) and blocks `stages.{i}.layers.{j}.{depthwise_conv, layer_norm,
pointwise_conv1, pointwise_conv2, gamma}`. That is what the hub holds and what transformers 5 writes on save; in
memory transformers 5 nests them under `model.` (stripped here).

Ignored: the final norm of the Model classes (`layernorm` / `layer_norm`: the backbone does not pool) and the
classifier. `hidden_states_norms` a checkpoint lacks (a classification checkpoint has none; a backbone checkpoint only
those of the stages it selected) keep weight 1, bias 0, as transformers initialises them, and are reported as newly
initialised; export writes those of the selected stages, as transformers' backbone has them.
"""

from __future__ import annotations

import numpy as np

from .rules import Rule, Table, Transform, conv_rules, linear_rules, norm_rules

# transformers' GRN weight and bias (1, 1, 1, C) <-> ours (C,).
GRN_VECTOR = Transform(lambda array: array.reshape(array.shape[-1:]), lambda array: array.reshape(1, 1, 1, -1))


_LAYER = "encoder.stages.{stage}.layers.{block}"
_BLOCK = "stages.{stage}.blocks.{block}"


def _unselected_norms_dropped(state_dict: dict[str, np.ndarray], config) -> dict[str, np.ndarray]:
    """Export: keep the `hidden_states_norms` of the selected stages only, as transformers' backbone has them."""
    return {key: array for key, array in state_dict.items()
            if not key.startswith("hidden_states_norms.") or key.split(".")[1] in config.out_features}


TABLE = Table(
    rules=(
        *conv_rules("embeddings.patch_embeddings", "stem.convs.0"),
        *norm_rules("embeddings.layernorm", "stem.norm"),
        *norm_rules("encoder.stages.{stage}.downsampling_layer.0", "stages.{stage}.downsample.norm"),
        *conv_rules("encoder.stages.{stage}.downsampling_layer.1", "stages.{stage}.downsample.conv"),
        *conv_rules(f"{_LAYER}.dwconv", f"{_BLOCK}.conv_dw"),
        *norm_rules(f"{_LAYER}.layernorm", f"{_BLOCK}.norm"),
        *linear_rules(f"{_LAYER}.pwconv1", f"{_BLOCK}.mlp.fc1"),
        Rule(f"{_LAYER}.grn.weight", f"{_BLOCK}.mlp.grn.weight", GRN_VECTOR),
        Rule(f"{_LAYER}.grn.bias", f"{_BLOCK}.mlp.grn.bias", GRN_VECTOR),
        *linear_rules(f"{_LAYER}.pwconv2", f"{_BLOCK}.mlp.fc2"),
        Rule(f"{_LAYER}.layer_scale_parameter", f"{_BLOCK}.layer_scale.gamma"),
        *norm_rules("hidden_states_norms.{stage}", "hidden_states_norms.{stage}"),
    ),
    ignore=(r"layernorm\.(?:weight|bias)", r"classifier\..*"),
    # ConvNextForImageClassification / ConvNextV2ForImageClassification nest the model; the others do not.
    prefixes=("convnext.", "convnextv2."),
    # transformers initialises the LayerNorms it creates with weight 1, bias 0.
    allow_missing=((r"hidden_states_norms\.[^.]+\.scale", np.ones), (r"hidden_states_norms\.[^.]+\.bias", np.zeros)),
    unprepare=_unselected_norms_dropped,
)

_DINOV3_LAYER = "stages.{stage}.layers.{block}"

# Stage 0's downsample_layers are the stem; the literal rules come first so that the stage-generic ones never see them.
DINOV3_TABLE = Table(
    rules=(
        *conv_rules("stages.0.downsample_layers.0", "stem.convs.0"),
        *norm_rules("stages.0.downsample_layers.1", "stem.norm"),
        *norm_rules("stages.{stage}.downsample_layers.0", "stages.{stage}.downsample.norm"),
        *conv_rules("stages.{stage}.downsample_layers.1", "stages.{stage}.downsample.conv"),
        *conv_rules(f"{_DINOV3_LAYER}.depthwise_conv", f"{_BLOCK}.conv_dw"),
        *norm_rules(f"{_DINOV3_LAYER}.layer_norm", f"{_BLOCK}.norm"),
        *linear_rules(f"{_DINOV3_LAYER}.pointwise_conv1", f"{_BLOCK}.mlp.fc1"),
        *linear_rules(f"{_DINOV3_LAYER}.pointwise_conv2", f"{_BLOCK}.mlp.fc2"),
        Rule(f"{_DINOV3_LAYER}.gamma", f"{_BLOCK}.layer_scale.gamma"),
    ),
    ignore=(r"layer_norm\.(?:weight|bias)",),  # DINOv3ConvNextModel's final norm
    prefixes=("model.",),  # transformers 5's in-memory names
)
