"""Convolutions and pools over NHWC, padded like torch, with the convolutions XLA:CPU runs slowly rewritten
(`rewrites`: 1x1 and patch convolutions as matrix products, stride-1 depthwise ones as shifted sums)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from .. import initializers
from . import rewrites


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

    - 1x1 and patch (kernel = stride) unpadded convolutions are matrix products on CPU (rewrite "conv_as_matmul"):
      on GPU both are one GEMM and the convolution is kept. A strided 1x1 convolution is the product on the strided
      subsample.
    - Depthwise convolutions at stride 1 (`feature_group_count` = channels, one filter each) are, on CPU, a sum of
      shifted, scaled copies of the input (rewrite "depthwise_shifted_sum", `depthwise_conv_shifted`).

    The measurements behind both are in `rewrites.REWRITES`.
    """
    dilated = any(d != 1 for d in (lhs_dilation or ()) + (rhs_dilation or ()))
    explicit = not isinstance(padding, str)
    unpadded = explicit and all(tuple(pair) == (0, 0) for pair in padding)
    kernel_size, strides = tuple(rhs.shape[:2]), tuple(window_strides)

    def convolution(lhs, rhs):
        return jax.lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                                            dimension_numbers, feature_group_count, precision=precision, **kwargs)

    def product(patches, weights):
        return jax.lax.dot_general(patches, weights, (((3,), (0,)), ((), ())), precision=precision,
                                   preferred_element_type=kwargs.get("preferred_element_type"))

    if feature_group_count == 1 and unpadded and not dilated:
        if kernel_size == (1, 1):
            return rewrites.choose("conv_as_matmul", lambda lhs, rhs: product(lhs[:, ::strides[0], ::strides[1]],
                                                                              rhs[0, 0]), convolution, lhs, rhs)
        if kernel_size == strides:
            return rewrites.choose("conv_as_matmul", lambda lhs, rhs: product(_patches(lhs, *kernel_size),
                                                                              rhs.reshape(-1, rhs.shape[-1])),
                                   convolution, lhs, rhs)

    depthwise = feature_group_count == lhs.shape[-1] == rhs.shape[-1] and rhs.shape[2] == 1
    fits = explicit and all(0 <= pad <= size - 1 for pair, size in zip(padding, rhs.shape[:2]) for pad in pair)
    if depthwise and fits and strides == (1, 1) and not dilated:
        def shifted(lhs, rhs):
            return depthwise_conv_shifted(lhs, rhs, padding, kwargs.get("preferred_element_type"))

        return rewrites.choose("depthwise_shifted_sum", shifted, convolution, lhs, rhs)
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
           dilation: int = 1, groups: int = 1, use_bias: bool = False, dtype, param_dtype,
           rngs: nnx.Rngs) -> nnx.Conv:
    """An NHWC convolution padded like torch: `kernel_size // 2` on every side unless `padding` is given; a dilated
    one (`dilation` > 1, torch's `dilation`, an odd kernel) by `dilation * (kernel_size - 1) // 2`, as timm's
    `get_padding`. Dilated convolutions are never rewritten (`conv_general_dilated` keeps them as convolutions)."""
    if dilation != 1 and padding is None:
        if kernel_size % 2 == 0:
            raise ValueError(f"a dilated convolution needs an odd kernel_size to be padded symmetrically, got "
                             f"{kernel_size} with dilation {dilation}")
        padding = dilation * (kernel_size - 1) // 2
    pad = kernel_size // 2 if padding is None else padding
    return nnx.Conv(
        in_channels,
        out_channels,
        kernel_size=(kernel_size, kernel_size),
        strides=(stride, stride),
        padding=((pad, pad), (pad, pad)),
        kernel_dilation=(dilation, dilation),
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


def avg_pool_same_2x2(x: jax.Array) -> jax.Array:
    """NHWC 2x2 average pool at stride 1 as timm's `AvgPool2dSame(2, 1, ceil_mode=True, count_include_pad=False)`
    (the shortcut pool of a dilated ResNet-d stage, timm's `downsample_avg`): TF-"SAME" padding for a 2x2 window at
    stride 1 is one zero row at the bottom and one zero column at the right (explicit here), added by `F.pad` before
    the pool, so the pool counts the zeros: every output is the sum of its 2x2 window over 4, the last row and
    column included. Output size = input size. Sums accumulate in float32."""
    sums = jax.lax.reduce_window(x.astype(jnp.float32), 0.0, jax.lax.add, (1, 2, 2, 1), (1, 1, 1, 1),
                                 ((0, 0), (0, 1), (0, 1), (0, 0)))
    return (sums / 4.0).astype(x.dtype)
