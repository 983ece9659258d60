"""torch's antialiased resize of float images, `F.interpolate(x, size, mode="bilinear" | "bicubic",
align_corners=False, antialias=True)` (what torchvision's `resize` runs on float tensors), in numpy.

The algorithm is PIL's, in float32 (aten/src/ATen/native/cpu/UpSampleKernel.cpp, `_compute_weights_aa` and
`interpolate_aa_single_dim`): each output pixel is a normalised, filter-weighted sum of the input pixels within
`support` of its centre, the filter stretched by the scale when shrinking; the width is resized first, then the
height, and a side whose size does not change is left alone. The weights are computed with torch's mixture of
float32 and float64 (and the fused multiply-adds of its compiled cubic filter) and are bit-identical to torch's
(checked by interpolating one-hot rows). The weighted sums are accumulated in float32 in torch's order, but torch's
compiled kernel fuses some of those multiply-adds and not others (it depends on the build and on which outputs
fall in vectorised lanes), so a result can differ from torch's in its last bits: at most 2.4e-7 on [0, 1] pixels
(1-2 float32 ulps; 3 ulps where bicubic overshoots above 1), while about three quarters of the values are
bit-identical (measured on torch 2.14's CPU kernel; tests/test_image_processing.py bounds it).
"""

from __future__ import annotations

import numpy as np


def _linear(x: np.ndarray) -> np.ndarray:
    x = np.abs(x)
    return np.where(x < 1, np.float32(1) - x, np.float32(0))


def _fma(a, b, c) -> np.ndarray:
    """a * b + c rounded once to float32, as a fused multiply-add does (the product of two float32 is exact in
    float64)."""
    return (np.asarray(a, np.float64) * np.asarray(b, np.float64) + np.asarray(c, np.float64)).astype(np.float32)


def _cubic(x: np.ndarray) -> np.ndarray:
    # PIL's (and torch's, with antialias) Keys cubic, a = -0.5; torch's compiled filter fuses every multiply-add.
    a = np.float32(-0.5)
    x = np.abs(x)
    near = _fma(_fma(a + 2, x, -(a + 3)) * x, x, 1)
    far = _fma(_fma(_fma(a, x, -5 * a), x, 8 * a), x, -4 * a)
    return np.where(x < 1, near, np.where(x < 2, far, np.float32(0)))


# torch's interpolation modes: (filter, interp_size, the filter's support at scale 1 being interp_size / 2)
FILTERS = {"bilinear": (_linear, 2), "bicubic": (_cubic, 4)}


def _weights(in_size: int, out_size: int, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """(first input index (out_size,), weights (out_size, taps)), zero past each output's last tap."""
    filter_fn, interp_size = FILTERS[mode]
    scale = np.float32(in_size) / np.float32(out_size)
    # Where torch mixes float and double (`scale * (i + 0.5)`, `... + 0.5`), the double comes first, then float32.
    support = np.float32(interp_size * 0.5 * float(scale)) if scale >= 1 else np.float32(interp_size * 0.5)
    invscale = np.float32(1.0 / float(scale)) if scale >= 1 else np.float32(1.0)
    center = (float(scale) * (np.arange(out_size) + 0.5)).astype(np.float32)
    first = np.maximum(np.trunc((center - support).astype(np.float64) + 0.5), 0).astype(np.int64)
    last = np.minimum(np.trunc((center + support).astype(np.float64) + 0.5).astype(np.int64), in_size)
    taps = last - first
    offsets = np.arange(int(taps.max()))
    position = (first[:, None] + offsets[None, :]).astype(np.float32) - center[:, None]
    weights = filter_fn(((position.astype(np.float64) + 0.5) * float(invscale)).astype(np.float32))
    weights = np.where(offsets[None, :] < taps[:, None], weights, np.float32(0)).astype(np.float32)
    total = np.zeros(out_size, np.float32)
    for column in weights.T:  # torch's order of summation
        total += column
    weights = np.where(total[:, None] != 0, weights / np.where(total == 0, 1, total)[:, None], weights)
    return first, weights.astype(np.float32)


def _resize_axis(array: np.ndarray, axis: int, size: int, mode: str) -> np.ndarray:
    if array.shape[axis] == size:
        return array
    first, weights = _weights(array.shape[axis], size, mode)
    source = np.moveaxis(array, axis, 0)
    last_index = source.shape[0] - 1
    broadcast = (-1,) + (1,) * (source.ndim - 1)
    output = np.zeros((size,) + source.shape[1:], np.float32)
    for tap, column in enumerate(weights.T):  # a weight of 0 past an output's last tap adds exactly 0
        output += source[np.minimum(first + tap, last_index)] * column.reshape(broadcast)
    return np.moveaxis(output, 0, axis)


def resize(array: np.ndarray, height: int, width: int, mode: str = "bilinear") -> np.ndarray:
    """An (H, W, C) image resized to (height, width, C) as torch's antialiased `interpolate` does, in float32."""
    if mode not in FILTERS:
        raise ValueError(f"mode={mode!r}: expected one of {sorted(FILTERS)}")
    array = np.asarray(array, dtype=np.float32)
    return _resize_axis(_resize_axis(array, 1, width, mode), 0, height, mode)
