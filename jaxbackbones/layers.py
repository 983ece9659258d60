"""Building blocks shared by the model families, written to match torch's numerics."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from . import initializers


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


# How `conv_general_dilated` runs 1x1 and patch (kernel = stride) unpadded convolutions: None picks by the default
# backend while tracing (matrix products on CPU, the convolution elsewhere); True or False forces one way. Read at
# trace time, so set it before the model is traced (a jitted function already traced keeps its choice).
# benchmarks/gpu_session.py times both on a GPU.
CONV_AS_MATMUL: bool | None = None


def conv_as_matmul() -> bool:
    """Whether 1x1 and patch convolutions run as matrix products now (`CONV_AS_MATMUL`, else CPU only)."""
    if CONV_AS_MATMUL is not None:
        return CONV_AS_MATMUL
    return jax.default_backend() == "cpu"


def _patches(x: jax.Array, height: int, width: int) -> jax.Array:
    """NHWC `x` cut into non-overlapping height x width patches, each flattened (row, column, channel): (N, H //
    height, W // width, height * width * C), the rows and columns that do not fill a patch dropped."""
    batch, rows, columns, channels = x.shape
    rows, columns = rows // height, columns // width
    x = x[:, :rows * height, :columns * width].reshape(batch, rows, height, columns, width, channels)
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(batch, rows, columns, height * width * channels)


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, precision=None, **kwargs):
    """`lax.conv_general_dilated` for NHWC x HWIO, with the convolutions XLA:CPU runs slowly rewritten.

    - 1x1 and patch (kernel = stride) unpadded convolutions are matrix products on CPU: XLA:CPU ran a 1x1
      convolution 1.5-2.5x slower than the same product (ResNet-50's shapes), and ConvNeXt's 4x4 stem and 2x2
      downsampling convolutions 1.3-2.3x slower than the product on their patches. On GPU both are one GEMM, and the
      convolution is kept unless `CONV_AS_MATMUL` says otherwise. A strided 1x1 convolution is the product on the
      strided subsample.
    - Depthwise convolutions at stride 1 (`feature_group_count` = channels, one filter each) are, on CPU, a sum of
      shifted, scaled copies of the input (`depthwise_conv_shifted`): XLA:CPU runs its grouped convolution about 10x
      slower (measured on ConvNeXt's 7x7 shapes). Other platforms keep the convolution (`lax.platform_dependent`).
    """
    dilated = any(d != 1 for d in (lhs_dilation or ()) + (rhs_dilation or ()))
    explicit = not isinstance(padding, str)
    unpadded = explicit and all(tuple(pair) == (0, 0) for pair in padding)
    kernel_size, strides = tuple(rhs.shape[:2]), tuple(window_strides)
    if feature_group_count == 1 and unpadded and not dilated and conv_as_matmul():
        def product(patches, weights):
            return jax.lax.dot_general(patches, weights, (((3,), (0,)), ((), ())), precision=precision,
                                       preferred_element_type=kwargs.get("preferred_element_type"))

        if kernel_size == (1, 1):
            return product(lhs[:, ::strides[0], ::strides[1]], rhs[0, 0])
        if kernel_size == strides:
            return product(_patches(lhs, *kernel_size), rhs.reshape(-1, rhs.shape[-1]))

    def convolution(lhs, rhs):
        return jax.lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                                            dimension_numbers, feature_group_count, precision=precision, **kwargs)

    depthwise = feature_group_count == lhs.shape[-1] == rhs.shape[-1] and rhs.shape[2] == 1
    fits = explicit and all(0 <= pad <= size - 1 for pair, size in zip(padding, rhs.shape[:2]) for pad in pair)
    if depthwise and fits and strides == (1, 1) and not dilated:
        def shifted(lhs, rhs):
            return depthwise_conv_shifted(lhs, rhs, padding, kwargs.get("preferred_element_type"))

        return jax.lax.platform_dependent(lhs, rhs, cpu=shifted, default=convolution)
    return convolution(lhs, rhs)


