"""The backbones' initial weights, and making them all at once.

Every random weight of every family is `jax.random.normal(key, shape, dtype) * stddev`: `normal(stddev)` is
`jax.nn.initializers.normal(stddev)` and `conv_kernel_init` is `jax.nn.initializers.variance_scaling(2.0, "fan_out",
"normal")` (torch's `kaiming_normal_` for ReLU convolutions, as transformers and timm initialise them), value for value;
the others are constants (`full`, `zeros`, `ones`).

Drawn one at a time, eagerly, each new (shape, dtype) compiles its own threefry kernel, and each new constant shape
its own fill: ~50 compiles and 7-10 s for a ResNet-50 on a 2-core CPU. One `jit` around the whole constructor is slower
still (every draw stays a threefry loop of its own for XLA to compile), and XLA then folds the scaling into the draw,
which changes the last bit of most kernels. `build_with_random_weights(build)` instead builds the module eagerly, the
keys exactly those `rngs.params()` hands out and the rngs advancing as they always do, but records each weight instead
of making it (its variable holds a `jax.ShapeDtypeStruct` meanwhile); then it fills the constants with numpy and makes
every draw with one small kernel, compiled once per process. That relies on jax's partitionable threefry
(`jax_threefry_partitionable`, the default since jax 0.5): element i of `normal(key, shape)` depends only on `key` and
i, the threefry counter. Each draw is cut into rows of `CHUNK` elements, a row being (key, first counter), and the
kernel runs jax's own `jax.random.normal` (uniform, then erfinv) over a batch of rows, with a PRNG implementation whose
bits are threefry's from the row's first counter on (`_chunk_impl`); the scaling is a multiplication of its own, as in
eager mode. On an accelerator, without a sharding, the draws stay on the device: the kernel's rows are cut into the
weights there (one small slice-and-reshape program per weight shape), and only the keys, the scales and the rows'
counters cross between host and device. On the CPU, and with a sharding, each weight is assembled on the host as soon
as its rows are made and goes to its device (each device receiving only its own slice). The weights are the eager
ones bit for bit, either way (tests/test_initializers.py). What it cannot draw this way (a key of another PRNG
implementation, a dtype other than float32, bfloat16 or float16) is drawn eagerly as before, and under a trace
(`nnx.eval_shape`, `jit`) the module is simply built. `abstract_module(build)` is `nnx.eval_shape(build)` without the
trace: the recorded weights are never made.
"""

from __future__ import annotations

import contextvars
import functools
import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from .sharding import place

CHUNK = 4096  # elements per row of the kernel; a power of two, so a row's counters never carry into the high word
_ROW_BUCKETS = (16, 64, 256, 1024)  # rows per kernel call: few shapes to compile, little padding for small models
_FAST_DTYPES = tuple(map(jnp.dtype, (jnp.float32, jnp.bfloat16, jnp.float16)))


def normal(stddev: float):
    """`jax.nn.initializers.normal(stddev)`: `jax.random.normal(key, shape, dtype) * stddev`."""
    def init(key, shape: Sequence[int], dtype=jnp.float32):
        return _draw(key, shape, dtype, jnp.array(stddev, dtype))
    return init


def variance_scaling_fan_out(scale: float):
    """`jax.nn.initializers.variance_scaling(scale, "fan_out", "normal")` (kernels with inputs, outputs last)."""
    def init(key, shape: Sequence[int], dtype=jnp.float32):
        # jax's `_compute_fans`, in the same floating-point order
        receptive_field = math.prod(shape) / shape[-2] / shape[-1]
        variance = jnp.array(scale / (shape[-1] * receptive_field), dtype)
        return _draw(key, shape, dtype, jnp.sqrt(variance))
    return init


conv_kernel_init = variance_scaling_fan_out(2.0)


def full(shape: Sequence[int], value: float, dtype=jnp.float32):
    """`jnp.full(shape, value, dtype)`, made with the other weights when `build_with_random_weights` builds."""
    draws = _recording.get()
    if draws is None:
        return jnp.full(shape, value, dtype)
    return draws.record(shape, jax.dtypes.canonicalize_dtype(dtype), value)


