"""What wraps a residual branch: stochastic depth (DropPath and its per-block rates), layer scale, and activation
checkpointing of a block."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from .. import initializers


def drop_path_rates(rate: float, depths: Sequence[int]) -> list[list[float]]:
    """Per stage, the stochastic-depth rate of each of its blocks: linear from 0 to `rate` over all blocks of all
    stages, as transformers (`torch.linspace`) and timm (`calculate_drop_path_rates`) space them."""
    total = sum(depths)
    rates = [rate * i / max(total - 1, 1) for i in range(total)]
    starts = np.cumsum([0, *depths])
    return [rates[starts[i]:starts[i + 1]] for i in range(len(depths))]


class DropPath(nnx.Module):
    """Stochastic depth: zeroes whole samples with probability `rate` and rescales the rest by 1 / (1 - rate).

    Like `nnx.Dropout`, it is active only while `deterministic` is False (`.train()` / `.eval()` switch it)
    and draws its key from the `rng_collection` stream of the `rngs` passed at call time (falling back to the
    `default` stream). It keeps no random state of its own, so a module's state stays its weights.
    """

    def __init__(self, rate: float, *, deterministic: bool = False, rng_collection: str = "dropout"):
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"drop path rate must be in [0, 1), got {rate}")
        self.rate = rate
        self.deterministic = deterministic
        self.rng_collection = rng_collection

    def __call__(self, x: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        if self.rate == 0.0 or self.deterministic:
            return x
        if rngs is None:
            raise ValueError(
                f"DropPath(rate={self.rate}) is in train mode (deterministic=False) but no rngs were given; "
                "pass rngs=nnx.Rngs(dropout=seed) to the call, or call .eval() on the module"
            )
        keep_prob = 1.0 - self.rate
        mask = jax.random.bernoulli(rngs[self.rng_collection](), keep_prob, (x.shape[0],) + (1,) * (x.ndim - 1))
        return jnp.where(mask, x / jnp.asarray(keep_prob, x.dtype), jnp.zeros((), x.dtype))


def checkpointed(enabled: bool, fn: Callable, *args):
    """`fn(*args)`, under `nnx.remat` when `enabled`: activations inside `fn` are recomputed in the backward pass.

    `args` are what `fn` reads or updates (arrays, modules, `nnx.Rngs`, None); anything static (flags) belongs in
    `fn`'s closure. Outputs, gradients and state updates (BatchNorm statistics, rng counters) are the same either way.
    """
    if not enabled:
        return fn(*args)
    return nnx.remat(fn)(*args)


class LayerScale(nnx.Module):
    """Multiplies the last axis by a learned per-channel vector `gamma` (CaiT's layer scale; ConvNeXt's
    `layer_scale_parameter` / `gamma`; timm's ViT `ls1`/`ls2`, transformers' DINO `lambda1`). Initialised to
    `init_value`, as torch does."""

    def __init__(self, dim: int, init_value: float = 1e-5, *, param_dtype=jnp.float32):
        self.gamma = nnx.Param(initializers.full((dim,), init_value, param_dtype))

    def __call__(self, x: jax.Array) -> jax.Array:
        return x * self.gamma[...].astype(x.dtype)