def _shifted_sum(x: jax.Array, kernel: jax.Array, padding) -> jax.Array:
    """sum over the taps (i, j) of pad(x)[:, i:i + H, j:j + W] * kernel[i, j, 0], in x's dtype."""
    (top, bottom), (left, right) = padding
    kernel_h, kernel_w = kernel.shape[:2]
    height = x.shape[1] + top + bottom - kernel_h + 1
    width = x.shape[2] + left + right - kernel_w + 1
    padded = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    out = None
    for i in range(kernel_h):
        for j in range(kernel_w):
            term = padded[:, i:i + height, j:j + width] * kernel[i, j, 0]
            out = term if out is None else out + term
    return out


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _depthwise(x: jax.Array, kernel: jax.Array, padding) -> jax.Array:
    return _shifted_sum(x, kernel, padding)


def _depthwise_forward(x, kernel, padding):
    return _shifted_sum(x, kernel, padding), (x, kernel)


def _depthwise_backward(padding, residuals, grad):
    # The input's gradient is the same kind of sum with the kernel flipped. The kernel's is one reduction per tap,
    # run as a loop over the taps (`lax.map`): unrolled, XLA:CPU compiled 49 reductions per layer (ConvNeXt-T's train
    # step: 28 s) and ran them 2x slower than the loop (15 s, and 5.6 -> 2.8 s per step at batch 8). Autodiff of the
    # forward sum compiles slower and runs slower still.
    x, kernel = residuals
    (top, bottom), (left, right) = padding
    kernel_h, kernel_w = kernel.shape[:2]
    grad_x = _shifted_sum(grad, kernel[::-1, ::-1],
                          ((kernel_h - 1 - top, kernel_h - 1 - bottom), (kernel_w - 1 - left, kernel_w - 1 - right)))
    padded = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    window = grad.shape[:3] + x.shape[3:]
    taps = jnp.array([(i, j) for i in range(kernel_h) for j in range(kernel_w)], jnp.int32)

    def tap_gradient(tap):
        shifted = jax.lax.dynamic_slice(padded, (0, tap[0], tap[1], 0), window)
        return jnp.sum(shifted * grad, axis=(0, 1)).sum(axis=0)  # batch and rows first: XLA:CPU reduces those fastest

    return grad_x, jax.lax.map(tap_gradient, taps).reshape(kernel.shape)


_depthwise.defvjp(_depthwise_forward, _depthwise_backward)


def depthwise_conv_shifted(x: jax.Array, kernel: jax.Array, padding, out_dtype=None) -> jax.Array:
    """A stride-1 depthwise convolution of NHWC `x` with an (kh, kw, 1, C) kernel, zero-padded by `padding`
    ((top, bottom), (left, right), each at most kh - 1 / kw - 1), as the sum over the kh * kw taps of the shifted
    input times the tap's per-channel weight, accumulated in float32 (at least). XLA fuses it into one pass over the
    output; the backward pass is written out (see `_depthwise_backward`)."""
    accumulate = jnp.promote_types(x.dtype, jnp.float32)
    return _depthwise(x.astype(accumulate), kernel.astype(accumulate), tuple(map(tuple, padding))).astype(
        out_dtype or x.dtype)


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
        kernel_init=initializers.conv_kernel_init,  # torch's kaiming-normal (fan_out)
        bias_init=initializers.zeros,
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
        scale = self.scale[...].astype(jnp.float32) * jax.lax.rsqrt(var + self.eps)
        return ((x32 - mean) * scale + self.bias[...].astype(jnp.float32)).astype(self.dtype)


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
    here and leaves the surrounding elementwise work to XLA's own loop fusions. Other platforms get `x` unchanged.
    """
    return jax.lax.platform_dependent(x, cpu=_clamp_to_infinities, default=lambda x: x)


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


# ---------------------------------------------------------------------------------------------------------------
# Vision Transformer blocks (ViT, DINOv2, DINOv3): position-embedding resampling, rotary positions, attention through
# `jax.nn.dot_product_attention`, MLPs (LayerScale is above). Each matches the torch op it replaces
# (tests/test_vit_layers.py).


def _cubic(distance: np.ndarray, a: float) -> np.ndarray:
    """Keys' cubic convolution kernel with parameter `a` at |distance| (zero beyond 2), in float32."""
    f32 = np.float32
    x, a = np.abs(distance).astype(f32), f32(a)
    near = ((a + f32(2)) * x - (a + f32(3))) * x * x + f32(1)
    far = ((a * x - f32(5) * a) * x + f32(8) * a) * x - f32(4) * a
    return np.where(x < 1, near, np.where(x < 2, far, f32(0))).astype(f32)


