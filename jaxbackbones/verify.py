"""`jaxbackbones convert --verify`: the converted model against the torch reference, stage by stage."""

from __future__ import annotations

import sys

import numpy as np

FLOAT32_BOUND = 1e-5


def verify(source: str, revision: str | None, converted_dir, *, rtol: float = FLOAT32_BOUND) -> int:
    """Print max abs / relative difference per stage on a random input; 0 if every stage is within `rtol`.

    Parameters stored in bfloat16 are compared against the reference with its parameters rounded the same way,
    so the float32 bound still applies.
    """
    try:
        import torch
        import transformers
    except ImportError:
        print("--verify runs the torch reference: pip install torch transformers", file=sys.stderr)
        return 2
    import jax
    import jax.numpy as jnp

    from . import AutoBackbone, AutoConfig, checkpoint, hub

    jax.config.update("jax_default_matmul_precision", "highest")
    stages = list(range(len(AutoConfig.from_pretrained(converted_dir).stage_names)))
    ours = AutoBackbone.from_pretrained(converted_dir, out_indices=stages)
    # transformers' AutoBackbone asks the hub whether the repo exists, which fails offline: name the class instead.
    from transformers.models.auto.modeling_auto import MODEL_FOR_BACKBONE_MAPPING_NAMES

    backbone_class = getattr(transformers, MODEL_FOR_BACKBONE_MAPPING_NAMES[ours.config.model_type])
    reference = backbone_class.from_pretrained(source, revision=revision, out_indices=stages).eval()
    if "bfloat16" in hub.load_config_dict(converted_dir)[checkpoint.NATIVE_KEY]["param_dtype"]:
        with torch.no_grad():
            for parameter in reference.parameters():
                parameter.copy_(parameter.to(torch.bfloat16).float())

    channels = ours.config.num_channels
    pixels = np.random.default_rng(0).standard_normal((2, channels, 224, 224)).astype(np.float32)
    with torch.no_grad():
        expected = [m.float().numpy() for m in reference(torch.from_numpy(pixels)).feature_maps]
    actual = [np.asarray(m, dtype=np.float32).transpose(0, 3, 1, 2)
              for m in ours(jnp.asarray(pixels.transpose(0, 2, 3, 1))).feature_maps]

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