def zeros(key, shape: Sequence[int], dtype=jnp.float32):
    """`jax.nn.initializers.zeros` (for `bias_init`, `scale_init`): no key is used."""
    return full(shape, 0, dtype)


def ones(key, shape: Sequence[int], dtype=jnp.float32):
    """`jax.nn.initializers.ones`: no key is used."""
    return full(shape, 1, dtype)


class _Draws:
    """What a module being built asked for: `id(placeholder) -> (placeholder, how to make it)`, in order.

    How: `(key data, stddev)` for a normal draw, a number for a constant.
    """

    def __init__(self):
        self.pending: dict[int, tuple[jax.ShapeDtypeStruct, tuple[np.ndarray, np.ndarray] | float]] = {}

    def record(self, shape, dtype, how) -> jax.ShapeDtypeStruct:
        placeholder = jax.ShapeDtypeStruct(tuple(shape), dtype)
        self.pending[id(placeholder)] = (placeholder, how)
        return placeholder


_recording: contextvars.ContextVar[_Draws | None] = contextvars.ContextVar("jaxbackbones_draws", default=None)


def _draw(key, shape, dtype, stddev):
    draws = _recording.get()
    if draws is not None and math.prod(shape) and _can_defer(key, jnp.dtype(dtype)):
        return draws.record(shape, jnp.dtype(dtype), (jax.random.key_data(key), stddev))
    return jax.random.normal(key, shape, dtype) * stddev


def _can_defer(key, dtype) -> bool:
    # the partitionable scheme is jax's default since 0.5 (and the only one once the flag is gone)
    return (dtype in _FAST_DTYPES and jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key) and key.shape == ()
            and str(jax.random.key_impl(key)) == "threefry2x32"
            and getattr(jax.config, "jax_threefry_partitionable", True))


def build_with_random_weights(build: Callable[[], nnx.Module], *, sharding=None,
                              on_device: bool | None = None) -> nnx.Module:
    """`build()`, its weights made all at once (see the module docstring): the same module, the same values.

    `sharding`: a function of a variable's shape giving its `jax.sharding.Sharding` (`sharding.ShardingRule`), to
    place each weight straight onto its devices, or None for the default device.
    `on_device` (without a sharding): cut the draws into the weights on the device, so that they never go to the
    host and back; by default wherever the default device is not the CPU. On the CPU the device's memory is the
    host's: there one copy costs less than compiling a slicing program per weight shape (ResNet-50's first
    from_config in a process: 0.7 s against 1.8 s on a loaded 2-core machine).
    """
    probe = jnp.zeros(())
    if isinstance(probe, jax.core.Tracer) or _recording.get() is not None:
        return build()  # under a trace every array is abstract; in `abstract_module` the weights are recorded there
    if on_device is None:
        on_device = sharding is None and all(device.platform != "cpu" for device in probe.devices())
    elif on_device and sharding is not None:
        raise ValueError("on_device=True draws onto the default device; with a sharding, each device receives its "
                         "own slice from the host")
    draws = _Draws()
    token = _recording.set(draws)
    try:
        model = build()
    finally:
        _recording.reset(token)
    if draws.pending:
        values = _make(list(draws.pending.values()), sharding, on_device)
        state = nnx.state(model)
        unplaced = values.keys() - {id(leaf) for leaf in jax.tree.leaves(state)}
        if unplaced:  # an initialiser's result that did not go straight into a variable: a bug of the module
            raise RuntimeError(f"{type(model).__name__}: {len(unplaced)} initial weights are not variables of the "
                               "module; build it directly instead")
        nnx.update(model, jax.tree.map(lambda leaf: values.get(id(leaf), leaf), state))
    return model


def abstract_module(build: Callable[[], nnx.Module]) -> nnx.Module:
    """What `nnx.eval_shape(build)` gives (every variable a `jax.ShapeDtypeStruct`; no weight made), for a `build`
    that draws through these initialisers, without a trace: `build()` runs eagerly with its weights recorded, as
    `build_with_random_weights` records them, and never made. Under a trace each rng stream's count update makes
    flax ask the traced count for its sharding, and jax's error for that walks the whole jaxpr traced so far:
    quadratic in the module's size (MiT-b5's skeleton: 38 s traced against 3 s so, on a loaded 2-core CPU)."""
    token = _recording.set(_Draws())
    try:
        model = build()
    finally:
        _recording.reset(token)
    nnx.update(model, jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype), nnx.state(model)))
    return model