@functools.lru_cache(maxsize=256)
def bicubic_resize_matrix(in_size: int, out_size: int, antialias: bool) -> np.ndarray:
    """The (out_size, in_size) float32 matrix of torch's 1-D bicubic resampling with `align_corners=False`.

    Without antialiasing (`F.interpolate(mode="bicubic")`): Keys' kernel with a = -0.75 at the source coordinate
    `(i + 0.5) * in / out - 0.5`, the four taps clamped to the edge (edge pixels repeat). With `antialias=True`
    (`_upsample_bicubic2d_aa`, Pillow's filter): a = -0.5, the kernel stretched by in / out when shrinking, taps
    outside the input dropped and the rest renormalised to sum to one. The two differ even when enlarging.

    Computed in float32 as torch does (its weights carry float32 rounding of the source coordinate, up to ~4e-6 at
    a 37-wide grid); these agree with torch's to a few float32 ulps.
    """
    f32 = np.float32
    scale = f32(in_size) / f32(out_size)
    rows = np.arange(out_size)
    matrix = np.zeros((out_size, in_size), f32)
    if not antialias:
        # the source coordinate rounded once, as torch's compiled kernel computes it (a fused multiply-add)
        source = (np.float64(scale) * (rows + 0.5) - 0.5).astype(f32)
        start = np.floor(source)
        fraction = (source - start).astype(f32)
        for tap, distance in zip(range(-1, 3), (fraction + f32(1), fraction, f32(1) - fraction, f32(2) - fraction)):
            np.add.at(matrix, (rows, np.clip(start.astype(int) + tap, 0, in_size - 1)), _cubic(distance, -0.75))
        return matrix
    support = f32(2) * max(scale, f32(1))
    stretch = f32(1) / scale if scale >= 1 else f32(1)
    for i in rows:
        center = scale * (f32(i) + f32(0.5))
        # torch truncates toward zero, then clamps to the input
        first = max(int(center - support + f32(0.5)), 0)
        last = min(int(center + support + f32(0.5)), in_size)
        weights = _cubic((np.arange(first, last, dtype=f32) - center + f32(0.5)) * stretch, -0.5)
        total = f32(0)
        for weight in weights:
            total = f32(total + weight)
        matrix[i, first:last] = weights / total if total != 0 else weights
    return matrix


def resize_bicubic(x: jax.Array, size: tuple[int, int], *, antialias: bool) -> jax.Array:
    """(H, W, C) -> (size[0], size[1], C), float32, as torch's `F.interpolate(x, size, mode="bicubic",
    align_corners=False, antialias=antialias)` on the NCHW equivalent.

    Separable: one numpy matrix per axis (computed once per size pair, at trace time), applied with an einsum at
    float32 precision whatever the default matmul precision (the tables are small).
    """
    height, width = x.shape[:2]
    rows = jnp.asarray(bicubic_resize_matrix(height, size[0], antialias), jnp.float32)
    cols = jnp.asarray(bicubic_resize_matrix(width, size[1], antialias), jnp.float32)
    return jnp.einsum("ih,hwc,jw->ijc", rows, x.astype(jnp.float32), cols, precision=jax.lax.Precision.HIGHEST)


