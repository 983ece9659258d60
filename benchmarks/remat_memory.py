"""Training memory with and without gradient checkpointing (`gradient_checkpointing=True`: nnx.remat per block).

For ResNet-50 and Swin-T (random weights, train mode, loss = sum of the feature maps' mean squares) it prints
- `saved`: the bytes autodiff keeps from the forward pass for the backward pass (`jax.vjp` residuals: activations
  plus the weights the backward reads; `training.saved_activation_bytes`, its default loss), computed abstractly;
  this is what remat reduces, on any backend;
- with `--compile`: XLA's `memory_analysis()` of the jitted gradient on the current backend (temp = activations
  and scratch of the compiled program; XLA:CPU drops rematerialisation when it compiles, so on CPU it does not
  move; on GPU/TPU it does), the step time, and the global relative L2 difference of the gradients remat vs plain.

    python benchmarks/remat_memory.py [--batch 8] [--size 224] [--models resnet50 swin_tiny] [--compile] [--bf16]
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxbackbones import AutoBackbone, ResNetConfig, SwinConfig
from jaxbackbones.training import saved_activation_bytes

CONFIGS = {
    "resnet50": lambda **kw: ResNetConfig(out_indices=[1, 2, 3, 4], **kw),
    "resnet18": lambda **kw: ResNetConfig(layer_type="basic", hidden_sizes=[64, 128, 256, 512], depths=[2, 2, 2, 2],
                                          out_indices=[1, 2, 3, 4], **kw),
    "swin_tiny": lambda **kw: SwinConfig(out_indices=[1, 2, 3, 4], drop_path_rate=0.0, **kw),
}
MiB = 2**20


def loss_fn(model, x):
    # Mean squares, not means: the mean of a LayerNorm'd (Swin) or train-mode BatchNorm'd (ResNet) map hardly depends
    # on the weights at initialisation, so its gradients would be rounding noise and the comparison meaningless.
    return sum(jnp.mean(jnp.square(f.astype(jnp.float32))) for f in model(x).feature_maps)


def compiled_grad(model, x):
    graphdef, state = nnx.split(model)

    def grad(state, x):
        model = nnx.merge(graphdef, state)
        grads = nnx.grad(loss_fn)(model, x)
        return grads, nnx.state(model)

    return jax.jit(grad).lower(state, x).compile(), state


def measure(name, batch, size, dtype, compile_too):
    shape = (batch, size, size, 3)
    grads = {}
    for remat in (False, True):
        def build(remat=remat):
            return AutoBackbone.from_config(CONFIGS[name](gradient_checkpointing=remat), rngs=nnx.Rngs(0), dtype=dtype)

        saved = saved_activation_bytes(nnx.eval_shape(build), jax.ShapeDtypeStruct(shape, jnp.float32))
        line = (f"{name:10} batch {batch} {size}x{size} {jnp.dtype(dtype).name:8} remat={remat!s:5} "
                f"saved {saved / MiB:7.1f} MiB")
        if compile_too:
            model = build()
            model.train()
            x = jnp.asarray(np.random.default_rng(0).standard_normal(shape), jnp.float32)
            start = time.perf_counter()
            compiled, state = compiled_grad(model, x)
            compile_s = time.perf_counter() - start
            start = time.perf_counter()
            grads[remat], _ = jax.block_until_ready(compiled(state, x))
            memory = compiled.memory_analysis()
            line += (f"  compiled temp {memory.temp_size_in_bytes / MiB:7.1f} MiB  compile {compile_s:5.1f} s  "
                     f"step {time.perf_counter() - start:5.2f} s")
        print(line, flush=True)
    if compile_too:
        plain, remat = jax.tree.leaves(grads[False]), jax.tree.leaves(grads[True])
        error = np.sqrt(sum(float(jnp.sum((a - b) ** 2)) for a, b in zip(plain, remat))
                        / sum(float(jnp.sum(a ** 2)) for a in plain))
        print(f"{name:10} gradients remat vs plain: global relative L2 difference {error:.2g}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--models", nargs="+", default=["resnet50", "swin_tiny"], choices=sorted(CONFIGS))
    parser.add_argument("--bf16", action="store_true", help="compute in bfloat16 (float32 parameters)")
    parser.add_argument("--compile", action="store_true", help="also compile and run the gradient (slow on CPU)")
    args = parser.parse_args()
    print(f"jax {jax.__version__} on {jax.devices()[0].platform} ({jax.devices()[0].device_kind})")
    for name in args.models:
        measure(name, args.batch, args.size, jnp.bfloat16 if args.bf16 else jnp.float32, args.compile)


if __name__ == "__main__":
    main()
