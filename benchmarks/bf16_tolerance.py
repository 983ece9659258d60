"""bfloat16 compute (float32 parameters) against float32: feature maps and gradients, ResNet-50, Swin-T, DINOv2-S.

Weights are transformers' modules with every parameter and buffer randomized (tests/helpers.py), converted;
inputs are standard normal, batch 2, 224x224; loss = sum over feature maps of mean(map * r) with a fixed random r.
Prints per feature map max |bf16 - fp32| / max |fp32|, and for the gradients the global relative L2 error
||g_bf16 - g_fp32|| / ||g_fp32|| and the median and worst per-tensor max-relative error.

ResNet is measured with BatchNorm on running statistics (eval / frozen BatchNorm, the fine-tuning setting): in
train mode a deep BatchNorm ResNet at random initialisation is chaotic (in float32, 0.4% input noise moves the
stage4 map by ~40%), so any perturbation, bf16 rounding included, is amplified alike; that is the network's, not
the precision's.

    python benchmarks/bf16_tolerance.py     (needs torch and transformers)
"""

from __future__ import annotations

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import transformers
from flax import nnx

from jaxbackbones import Dinov2Backbone, Dinov2Config, ResNetBackbone, ResNetConfig, SwinBackbone, SwinConfig
from jaxbackbones.checkpoint import load_converted
from jaxbackbones.convert import hf_resnet, hf_swin, hf_vit

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from helpers import randomize_torch_module, state_dict_numpy  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")


def compare(name, torch_model, backbone_class, config_class, table, *, train, size=224, batch=2):
    config = config_class.from_dict(torch_model.config.to_dict())
    state_dict = state_dict_numpy(torch_model)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((batch, size, size, 3)), jnp.float32)
    results = {}
    projections = None
    for dtype in (jnp.float32, jnp.bfloat16):
        model, _ = load_converted(lambda dtype=dtype: backbone_class(config, rngs=nnx.Rngs(0), dtype=dtype),
                                  state_dict, table)
        model.train() if train else model.eval()
        if projections is None:
            shapes = [m.shape for m in nnx.clone(model)(x).feature_maps]
            projections = [jnp.asarray(np.random.default_rng(i + 1).standard_normal(s), jnp.float32)
                           for i, s in enumerate(shapes)]

        def loss(model, x, projections=projections):
            return sum(jnp.mean(m.astype(jnp.float32) * r) for m, r in zip(model(x).feature_maps, projections))

        @nnx.jit
        def run(model, x):
            return model(x).feature_maps, nnx.grad(loss)(model, x)

        results[dtype] = run(model, x)
    (maps32, grads32), (maps16, grads16) = results[jnp.float32], results[jnp.bfloat16]
    map_errors = [float(jnp.abs(a - b.astype(jnp.float32)).max() / jnp.abs(a).max()) for a, b in zip(maps32, maps16)]
    g32 = {p: np.asarray(v[...], np.float64) for p, v in nnx.to_flat_state(grads32)}
    g16 = {p: np.asarray(v[...], np.float64) for p, v in nnx.to_flat_state(grads16)}
    global_l2 = np.sqrt(sum(((g32[p] - g16[p]) ** 2).sum() for p in g32) / sum((g ** 2).sum() for g in g32.values()))
    per_tensor = {p: np.abs(g32[p] - g16[p]).max() / np.abs(g32[p]).max() for p in g32 if np.abs(g32[p]).max() > 0}
    worst = max(per_tensor, key=per_tensor.get)
    print(f"{name:10} {'train' if train else 'eval':5} feature maps: " + ", ".join(f"{e:.2%}" for e in map_errors))
    print(f"{name:10} {'':5} gradients: global relative L2 {global_l2:.2%}, per tensor median "
          f"{np.median(list(per_tensor.values())):.2%}, worst {per_tensor[worst]:.2%} ({'.'.join(map(str, worst))})",
          flush=True)


def main():
    resnet = transformers.ResNetBackbone(transformers.ResNetConfig(out_indices=[1, 2, 3, 4])).eval()
    compare("resnet50", randomize_torch_module(resnet), ResNetBackbone, ResNetConfig, hf_resnet.TABLE, train=False)
    swin = transformers.SwinBackbone(transformers.SwinConfig(out_indices=[1, 2, 3, 4], drop_path_rate=0.0)).eval()
    compare("swin_tiny", randomize_torch_module(swin), SwinBackbone, SwinConfig, hf_swin.TABLE, train=True)
    dinov2 = transformers.Dinov2Backbone(transformers.Dinov2Config(
        hidden_size=384, num_attention_heads=6, image_size=518, patch_size=14, out_indices=[3, 6, 9, 12])).eval()
    compare("dinov2_s", randomize_torch_module(dinov2), Dinov2Backbone, Dinov2Config, hf_vit.dinov2_table(False),
            train=True)


if __name__ == "__main__":
    main()
