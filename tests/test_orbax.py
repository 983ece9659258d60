"""Orbax checkpoints of a training run (model with its BatchNorm statistics, optimizer state, step): a resumed run
gives the losses of an uninterrupted one, bit for bit, on one device and sharded over 8 (each device restoring only
its own shards). The 8-device test runs in the subprocess of tests/test_sharding.py::test_on_8_virtual_devices."""

from __future__ import annotations

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from flax import nnx
from helpers import MULTIDEVICE_COUNT, SMALL_CONFIGS, fresh_model

from jaxbackbones import AutoBackbone, sharding, trainable_filter

# One transformation object: it is static in the optimizer's graphdef, so a new one would retrace the step.
OPTIMIZER = optax.adamw(1e-2)


def with_optimizer(model):
    return model, nnx.Optimizer(model, OPTIMIZER, wrt=trainable_filter(model))


def on_device(nodes):
    """Commit the arrays to the device, as restored ones are: jit compiles committed and uncommitted inputs apart,
    and the test wants one compiled step for all three runs."""
    nnx.update(nodes, jax.device_put(nnx.state(nodes), jax.devices()[0]))
    return nodes


def sharded_with_optimizer(mesh):
    model, optimizer = with_optimizer(sharding.shard_model(fresh_model("resnet"), mesh, "data"))
    return model, sharding.shard_model(optimizer, mesh, "data")


def assert_same_losses(expected, actual):
    np.testing.assert_array_equal(np.asarray(actual), np.asarray(expected))  # exactly


def batch(step, size=4):
    """The images of `step`: a function of the step, so a resumed run sees what an uninterrupted one saw."""
    return np.random.default_rng(step).standard_normal((size, 32, 32, 3)).astype(np.float32)


@nnx.jit
def train_step(model, optimizer, images, dropout_key):
    def loss_fn(model):
        # the dropout key is a function of the step too (families without dropout take no rngs)
        rngs = {"rngs": nnx.Rngs(dropout=dropout_key)} if "rngs" in inspect.signature(model).parameters else {}
        return sum(jnp.mean(jnp.square(f)) for f in model(images, **rngs).feature_maps)

    loss, grads = nnx.value_and_grad(loss_fn, argnums=nnx.DiffState(0, optimizer.wrt))(model)
    optimizer.update(model, grads)
    return loss


def train(model, optimizer, steps, mesh=None):
    losses = []
    for step in steps:
        images = batch(step) if mesh is None else sharding.shard_batch(batch(step, size=MULTIDEVICE_COUNT), mesh)
        losses.append(np.asarray(train_step(model, optimizer, images, jax.random.key(step))))
        if mesh is not None:
            # sharded runs keep their layout outside the step (so one jitted step serves both)
            sharding.shard_model(model, mesh, "data")
            sharding.shard_model(optimizer, mesh, "data")
    return losses


def assert_same_state(expected, actual):
    expected, actual = nnx.to_flat_state(nnx.state(expected)), nnx.to_flat_state(nnx.state(actual))
    assert [path for path, _ in expected] == [path for path, _ in actual]
    for (path, a), (_, b) in zip(expected, actual):
        assert np.array_equal(np.asarray(a.get_value()), np.asarray(b.get_value())), path


@pytest.mark.parametrize("family", ["resnet", "swin"])  # BatchNorm statistics; stochastic depth and dropout
def test_resumed_run_gives_bit_identical_losses(family, tmp_path):
    config = SMALL_CONFIGS[family]()
    model, optimizer = on_device(with_optimizer(fresh_model(family)))
    uninterrupted = train(model, optimizer, range(4))

    run, run_optimizer = on_device(with_optimizer(fresh_model(family)))
    assert_same_losses(uninterrupted[:2], train(run, run_optimizer, range(2)))
    options = ocp.CheckpointManagerOptions(max_to_keep=2)
    with ocp.CheckpointManager(tmp_path / "checkpoints", options=options) as manager:
        manager.save(2, args=ocp.args.StandardSave(nnx.state((run, run_optimizer))))

    # A new process: the abstract model and optimizer (no weights drawn), restored from the latest checkpoint.
    with ocp.CheckpointManager(tmp_path / "checkpoints", options=options) as manager:
        abstract = nnx.eval_shape(lambda: with_optimizer(AutoBackbone.from_config(config)))
        graphdef, abstract_state = nnx.split(abstract)
        step = manager.latest_step()
        restored, restored_optimizer = nnx.merge(
            graphdef, manager.restore(step, args=ocp.args.StandardRestore(abstract_state)))
    assert step == 2 and int(restored_optimizer.step[...]) == 2
    assert_same_state((run, run_optimizer), (restored, restored_optimizer))
    if "resnet" in family:  # the BatchNorm running statistics came back, moved by the two steps
        assert not np.array_equal(restored.stem.bn.var[...], np.ones_like(restored.stem.bn.var[...]))

    assert_same_losses(uninterrupted[2:], train(restored, restored_optimizer, range(2, 4)))
    assert_same_state((model, optimizer), (restored, restored_optimizer))


@pytest.mark.multidevice
def test_multidevice_sharded_checkpoint_restores_onto_the_abstract_sharded_model(tmp_path):
    mesh = sharding.make_mesh((MULTIDEVICE_COUNT,), ("data",))
    model, optimizer = sharded_with_optimizer(mesh)
    uninterrupted = train(model, optimizer, range(4), mesh)

    run, run_optimizer = sharded_with_optimizer(mesh)
    assert_same_losses(uninterrupted[:2], train(run, run_optimizer, range(2), mesh))
    with ocp.CheckpointManager(tmp_path) as manager:
        manager.save(2, args=ocp.args.StandardSave(nnx.state((run, run_optimizer))))

    config = SMALL_CONFIGS["resnet"]()
    abstract = nnx.eval_shape(lambda: with_optimizer(AutoBackbone.from_config(config)))
    graphdef, _ = nnx.split(abstract)
    target = sharding.abstract_state(abstract, mesh, "data")  # ShapeDtypeStructs with each variable's sharding
    with ocp.CheckpointManager(tmp_path) as manager:
        state = manager.restore(manager.latest_step(), args=ocp.args.StandardRestore(target))
    for (path, restored), (_, wanted) in zip(nnx.to_flat_state(state), nnx.to_flat_state(target)):
        array = restored.get_value()
        assert array.sharding == wanted.get_value().sharding, path  # each device holds (and read) only its shard
        if "data" in array.sharding.spec:
            assert {shard.data.size for shard in array.addressable_shards} == {array.size // MULTIDEVICE_COUNT}
    restored, restored_optimizer = nnx.merge(graphdef, state)
    assert_same_state((run, run_optimizer), (restored, restored_optimizer))
    kernel = restored.stages[1].blocks[0].convs[2].kernel[...]
    assert "data" in kernel.sharding.spec and len(kernel.addressable_shards) == MULTIDEVICE_COUNT

    assert_same_losses(uninterrupted[2:], train(restored, restored_optimizer, range(2, 4), mesh))
