"""Position information for transformer tokens: bicubic resampling of learned position embeddings (torch's
`F.interpolate`), DINOv3's 2-D rotary positions, decomposed relative positions (SAM, ViTDet; torch's linear resampling).
Each matches the torch op it replaces (tests/test_vit_layers.py)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


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


@functools.lru_cache(maxsize=256)
def linear_resize_matrix(in_size: int, out_size: int) -> np.ndarray:
    """The (out_size, in_size) float32 matrix of torch's 1-D `F.interpolate(mode="linear", align_corners=False)`.

    torch's kernel (`upsample_linear1d`), in float32: the source coordinate `max(scale * (i + 0.5) - 0.5, 0)` with
    `scale = in / out`, its two neighbours `floor` and `floor + 1` (the last index repeats at the edge), weights
    `1 - l` and `l` for the fraction `l`.
    """
    f32 = np.float32
    scale = f32(in_size) / f32(out_size)
    matrix = np.zeros((out_size, in_size), f32)
    for i in range(out_size):
        source = max(f32(scale * f32(f32(i) + f32(0.5))) - f32(0.5), f32(0))
        first = int(source)
        second = first + (1 if first < in_size - 1 else 0)
        fraction = f32(min(max(source - f32(first), f32(0)), f32(1)))
        matrix[i, first] += f32(1) - fraction
        matrix[i, second] += fraction
    return matrix


def relative_position_indices(q_size: int, k_size: int) -> np.ndarray:
    """(q_size, k_size) int indices into a (2 * max(q, k) - 1)-row relative position table, as SAM's and ViTDet's
    `get_rel_pos` compute them (float32 coordinates, the shorter side stretched, truncated to int)."""
    f32 = np.float32
    q_scale, k_scale = f32(max(k_size / q_size, 1.0)), f32(max(q_size / k_size, 1.0))
    q_coords = np.arange(q_size, dtype=f32)[:, None] * q_scale
    k_coords = np.arange(k_size, dtype=f32)[None, :] * k_scale
    return ((q_coords - k_coords) + f32(k_size - 1) * k_scale).astype(np.int64)


def relative_positions(table: jax.Array, q_size: int, k_size: int) -> jax.Array:
    """(q_size, k_size, C) float32: the decomposed relative position embedding of one axis (MViTv2, SAM, ViTDet).

    `table` (L, C) is resampled to 2 * max(q, k) - 1 rows with torch's linear interpolation (`linear_resize_matrix`)
    when it has another length (SAM's transformers code resamples always, which at the same length is the identity),
    then gathered at `relative_position_indices`.
    """
    length = 2 * max(q_size, k_size) - 1
    table = table.astype(jnp.float32)
    if table.shape[0] != length:
        matrix = jnp.asarray(linear_resize_matrix(table.shape[0], length))
        table = jnp.einsum("ol,lc->oc", matrix, table, precision=jax.lax.Precision.HIGHEST)
    return table[relative_position_indices(q_size, k_size)]
