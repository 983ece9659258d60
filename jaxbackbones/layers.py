"""Building blocks shared by the model families, written to match torch's numerics."""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


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


# torch initialises convolutions with kaiming-normal (fan_out) in transformers' ResNet and timm.
conv_kernel_init = nnx.initializers.variance_scaling(2.0, "fan_out", "normal")


# How `conv_general_dilated` runs 1x1 unpadded convolutions: None picks by the default backend while tracing (matrix
# products on CPU, the convolution elsewhere); True or False forces one way. Read at trace time, so set it before the
# model is traced (a jitted function already traced keeps its choice). benchmarks/gpu_session.py times both on a GPU.
CONV1X1_AS_MATMUL: bool | None = None


def conv1x1_as_matmul() -> bool:
    """Whether 1x1 unpadded convolutions run as matrix products now (`CONV1X1_AS_MATMUL`, else CPU only)."""
    if CONV1X1_AS_MATMUL is not None:
        return CONV1X1_AS_MATMUL
    return jax.default_backend() == "cpu"


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, precision=None, **kwargs):
    """`lax.conv_general_dilated` for NHWC x HWIO, with 1x1 unpadded convolutions done as matrix products on CPU.

    XLA:CPU runs a 1x1 convolution 1.5-2.5x slower than the same matrix product (measured on ResNet-50's shapes);
    on GPU both are one GEMM, and the convolution is kept unless `CONV1X1_AS_MATMUL` says otherwise. A strided 1x1
    convolution is the product on the strided subsample.
    """
    dilated = any(d != 1 for d in (lhs_dilation or ()) + (rhs_dilation or ()))
    unpadded = not isinstance(padding, str) and all(tuple(pair) == (0, 0) for pair in padding)
    if (rhs.shape[:2] == (1, 1) and feature_group_count == 1 and unpadded and not dilated
            and conv1x1_as_matmul()):
        stride_h, stride_w = window_strides
        return jax.lax.dot_general(lhs[:, ::stride_h, ::stride_w], rhs[0, 0], (((3,), (0,)), ((), ())),
                                   precision=precision, preferred_element_type=kwargs.get("preferred_element_type"))
    return jax.lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                                        dimension_numbers, feature_group_count, precision=precision, **kwargs)


def conv2d(in_channels: int, out_channels: int, kernel_size: int, *, stride: int = 1, padding: int | None = None,
           groups: int = 1, use_bias: bool = False, dtype, param_dtype, rngs: nnx.Rngs) -> nnx.Conv:
    """An NHWC convolution padded like torch: `kernel_size // 2` on every side unless `padding` is given."""
    pad = kernel_size // 2 if padding is None else padding
    return nnx.Conv(
        in_channels,
        out_channels,
        kernel_size=(kernel_size, kernel_size),
        strides=(stride, stride),
        padding=((pad, pad), (pad, pad)),
        feature_group_count=groups,
        use_bias=use_bias,
        kernel_init=conv_kernel_init,
        dtype=dtype,
        param_dtype=param_dtype,
        conv_general_dilated=conv_general_dilated,
        rngs=rngs,
    )


def max_pool(x: jax.Array, kernel_size: int, stride: int, padding: int) -> jax.Array:
    """NHWC max-pool padded with -inf, as torch's MaxPool2d."""
    pad = ((0, 0), (padding, padding), (padding, padding), (0, 0))
    return jax.lax.reduce_window(
        x, -jnp.inf, jax.lax.max, (1, kernel_size, kernel_size, 1), (1, stride, stride, 1), pad
    )


def avg_pool_ceil(x: jax.Array, kernel_size: int, stride: int) -> jax.Array:
    """NHWC average pool as torch's `AvgPool2d(kernel_size, stride, ceil_mode=True, count_include_pad=False)`.

    With `ceil_mode` a last, partial window is kept on the bottom/right when it starts inside the input; every
    window averages only the elements it covers (the counts are numpy constants). Sums accumulate in float32.
    """
    def geometry(size: int) -> tuple[int, np.ndarray]:
        out = -(-(size - kernel_size) // stride) + 1
        if (out - 1) * stride >= size:
            out -= 1
        starts = np.arange(out) * stride
        return (out - 1) * stride + kernel_size - size, np.minimum(starts + kernel_size, size) - starts

    (pad_h, count_h), (pad_w, count_w) = geometry(x.shape[1]), geometry(x.shape[2])
    pad = ((0, 0), (0, max(pad_h, 0)), (0, max(pad_w, 0)), (0, 0))
    sums = jax.lax.reduce_window(x.astype(jnp.float32), 0.0, jax.lax.add, (1, kernel_size, kernel_size, 1),
                                 (1, stride, stride, 1), pad)
    counts = (count_h[:, None] * count_w[None, :]).astype(np.float32)[None, :, :, None]
    return (sums / counts).astype(x.dtype)


class BatchNorm(nnx.Module):
    """BatchNorm over NHWC that follows torch's BatchNorm2d, statistics in float32.

    Train mode (`use_running_average=False`) normalises with the batch's biased variance and updates the
    running statistics with `momentum` and the unbiased variance, as torch does; eval mode uses the
    running statistics. `.train()` / `.eval()` switch the mode. Under `jax.jit` with a sharded batch the
    means are taken over the global batch. A `frozen` BatchNorm (detection-style fine-tuning) always uses its
    running statistics and never updates them, whatever the mode.
    """

    def __init__(self, num_features: int, *, eps: float = 1e-5, momentum: float = 0.1,
                 use_running_average: bool = False, frozen: bool = False, dtype=jnp.float32,
                 param_dtype=jnp.float32):
        self.scale = nnx.Param(jnp.ones((num_features,), param_dtype))
        self.bias = nnx.Param(jnp.zeros((num_features,), param_dtype))
        self.mean = nnx.BatchStat(jnp.zeros((num_features,), jnp.float32))
        self.var = nnx.BatchStat(jnp.ones((num_features,), jnp.float32))
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
        scale = self.scale[...].astype(jnp.float32) * jax.lax.rsqrt(var + self.eps)
        return ((x32 - mean) * scale + self.bias[...].astype(jnp.float32)).astype(self.dtype)


def layer_norm(num_features: int, *, eps: float = 1e-5, dtype=jnp.float32, param_dtype=jnp.float32,
               rngs: nnx.Rngs) -> nnx.LayerNorm:
    """A LayerNorm over the last axis with torch's numerics: two-pass variance, statistics in float32.

    The output is in `dtype`, the scale and bias in `param_dtype` (initialised to 1 and 0, as torch does).
    """
    return nnx.LayerNorm(num_features, epsilon=eps, use_fast_variance=False, dtype=dtype, param_dtype=param_dtype,
                         rngs=rngs)


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