def _make(pending, sharding, on_device: bool) -> dict[int, jax.Array]:
    """{id(placeholder): its array}: the constants filled with numpy, the normal draws through `_chunks`."""
    def put(value):
        return jax.device_put(value) if sharding is None else place(value, sharding(value.shape))

    values = {id(placeholder): put(np.full(placeholder.shape, how, placeholder.dtype))
              for placeholder, how in pending if not isinstance(how, tuple)}
    draws = [(placeholder, how) for placeholder, how in pending if isinstance(how, tuple)]
    keys_and_stddevs = jax.device_get([how for _, how in draws])
    for dtype in {placeholder.dtype for placeholder, _ in draws}:
        mine = [(placeholder, key, stddev) for (placeholder, _), (key, stddev) in zip(draws, keys_and_stddevs)
                if placeholder.dtype == dtype]
        if on_device:
            values.update((id(placeholder), array) for placeholder, array in _draw_on_device(mine, dtype))
            continue
        for placeholder, flat in _draw_rows(mine, dtype):
            values[id(placeholder)] = put(flat[:placeholder.size].reshape(placeholder.shape))
    return values


def _row_table(draws, dtype):
    """The kernel's rows for `draws` (key word 1, key word 2, counter high, counter low), their scales, and where
    each draw's rows end."""
    rows, stddevs, ends = [], [], []
    for placeholder, key, stddev in draws:
        offsets = np.arange(0, placeholder.size, CHUNK, dtype=np.uint64)
        rows.append(np.stack([np.full(offsets.shape, key[0], np.uint32), np.full(offsets.shape, key[1], np.uint32),
                              (offsets >> 32).astype(np.uint32), (offsets & 0xFFFFFFFF).astype(np.uint32)], 1))
        stddevs.append(np.full(offsets.shape, stddev, dtype))
        ends.append((ends[-1] if ends else 0) + len(offsets))
    return np.concatenate(rows), np.concatenate(stddevs), ends


def _run_kernel(rows, stddevs, batch: int, dtype, *, to_device: bool):
    """`_chunks` on `rows`, padded to `batch` rows; the table is put on the device explicitly."""
    padded_rows, padded_stddevs = np.zeros((batch, 4), np.uint32), np.zeros((batch,), dtype)
    padded_rows[:len(rows)], padded_stddevs[:len(rows)] = rows, stddevs
    made = _chunks(*jax.device_put((padded_rows, padded_stddevs)), jnp.dtype(dtype))
    return made if to_device else jax.device_get(made)


def _draw_on_device(draws, dtype):
    """Yield (placeholder, its device array) for each draw; the draws never leave the device.

    Rows of whole draws go into batches of `_ROW_BUCKETS` rows; a draw with more rows than a batch has batches of
    its own, joined on the device.
    """
    rows, stddevs, ends = _row_table(draws, dtype)
    batch = next((size for size in _ROW_BUCKETS if size >= len(rows)), _ROW_BUCKETS[-1])
    groups, group, first = [], [], 0  # groups of draws whose rows are made together
    for index, end in enumerate(ends):
        start = ends[index - 1] if index else 0
        if group and end - first > batch:
            groups.append(group)
            group, first = [], start
        group.append(index)
    groups.append(group)
    for group in groups:
        first, last = (ends[group[0] - 1] if group[0] else 0), ends[group[-1]]
        made = [_run_kernel(rows[row:min(row + batch, last)], stddevs[row:min(row + batch, last)], batch, dtype,
                            to_device=True) for row in range(first, last, batch)]
        if len(made) > 1:  # one draw larger than a batch
            (index,) = group
            yield draws[index][0], _join(tuple(made), draws[index][0].shape)
            continue
        for index in group:
            start = (ends[index - 1] if index else 0) - first
            yield draws[index][0], _take(made[0], jax.device_put(np.int32(start * CHUNK)), draws[index][0].shape)


