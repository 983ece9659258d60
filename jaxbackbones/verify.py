"""`jaxbackbones convert --verify`: the converted model against the torch reference, stage by stage."""

from __future__ import annotations

import importlib
import sys

import numpy as np

FLOAT32_BOUND = 1e-5


def verify(source: str, revision: str | None, converted_dir, *, rtol: float = FLOAT32_BOUND) -> int:
    """Print max abs / relative difference per stage on a random input; 0 if every stage is within `rtol`.

    Parameters stored in bfloat16 are compared against the reference with its parameters rounded the same way,
    so the float32 bound still applies. The reference is transformers' backbone class, or, for a timm checkpoint,
    `timm.create_model(arch, features_only=True, out_indices=<all>, pretrained_cfg_overlay=dict(file=<weights>))`.
    """
    import jax
    import jax.numpy as jnp

    from . import AutoBackbone, AutoConfig, checkpoint, heads, hub

    config = AutoConfig.from_pretrained(converted_dir)
    timm_source = config.model_type == "timm_backbone"  # timm's hub layout, or transformers' TimmWrapper
    library = "timm" if timm_source else "transformers"
    try:
        import torch

        importlib.import_module(library)
    except ImportError:
        print(f"--verify runs the torch reference: pip install torch {library}", file=sys.stderr)
        return 2

    jax.config.update("jax_default_matmul_precision", "highest")
    stages = list(range(len(config.stage_names)))
    # The reference library reads the source's weight files itself: they pass jaxbackbones' checks first.
    weights = hub.resolve_weight_files(source, revision=revision)
    head = heads.HEADS.get(hub.load_config_dict(source, revision=revision).get("model_type"))
    if head is not None and head.wraps_timm:  # TimmWrapper: timm's model itself, its weights unwrapped
        ours = AutoBackbone.from_pretrained(converted_dir, out_indices=stages)
        reference = _timm_wrapper_reference(ours, source, revision, stages)
    elif head is not None:  # the head's backbone, its stages as the head selects them
        ours = AutoBackbone.from_pretrained(converted_dir)
        reference = _head_reference(source, revision, head)
    else:
        ours = AutoBackbone.from_pretrained(converted_dir, out_indices=stages)
        reference = (_timm_reference(ours, source, weights, stages) if timm_source
                     else _transformers_reference(ours, source, revision, stages))
    if "bfloat16" in hub.load_config_dict(converted_dir)[checkpoint.NATIVE_KEY]["param_dtype"]:
        with torch.no_grad():
            for parameter in reference.parameters():
                parameter.copy_(parameter.to(torch.bfloat16).float())

    channels = ours.config.num_channels
    height, width = getattr(ours.config, "input_size", (224, 224))
    pixels = np.random.default_rng(0).standard_normal((2, channels, height, width)).astype(np.float32)
    # A family without a transformers backbone (SegFormer) is compared with its model's hidden states.
    backbone = timm_source or head is not None or _has_transformers_backbone(config.model_type)
    with torch.no_grad():
        expected = reference(torch.from_numpy(pixels), **({} if backbone else {"output_hidden_states": True}))
    if isinstance(expected, (list, tuple)):  # timm returns a list of maps, NHWC for its Swin
        nhwc = getattr(reference, "output_fmt", "NCHW") == "NHWC"
        expected = [m.permute(0, 3, 1, 2) if nhwc else m for m in expected]
    else:
        expected = expected.feature_maps if backbone else expected.hidden_states
    expected = [m.float().numpy() for m in expected]
    # maps NHWC -> NCHW; token sequences (a ViT with reshape_hidden_states=False) stay (N, T, C), as the reference's
    actual = [np.asarray(m, dtype=np.float32) for m in ours(jnp.asarray(pixels.transpose(0, 2, 3, 1))).feature_maps]
    actual = [m.transpose(0, 3, 1, 2) if m.ndim == 4 else m for m in actual]

    print(f"{'stage':<10} {'shape (N, C, H, W)':<22} {'max abs diff':>12} {'relative':>10}")
    worst = 0.0
    for name, want, got in zip(ours.out_features, expected, actual):
        diff = float(np.abs(want - got).max())
        relative = diff / max(float(np.abs(want).max()), np.finfo(np.float32).tiny)
        worst = max(worst, relative)
        print(f"{name:<10} {str(want.shape):<22} {diff:>12.3e} {relative:>10.3e}")
    verdict = "OK" if worst <= rtol else "FAILED"
    print(f"{verdict}: worst relative difference {worst:.3e} (bound {rtol:g})")
    return 0 if worst <= rtol else 1


