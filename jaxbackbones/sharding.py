"""Data parallel and FSDP-style parameter sharding over a `jax.sharding.Mesh`.

The rule is the one FSDP uses, without flattening: each variable is split along its largest dimension that the
mesh axis (or axes) divides, and replicated when none does (biases of odd size, scalars). With `axis=None` every
variable is replicated: plain data parallelism. The batch is split along its first dimension over the same axis
(or over all of a `(data, fsdp)` mesh). Under `jax.jit` XLA then inserts the all-gathers and reduce-scatters, and
the BatchNorm statistics of a sharded batch are the global batch's.

    mesh = make_mesh((jax.device_count(),), ("data",))
    model = AutoBackbone.from_pretrained(name, mesh=mesh, shard_axis="data")   # weights placed sharded
    batch = shard_batch(local_images, mesh, "data")                             # this process's part of the batch

The mesh's axes must be `AxisType.Auto` (sharding in types, jax's `Explicit` mode, would need every operation
annotated); `make_mesh` builds one, where `jax.make_mesh` on jax >= 0.9 defaults to `Explicit`.

Multi-host: call `jax.distributed.initialize()` first; the mesh then spans every process's devices, each process
reads the checkpoint and places only its own shards (`jax.make_array_from_callback`), and `shard_batch` assembles
the global batch from each process's local part (`jax.make_array_from_process_local_data`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

Axis = str | Sequence[str] | None


def make_mesh(axis_shapes: Sequence[int], axis_names: Sequence[str], *, devices=None) -> Mesh:
    """`jax.make_mesh` with every axis `AxisType.Auto` (what the backbones need)."""
    axis_types = (jax.sharding.AxisType.Auto,) * len(axis_names)
    return jax.make_mesh(tuple(axis_shapes), tuple(axis_names), axis_types=axis_types, devices=devices)


def _check_auto(mesh: Mesh) -> None:
    explicit = [name for name, kind in zip(mesh.axis_names, getattr(mesh, "axis_types", ()))
                if kind != jax.sharding.AxisType.Auto]
    if explicit:
        raise ValueError(
            f"mesh axes {explicit} are not AxisType.Auto; jaxbackbones shards with automatic (GSPMD) propagation: "
            "build the mesh with jaxbackbones.sharding.make_mesh, or jax.make_mesh(..., axis_types=(AxisType.Auto,)*n)"
        )


def _axis_size(mesh: Mesh, axis: Axis) -> int:
    _check_auto(mesh)
    if axis is None:
        return 1
    names = (axis,) if isinstance(axis, str) else tuple(axis)
    for name in names:
        if name not in mesh.shape:
            raise ValueError(f"mesh has axes {tuple(mesh.shape)}, not {name!r}")
    return math.prod(mesh.shape[name] for name in names)


def _spec_axis(axis: Axis):
    return axis if axis is None or isinstance(axis, str) else tuple(axis)


def partition_spec(shape: Sequence[int], mesh: Mesh, axis: Axis, *, min_size: int = 0) -> PartitionSpec:
    """Shard the largest dimension of `shape` that `axis` divides (the last of equals); replicate otherwise.

    Arrays with fewer than `min_size` elements are replicated.
    """
    size = _axis_size(mesh, axis)
    if size == 1 or math.prod(shape) < max(min_size, 1):
        return PartitionSpec()
    candidates = [dim for dim, length in enumerate(shape) if length % size == 0 and length >= size]
    if not candidates:
        return PartitionSpec()
    chosen = max(candidates, key=lambda dim: (shape[dim], dim))
    return PartitionSpec(*[_spec_axis(axis) if dim == chosen else None for dim in range(len(shape))])


@dataclasses.dataclass(frozen=True)
class ShardingRule:
    """Where each variable goes: `rule(shape)` -> `NamedSharding` (see `partition_spec`)."""

    mesh: Mesh
    axis: Axis = None
    min_size: int = 0

    def __call__(self, shape: Sequence[int]) -> NamedSharding:
        return NamedSharding(self.mesh, partition_spec(tuple(shape), self.mesh, self.axis, min_size=self.min_size))


def place(value, sharding: jax.sharding.Sharding, *, dtype=None) -> jax.Array:
    """A host array (numpy, memory map) as a global array laid out by `sharding`, in `dtype` (default: its own).

    Each device receives its own slice, read from `value` and cast on its own: nothing holds the whole array
    unless a device does, and each process reads only the slices of its own devices, so this also works multi-host
    (every process passing the same value).
    """
    value = np.asarray(value)
    dtype = value.dtype if dtype is None else np.dtype(dtype)
    # A copy: on CPU, jax may keep the buffer it is given (here a view into a memory map or a caller's array).
    return jax.make_array_from_callback(value.shape, sharding, lambda index: np.array(value[index], dtype=dtype))


def state_shardings(state, mesh: Mesh, axis: Axis = None, *, min_size: int = 0):
    """The `NamedSharding` of every variable of an NNX state (or any pytree of arrays), same structure."""
    rule = ShardingRule(mesh, axis, min_size)
    return jax.tree.map(lambda leaf: rule(np.shape(leaf)), state)


def shard_model(node, mesh: Mesh, axis: Axis = None, *, min_size: int = 0):
    """Move every variable of an NNX module (or optimizer) onto `mesh`: sharded along `axis` (FSDP-style), or
    replicated with `axis=None`. In place; returns `node`."""
    state = nnx.state(node)
    shardings = state_shardings(state, mesh, axis, min_size=min_size)
    nnx.update(node, jax.tree.map(_move, state, shardings))
    return node


def abstract_state(node, mesh: Mesh, axis: Axis = None, *, min_size: int = 0):
    """The state of an NNX module or optimizer (abstract, from `nnx.eval_shape`, or not) as `jax.ShapeDtypeStruct`s
    carrying the `NamedSharding` `shard_model` gives each variable: the target to restore a checkpoint onto, so
    that each device reads only its own shards (`orbax.checkpoint.args.StandardRestore(abstract_state(...))`)."""
    state = nnx.state(node)
    return jax.tree.map(lambda leaf, sharding: jax.ShapeDtypeStruct(np.shape(leaf), leaf.dtype, sharding=sharding),
                        state, state_shardings(state, mesh, axis, min_size=min_size))


def _move(value, sharding: jax.sharding.Sharding) -> jax.Array:
    if isinstance(value, jax.Array) and value.sharding == sharding:  # placed already (from_config's weights)
        return value
    if sharding.is_fully_addressable:
        return jax.device_put(value, sharding)
    # Multi-host: every process holds the same (host-loaded) value; each places only its own shards.
    return place(np.asarray(value), sharding)


def constrain(node, mesh: Mesh, axis: Axis = None, *, min_size: int = 0):
    """Inside `jit`: pin every variable of `node` to the layout `shard_model` gives it (so updated parameters and
    optimizer state come out of a training step sharded as they went in). In place; returns `node`."""
    state = nnx.state(node)
    shardings = state_shardings(state, mesh, axis, min_size=min_size)
    nnx.update(node, jax.lax.with_sharding_constraint(state, shardings))
    return node


def batch_sharding(mesh: Mesh, axis: Axis = None) -> NamedSharding:
    """Split the batch dimension over `axis` (default: every axis of the mesh)."""
    axis = tuple(mesh.axis_names) if axis is None else axis
    _axis_size(mesh, axis)
    return NamedSharding(mesh, PartitionSpec(_spec_axis(axis)))


def shard_batch(local_batch, mesh: Mesh, axis: Axis = None):
    """The global batch from this process's part of it (the whole batch when there is one process); a pytree of
    arrays with the batch first, split over `axis` (default: every axis of the mesh)."""
    sharding = batch_sharding(mesh, axis)
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local_batch)