@functools.partial(jax.jit, static_argnums=2)
def _take(made, start, shape):
    """The weight of `shape` whose rows begin `start` elements into a batch the kernel made."""
    return jax.lax.dynamic_slice_in_dim(made.reshape(-1), start, math.prod(shape)).reshape(shape)


@functools.partial(jax.jit, static_argnums=1)
def _join(made, shape):
    """The weight of `shape` whose rows fill the batches `made`, the last one in part."""
    return jnp.concatenate([batch.reshape(-1) for batch in made])[:math.prod(shape)].reshape(shape)


def _draw_rows(draws, dtype):
    """Yield (placeholder, its values flat on the host, padded to whole rows) for each draw, as soon as its rows
    are made.

    The kernel runs on batches of rows (`_ROW_BUCKETS`), a draw's rows in one batch or several; only the draws
    being made are held on the host at a time.
    """
    rows, stddevs, ends = _row_table(draws, dtype)
    batch = next((size for size in _ROW_BUCKETS if size >= len(rows)), _ROW_BUCKETS[-1])
    current, flat = 0, None  # the draw being filled, and its buffer
    for start in range(0, len(rows), batch):
        stop = min(start + batch, len(rows))
        made = _run_kernel(rows[start:stop], stddevs[start:stop], batch, dtype, to_device=False)
        row = start
        while row < stop:
            first = ends[current - 1] if current else 0
            if flat is None:
                flat = np.empty((ends[current] - first) * CHUNK, dtype)
            upto = min(stop, ends[current])
            flat[(row - first) * CHUNK:(upto - first) * CHUNK] = made[row - start:upto - start].reshape(-1)
            row = upto
            if upto == ends[current]:
                yield draws[current][0], flat
                current, flat = current + 1, None


@functools.partial(jax.jit, static_argnums=2)
def _chunks(rows, stddevs, dtype):
    keys = jax.random.wrap_key_data(rows, impl=_chunk_impl())
    draws = jax.vmap(lambda key: jax.random.normal(key, (CHUNK,), dtype))(keys)
    # Multiplied apart from the draw, as in eager mode: fused, XLA would fold stddev into normal's sqrt(2).
    return jax.lax.optimization_barrier(draws) * stddevs[:, None]


def _chunk_bits(key_data, bit_width: int, shape):
    """jax's partitionable threefry bits (`_threefry_random_bits_partitionable`: the two words of Threefry-2x32 of
    (key, 64-bit counter) xor-ed), the counter starting at the row's offset: key data (key word 1, key word 2,
    counter high word, counter low word), shape (CHUNK,)."""
    count = jax.lax.iota(np.uint32, shape[0])
    bits1, bits2 = _threefry2x32(key_data[0], key_data[1], jnp.broadcast_to(key_data[2], shape), key_data[3] + count)
    bits = bits1 ^ bits2
    return bits if bit_width == 32 else bits.astype(np.dtype(f"uint{bit_width}"))


def _threefry2x32(key1, key2, x1, x2):
    """Threefry-2x32 with 20 rounds (Salmon et al. 2011), as jax computes it, written out: XLA:CPU runs this ~10x
    faster than jax's own lowering there (a loop over the rounds)."""
    rotations = ((13, 15, 26, 6), (17, 29, 16, 24))
    keys = (key1, key2, key1 ^ key2 ^ np.uint32(0x1BD11BDA))
    x1, x2 = x1 + keys[0], x2 + keys[1]
    for group in range(5):
        for rotation in rotations[group % 2]:
            x1 = x1 + x2
            x2 = x1 ^ ((x2 << np.uint32(rotation)) | (x2 >> np.uint32(32 - rotation)))
        x1, x2 = x1 + keys[(group + 1) % 3], x2 + keys[(group + 2) % 3] + np.uint32(group + 1)
    return x1, x2


@functools.cache
def _chunk_impl():
    from jax.extend.random import define_prng_impl  # here, so that `import jaxbackbones` never depends on it

    def unsupported(*args):
        raise NotImplementedError("chunk keys only draw random bits")
    return define_prng_impl(key_shape=(4,), seed=unsupported, split=unsupported, random_bits=_chunk_bits,
                            fold_in=unsupported, name="jaxbackbones_threefry_chunk")