def _transformers_reference(ours, source, revision, stages):
    import transformers

    # transformers' AutoBackbone asks the hub whether the repo exists, which fails offline: name the class instead.
    from transformers.models.auto.modeling_auto import MODEL_FOR_BACKBONE_MAPPING_NAMES

    model_type = ours.config.model_type
    if model_type in ("sam", "sam_vision_model"):  # SAM's image encoder, its neck the last stage
        model_class = getattr(transformers, "SamModel" if model_type == "sam" else "SamVisionModel")
        return _SamEncoderMaps(model_class.from_pretrained(source, revision=revision).vision_encoder.eval())
    if not _has_transformers_backbone(model_type):  # the model class export writes for it (SegformerModel)
        from .auto import FAMILIES

        return getattr(transformers, FAMILIES[model_type].transformers_backbone).from_pretrained(
            source, revision=revision).eval()
    backbone_class = getattr(transformers, MODEL_FOR_BACKBONE_MAPPING_NAMES[model_type])
    return backbone_class.from_pretrained(source, revision=revision, out_indices=stages).eval()


def _SamEncoderMaps(encoder):
    """transformers' `SamVisionEncoder` as a reference of every stage: its hidden states (the embedding and each
    block, NHWC there) and the neck's output, as a list of NCHW maps."""
    import torch

    class SamEncoderMaps(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = encoder

        def forward(self, pixel_values, **_):  # (verify asks a model without a backbone class for hidden states)
            output = self.encoder(pixel_values, output_hidden_states=True)
            return [h.permute(0, 3, 1, 2) for h in output.hidden_states] + [output.last_hidden_state]

    return SamEncoderMaps().eval()


def _head_reference(source, revision, head):
    """The backbone module inside the head model transformers builds for `source` (its config's `architectures`),
    at the first of the head's prefixes that is a module path."""
    import transformers

    head_config = transformers.AutoConfig.from_pretrained(source, revision=revision)
    head_class = getattr(transformers, (head_config.architectures or ["AutoModel"])[0])
    model = head_class.from_pretrained(source, revision=revision).eval()
    modules = dict(model.named_modules())
    path = next((prefix[:-1] for prefix in head.prefixes if prefix[:-1] in modules), None)
    if path is None:
        raise ValueError(f"{source}: {type(model).__name__} has no backbone module at {list(head.prefixes)}")
    return modules[path]


def _has_transformers_backbone(model_type: str) -> bool:
    from transformers.models.auto.modeling_auto import MODEL_FOR_BACKBONE_MAPPING_NAMES

    return model_type in MODEL_FOR_BACKBONE_MAPPING_NAMES


def _timm_reference(ours, source, weights, stages):
    import timm

    if len(weights) != 1:
        raise ValueError(f"{source}: timm checkpoints are one weight file, this one has {len(weights)}")
    config = ours.config
    return timm.create_model(config.backbone, pretrained=True, features_only=True, out_indices=tuple(stages),
                             pretrained_cfg_overlay=dict(file=str(weights[0])),
                             **{**config.model_args, "in_chans": config.num_channels}).eval()


def _timm_wrapper_reference(ours, source, revision, stages):
    """timm's `features_only` model of a TimmWrapper checkpoint, with the weights transformers' TimmWrapperModel
    loads (its `timm_model`'s, the classifier aside)."""
    import timm
    import transformers

    wrapped = transformers.TimmWrapperModel.from_pretrained(source, revision=revision).timm_model.state_dict()
    config = ours.config
    reference = timm.create_model(config.backbone, pretrained=False, features_only=True, out_indices=tuple(stages),
                                  **{**config.model_args, "in_chans": config.num_channels}).eval()
    missing, _ = reference.load_state_dict(wrapped, strict=False)
    if missing:
        raise ValueError(f"{source}: the wrapped timm model lacks {missing[:5]}...")
    return reference