def rope_patch_coordinates(height: int, width: int) -> np.ndarray:
    """(height * width, 2) float32 (y, x) centres of a patch grid in [-1, 1], row-major, as DINOv3 computes them
    (transformers' `get_patches_center_coordinates`, timm's `_build_grid(grid_type="centered")`): `(i + 0.5) / n`,
    then `2c - 1`, in float32."""
    f32 = np.float32
    ys = np.arange(0.5, height, dtype=f32) / f32(height)
    xs = np.arange(0.5, width, dtype=f32) / f32(width)
    coords = np.stack(np.meshgrid(ys, xs, indexing="ij"), axis=-1).reshape(-1, 2)
    return (f32(2.0) * coords - f32(1.0)).astype(f32)


class RotaryPositions(nnx.Module):
    """DINOv3's 2-D rotary position embedding: (cos, sin) of shape (patches, head_dim) for a patch grid.

    Each patch centre (y, x) in [-1, 1] is turned into angles `2 pi * coordinate / period` for head_dim / 4 periods
    `theta ** (4 j / head_dim)` per axis; the (y, x) angles are concatenated and tiled twice ("rotate half" layout).
    Eval mode is deterministic: the angles are numpy constants of the grid. In train mode (`deterministic=False`)
    the coordinates are augmented as transformers' `augment_patches_center_coordinates` and timm's
    `_apply_coord_augs` do, one draw per call from the `dropout` stream of the call's `rngs`: a shift uniform in
    [-shift, shift] per axis, a jitter log-uniform in [1/jitter, jitter] per axis, a rescale log-uniform in
    [1/rescale, rescale] for both axes, in that order (each only when set).
    """

    def __init__(self, head_dim: int, theta: float, *, shift: float | None = None, jitter: float | None = None,
                 rescale: float | None = None, deterministic: bool = False):
        if head_dim % 4:
            raise ValueError(f"rotary position embeddings need a head dimension divisible by 4, got {head_dim}")
        for name, value, low in (("shift", shift, 0.0), ("jitter", jitter, 1.0), ("rescale", rescale, 1.0)):
            if value is not None and not value >= low:
                raise ValueError(f"rotary position {name} must be >= {low} (or None), got {value}")
        self.head_dim = head_dim
        self.theta = float(theta)
        self.shift, self.jitter, self.rescale = shift, jitter, rescale
        self.deterministic = deterministic

    @property
    def augments(self) -> bool:
        """Whether a call draws random numbers (train mode with an augmentation set)."""
        return not self.deterministic and any(v is not None for v in (self.shift, self.jitter, self.rescale))

    def inverse_periods(self) -> np.ndarray:
        """(head_dim / 4,) float32 `1 / theta ** (4 j / head_dim)`: transformers' `inv_freq` buffer (bit for bit at
        the released head sizes, 64 and 128; timm divides by `theta ** ...` instead, a float32 ulp apart)."""
        exponents = np.arange(0, 1, 4 / self.head_dim, dtype=np.float32)
        return np.float32(1) / (np.float64(self.theta) ** exponents.astype(np.float64)).astype(np.float32)

    def augment(self, coords: jax.Array, key: jax.Array) -> jax.Array:
        """`coords` (N, 2) shifted, jittered and rescaled by one random draw of `key`."""
        shift_key, jitter_key, rescale_key = jax.random.split(key, 3)
        if self.shift is not None:
            coords = coords + jax.random.uniform(shift_key, (1, 2), minval=-self.shift, maxval=self.shift)
        if self.jitter is not None:
            limit = np.log(self.jitter)
            coords = coords * jnp.exp(jax.random.uniform(jitter_key, (1, 2), minval=-limit, maxval=limit))
        if self.rescale is not None:
            limit = np.log(self.rescale)
            coords = coords * jnp.exp(jax.random.uniform(rescale_key, (1,), minval=-limit, maxval=limit))
        return coords

    def __call__(self, height: int, width: int, *, rngs: nnx.Rngs | None = None) -> tuple[jax.Array, jax.Array]:
        coords = rope_patch_coordinates(height, width)
        inverse_periods = self.inverse_periods()
        if not self.augments:  # numpy constants of the grid
            angles = np.float32(2 * np.pi) * coords[:, :, None] * inverse_periods
            angles = np.tile(angles.reshape(-1, self.head_dim // 2), (1, 2))
            return jnp.asarray(np.cos(angles)), jnp.asarray(np.sin(angles))
        if rngs is None:
            raise ValueError("rotary position augmentation is on (train mode) but no rngs were given; pass "
                             "rngs=nnx.Rngs(dropout=seed), or call .eval()")
        coords = self.augment(jnp.asarray(coords), rngs["dropout"]())
        angles = jnp.float32(2 * np.pi) * coords[:, :, None] * inverse_periods
        angles = jnp.tile(angles.reshape(-1, self.head_dim // 2), (1, 2))
        return jnp.cos(angles), jnp.sin(angles)


def apply_rotary(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """Rotate the last `cos.shape[0]` tokens of x (B, T, heads, head_dim) by (cos, sin) (N, head_dim), "rotate half"
    layout; the leading prefix tokens (class, registers) pass unchanged. In float32, cast back to x's dtype."""
    prefix = x.shape[1] - cos.shape[0]
    patches = x[:, prefix:].astype(jnp.float32)
    half = patches.shape[-1] // 2
    rotated = jnp.concatenate([-patches[..., half:], patches[..., :half]], axis=-1)
    patches = patches * cos[None, :, None] + rotated * sin[None, :, None]
    return jnp.concatenate([x[:, :prefix], patches.astype(x.dtype)], axis=1)


def dot_product_attention(query: jax.Array, key: jax.Array, value: jax.Array, *,
                          per_head: bool | None = None) -> jax.Array:
    """softmax(q k^T / sqrt(head_dim)) v for (B, T, heads, head_dim) inputs; logits and softmax in float32.

    On GPU and TPU this is `jax.nn.dot_product_attention` (XLA may pick cuDNN's flash attention). XLA:CPU runs that
    as one unfused (B, heads, T, T) softmax, memory-bound at long sequences: there (`per_head=None` on the CPU
    backend, or `per_head=True`) the same arithmetic runs one (batch, head) pair at a time, so that each T x T block
    stays in cache: 4.2x faster at 1370 tokens (DINOv2 at 518), 2.2x at 197, measured on 2 EPYC cores.
    """
    if per_head is None:
        per_head = jax.default_backend() == "cpu"
    if not per_head:
        return jax.nn.dot_product_attention(query, key, value)
    batch, tokens, heads, head_dim = query.shape
    scale = np.float32(head_dim**-0.5)

    def flat(x):
        return x.transpose(0, 2, 1, 3).reshape(batch * heads, *x.shape[1:2], head_dim)

    def one_head(qkv):
        q, k, v = qkv
        logits = jnp.einsum("qd,kd->qk", q, k, preferred_element_type=jnp.float32) * scale
        return jnp.einsum("qk,kd->qd", jax.nn.softmax(logits, axis=-1).astype(value.dtype), v)

    out = jax.lax.map(one_head, (flat(query), flat(key), flat(value)))
    return out.reshape(batch, heads, tokens, head_dim).transpose(0, 2, 1, 3)


class Attention(nnx.Module):
    """Multi-head self-attention over tokens (B, T, C), through `dot_product_attention` (above).

    q, k and v come from one fused (C, 3C) kernel `qkv`; each has its own optional bias (`q_bias`, `k_bias`,
    `v_bias`: DINOv3 has no key bias, timm's plain ViTs and DINOv2 all three). Logits and softmax are float32 for
    any compute dtype (XLA may pick cuDNN's flash attention on GPU). The explicit path (einsum, softmax) runs when
    the attention probabilities are asked for, or attention dropout is active: `dot_product_attention` has neither.
    `rotary`, when given, is the (cos, sin) that rotates q and k of the patch tokens (see `apply_rotary`).
    """

    def __init__(self, dim: int, num_heads: int, *, qkv_bias: tuple[bool, bool, bool] = (True, True, True),
                 proj_bias: bool = True, attention_dropout: float = 0.0, proj_dropout: float = 0.0,
                 init_std: float = 0.02, dtype, param_dtype, rngs: nnx.Rngs):
        if dim % num_heads:
            raise ValueError(f"{dim} channels cannot be split into num_heads={num_heads} heads")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.dtype = dtype
        init = initializers.normal(init_std)
        self.qkv = nnx.Linear(dim, 3 * dim, use_bias=False, kernel_init=init, dtype=dtype, param_dtype=param_dtype,
                              rngs=rngs)
        for name, present in zip(("q_bias", "k_bias", "v_bias"), qkv_bias):
            setattr(self, name, nnx.Param(initializers.full((dim,), 0, param_dtype)) if present else None)
        self.proj = nnx.Linear(dim, dim, use_bias=proj_bias, kernel_init=init, bias_init=initializers.zeros,
                               dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.attn_drop = nnx.Dropout(attention_dropout)
        self.proj_drop = nnx.Dropout(proj_dropout)

    def __call__(self, x: jax.Array, rotary: tuple[jax.Array, jax.Array] | None = None, *,
                 rngs: nnx.Rngs | None = None, output_attentions: bool = False) -> tuple[jax.Array, jax.Array | None]:
        batch, tokens, channels = x.shape
        qkv = self.qkv(x)
        biases = (self.q_bias, self.k_bias, self.v_bias)
        if any(bias is not None for bias in biases):
            qkv = qkv + jnp.concatenate([jnp.zeros((channels,), qkv.dtype) if bias is None else
                                         bias[...].astype(qkv.dtype) for bias in biases])
        qkv = qkv.reshape(batch, tokens, 3, self.num_heads, self.head_dim)
        query, key, value = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # (B, T, heads, head_dim)
        if rotary is not None:
            query, key = apply_rotary(query, *rotary), apply_rotary(key, *rotary)
        dropout_active = self.attn_drop.rate > 0 and not self.attn_drop.deterministic
        probs = None
        if output_attentions or dropout_active:
            logits = jnp.einsum("bqhd,bkhd->bhqk", query, key, preferred_element_type=jnp.float32)
            probs = jax.nn.softmax(logits * np.float32(self.head_dim**-0.5), axis=-1)
            out = jnp.einsum("bhqk,bkhd->bqhd", self.attn_drop(probs, rngs=rngs).astype(self.dtype), value)
        else:
            out = dot_product_attention(query, key, value)
        out = self.proj_drop(self.proj(out.reshape(batch, tokens, channels)), rngs=rngs)
        return out, (probs if output_attentions else None)


class Mlp(nnx.Module):
    """fc1, activation, fc2 (timm's `Mlp`, transformers' `Dinov2MLP` / `DINOv3ViTMLP`); dropout after the
    activation and after fc2.

    `gated=True`: `fc2(act(gate) * value)` (SwiGLU with silu), gate and value from one fused (C, 2H) kernel `fc1`
    ([gate | value]: timm's packed `SwiGLUPacked` / DINOv2's `weights_in`; the split `gate_proj` / `up_proj`,
    `fc1_g` / `fc1_x` of other layouts are fused by the conversion tables).
    """

    def __init__(self, dim: int, hidden_dim: int, activation: str = "gelu", *, gated: bool = False,
                 use_bias: bool = True, dropout: float = 0.0, init_std: float = 0.02, dtype, param_dtype,
                 rngs: nnx.Rngs):
        init = initializers.normal(init_std)
        self.gated = gated
        options = dict(use_bias=use_bias, kernel_init=init, bias_init=initializers.zeros, dtype=dtype,
                       param_dtype=param_dtype, rngs=rngs)
        self.fc1 = nnx.Linear(dim, 2 * hidden_dim if gated else hidden_dim, **options)
        self.fc2 = nnx.Linear(hidden_dim, dim, **options)
        self.act = get_activation(activation)
        self.drop = nnx.Dropout(dropout)

    def __call__(self, x: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        x = self.fc1(x)
        if self.gated:
            gate, value = jnp.split(x, 2, axis=-1)
            x = self.act(gate) * value
        else:
            x = self.act(x)
        return self.drop(self.fc2(self.drop(x, rngs=rngs)), rngs=rngs)

