"""Activations and normalisations, each with torch's numerics: transformers' ACT2FN names, BatchNorm2d, LayerNorm
(behind a CPU fusion fence), ConvNeXt V2's GlobalResponseNorm."""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from .. import initializers
from . import rewrites


def _quick_gelu(x: jax.Array) -> jax.Array:
    return x * jax.nn.sigmoid(1.702 * x)


def _gelu(x: jax.Array) -> jax.Array:
    """Exact GELU in torch's formula, 0.5 x (1 + erf(x / sqrt 2)). jax.nn.gelu(approximate=False) goes through erfc,
    whose piecewise expansion made XLA:CPU's elementwise pass ~25% slower (Swin-T: 4% of the forward)."""
    return 0.5 * x * (1.0 + jax.lax.erf(x * 0.7071067811865476))


# Names as transformers' ACT2FN spells them.
ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": jax.nn.relu,
    "relu6": jax.nn.relu6,
    "leaky_relu": functools.partial(jax.nn.leaky_relu, negative_slope=0.01),
    "gelu": _gelu,
    "gelu_new": functools.partial(jax.nn.gelu, approximate=True),
    "gelu_fast": functools.partial(jax.nn.gelu, approximate=True),
    "gelu_pytorch_tanh": functools.partial(jax.nn.gelu, approximate=True),
    "quick_gelu": _quick_gelu,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
    "mish": jax.nn.mish,
    "elu": jax.nn.elu,
    "selu": jax.nn.selu,
    "sigmoid": jax.nn.sigmoid,
    "tanh": jnp.tanh,
    "linear": lambda x: x,
}


def get_activation(name: str) -> Callable[[jax.Array], jax.Array]:
    """The activation transformers calls `name`; `ValueError` listing the supported names otherwise."""
    try:
        return ACTIVATIONS[name]
    except (KeyError, TypeError):
        raise ValueError(f"hidden_act {name!r} is not supported; expected one of {sorted(ACTIVATIONS)}") from None


class BatchNorm(nnx.Module):
    """BatchNorm over NHWC that follows torch's BatchNorm2d, statistics in float32.

    Train mode (`use_running_average=False`) normalises with the batch's biased variance and updates the
    running statistics with `momentum` and the unbiased variance, as torch does; eval mode uses the
    running statistics. `.train()` / `.eval()` switch the mode. Under `jax.jit` with a sharded batch the
    means are taken over the global batch. A `frozen` BatchNorm (detection-style fine-tuning, torch's
    FrozenBatchNorm2d as timm's `freeze_batch_norm_2d` and RT-DETR's `RTDetrFrozenBatchNorm2d` install it) always
    uses its running statistics and never updates them, whatever the mode, and its scale and bias get zero gradients
    (`training.trainable_filter` also leaves them out, so that no optimizer, weight decay included, touches them).
    """

    def __init__(self, num_features: int, *, eps: float = 1e-5, momentum: float = 0.1,
                 use_running_average: bool = False, frozen: bool = False, dtype=jnp.float32,
                 param_dtype=jnp.float32):
        self.scale = nnx.Param(initializers.full((num_features,), 1, param_dtype))
        self.bias = nnx.Param(initializers.full((num_features,), 0, param_dtype))
        self.mean = nnx.BatchStat(initializers.full((num_features,), 0, jnp.float32))
        self.var = nnx.BatchStat(initializers.full((num_features,), 1, jnp.float32))
        self.eps = eps
        self.momentum = momentum
        self.use_running_average = use_running_average
        self.frozen = frozen
        self.dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        if self.use_running_average or self.frozen:
            mean, var = self.mean[...], self.var[...]
        else:
            axes = tuple(range(x.ndim - 1))
            mean = jnp.mean(x32, axis=axes)
            var = jnp.mean(jnp.square(x32 - mean), axis=axes)
            count = x.size // x.shape[-1]
            unbiased_var = var * (count / max(count - 1, 1))
            self.mean[...] = (1 - self.momentum) * self.mean[...] + self.momentum * mean
            self.var[...] = (1 - self.momentum) * self.var[...] + self.momentum * unbiased_var
        weight, bias = self.scale[...], self.bias[...]
        if self.frozen:  # torch's FrozenBatchNorm2d holds them as buffers: no gradient reaches them
            weight, bias = jax.lax.stop_gradient(weight), jax.lax.stop_gradient(bias)
        scale = weight.astype(jnp.float32) * jax.lax.rsqrt(var + self.eps)
        return ((x32 - mean) * scale + bias.astype(jnp.float32)).astype(self.dtype)


def _clamp_to_infinities(x: jax.Array) -> jax.Array:
    infinity = jnp.array(jnp.inf, x.dtype)
    return jax.lax.clamp(-infinity, x, infinity)


@jax.custom_jvp
def fusion_fence(x: jax.Array) -> jax.Array:
    """The identity, which on CPU keeps XLA's YNNPACK fusions from reaching across `x`.

    XLA:CPU hands a reduction or a matrix product to YNNPACK together with the elementwise work around it. Given a
    LayerNorm, it also takes the producer's work (ConvNeXt: the 49-term depthwise sum, as 13 materialised shifted
    copies) and runs the normalisation inside the following product; the ConvNeXt-T block at 56x56 took 2x as long
    as its parts. YNNPACK has no clamp, so a clamp to +-inf (exact for every value, NaN included) ends those fusions
    here and leaves the surrounding elementwise work to XLA's own loop fusions. Other platforms get `x` unchanged
    (rewrite "fusion_fence").
    """
    return rewrites.choose("fusion_fence", _clamp_to_infinities, lambda x: x, x)


@fusion_fence.defjvp
def _fusion_fence_jvp(primals, tangents):
    return fusion_fence(primals[0]), tangents[0]


class LayerNorm(nnx.LayerNorm):
    """nnx.LayerNorm with its input and output behind a `fusion_fence`: XLA:CPU then runs it as one YNNPACK pass of
    its own instead of pulling the producer into it and it into the next matrix product."""

    def __call__(self, x: jax.Array, *args, **kwargs) -> jax.Array:
        return fusion_fence(super().__call__(fusion_fence(x), *args, **kwargs))


def layer_norm(num_features: int, *, eps: float = 1e-5, dtype=jnp.float32, param_dtype=jnp.float32,
               rngs: nnx.Rngs) -> LayerNorm:
    """A LayerNorm over the last axis with torch's numerics: two-pass variance, statistics in float32.

    The output is in `dtype`, the scale and bias in `param_dtype` (initialised to 1 and 0, as torch does).
    """
    return LayerNorm(num_features, epsilon=eps, use_fast_variance=False, dtype=dtype, param_dtype=param_dtype,
                     scale_init=initializers.ones, bias_init=initializers.zeros, rngs=rngs)


class GlobalResponseNorm(nnx.Module):
    """ConvNeXt V2's Global Response Normalization over an NHWC map, statistics in float32.

    Each channel's L2 norm over the spatial axes, divided by its mean over the channels (+ `eps`), rescales the
    input: `x + bias + weight * (x * norm)`, as transformers' `ConvNextV2GRN` and timm's `GlobalResponseNorm`
    compute it. `weight` and `bias` are (C,) vectors initialised to zero (the layer starts as the identity).
    """

    def __init__(self, dim: int, *, eps: float = 1e-6, dtype=jnp.float32, param_dtype=jnp.float32):
        self.weight = nnx.Param(initializers.full((dim,), 0, param_dtype))
        self.bias = nnx.Param(initializers.full((dim,), 0, param_dtype))
        self.eps = eps
        self.dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        spatial = jnp.sqrt(jnp.sum(jnp.square(x32), axis=(1, 2), keepdims=True))
        response = spatial / (jnp.mean(spatial, axis=-1, keepdims=True) + self.eps)
        weight, bias = self.weight[...].astype(jnp.float32), self.bias[...].astype(jnp.float32)
        return (x32 + bias + weight * (x32 * response)).astype(self.dtype)
