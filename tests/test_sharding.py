"""Multi-device training: data parallel and FSDP-style sharding against one device, on 8 virtual CPU devices.

The 8-device tests need `XLA_FLAGS=--xla_force_host_platform_device_count=8` before jax starts, so
`test_on_8_virtual_devices` runs every `multidevice` test of the suite in a subprocess with it; in the normal session
they are deselected.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from helpers import run_multidevice_tests
from jax.sharding import AbstractMesh, AxisType, PartitionSpec

from jaxbackbones import (
    AutoBackbone,
    ResNetConfig,
    SwinConfig,
    sharding,
    trainable_filter,
)
from jaxbackbones.checkpoint import flat_state
from jaxbackbones.layers import BatchNorm

DEVICES = 8
# Deselected (by conftest) in a session with fewer devices: test_on_8_virtual_devices runs them in a subprocess.
multidevice = pytest.mark.multidevice
RESNET = dict(embedding_size=8, hidden_sizes=[16, 24, 32], depths=[1, 2, 1], out_indices=[1, 2, 3])
SWIN = dict(embed_dim=16, depths=[2], num_heads=[2], window_size=4, out_indices=[0, 1], drop_path_rate=0.0)
# Reduction order differs across devices: fp32 rounding, amplified where a gradient cancels. Biases that start at 0
# are nothing but their ~1e-5 updates, hence an absolute floor (parameters are O(1e-2..1)).
STEP_RTOL, STEP_ATOL = 1e-4, 1e-7


# --------------------------------------------------------------------------------------------------------------
# The rule (any device count)


def test_partition_spec_shards_largest_divisible_dimension():
    mesh = AbstractMesh((8, 2), ("data", "model"), axis_types=(AxisType.Auto,) * 2)
    assert sharding.partition_spec((3, 3, 64, 256), mesh, "data") == PartitionSpec(None, None, None, "data")
    assert sharding.partition_spec((3, 3, 64, 12), mesh, "data") == PartitionSpec(None, None, "data", None)
    assert sharding.partition_spec((64, 64), mesh, "data") == PartitionSpec(None, "data")  # the last of equals
    assert sharding.partition_spec((12,), mesh, "data") == PartitionSpec()  # nothing divisible: replicated
    assert sharding.partition_spec((), mesh, "data") == PartitionSpec()
    assert sharding.partition_spec((256,), mesh, None) == PartitionSpec()  # data parallel: replicated
    assert sharding.partition_spec((32, 48), mesh, ("data", "model")) == PartitionSpec(None, ("data", "model"))
    assert sharding.partition_spec((64, 8), mesh, "data", min_size=1024) == PartitionSpec()
    with pytest.raises(ValueError, match="not 'fsdp'"):
        sharding.partition_spec((64,), mesh, "fsdp")


def test_explicit_meshes_are_refused_with_a_hint():
    mesh = AbstractMesh((8,), ("data",), axis_types=(AxisType.Explicit,))
    with pytest.raises(ValueError, match="not AxisType.Auto.*make_mesh"):
        sharding.partition_spec((64,), mesh, "data")


def test_one_device_mesh_and_argument_checks():
    mesh = sharding.make_mesh((1,), ("data",))
    model = AutoBackbone.from_config(ResNetConfig(**RESNET), mesh=mesh, shard_axis="data")
    assert model.stem.conv.kernel[...].sharding.mesh.shape == {"data": 1}
    with pytest.raises(ValueError, match="needs a mesh"):
        AutoBackbone.from_config(ResNetConfig(**RESNET), shard_axis="data")


def test_on_8_virtual_devices():
    """Every `multidevice` test of the suite (this file's, test_orbax.py's), in one subprocess with 8 devices."""
    if jax.device_count() >= DEVICES:
        return  # already on 8 devices: the multidevice tests run directly in this session
    run_multidevice_tests(Path(__file__).parent)


# --------------------------------------------------------------------------------------------------------------
# On 8 devices


def pixels(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def run_steps(model, x, *, mesh=None, axis=None, steps=3):
    """SGD-momentum steps on loss = sum of mean squares of the feature maps; (losses, optimizer)."""
    model.train()
    wrt = trainable_filter(model)
    optimizer = nnx.Optimizer(model, optax.sgd(0.05, momentum=0.9), wrt=wrt)

    def loss_fn(model, x):
        return sum(jnp.mean(jnp.square(f)) for f in model(x).feature_maps)

    @nnx.jit
    def step(model, optimizer, x):
        loss, grads = nnx.value_and_grad(loss_fn, argnums=nnx.DiffState(0, wrt))(model, x)
        optimizer.update(model, grads)
        if mesh is not None:  # keep parameters and optimizer state laid out as they came in
            sharding.constrain(model, mesh, axis)
            sharding.constrain(optimizer, mesh, axis)
        return loss

    if mesh is not None:
        x = sharding.shard_batch(x, mesh)
    return [float(step(model, optimizer, x)) for _ in range(steps)], optimizer


def arrays(node):
    return {path: np.asarray(v[...]) for path, v in flat_state(node).items()}


def assert_same_training(reference, model, reference_losses, losses):
    np.testing.assert_allclose(losses, reference_losses, rtol=1e-5)
    expected, got = arrays(reference), arrays(model)
    assert set(expected) == set(got)
    for path in expected:  # parameters and BatchNorm statistics
        np.testing.assert_allclose(got[path], expected[path], rtol=STEP_RTOL, atol=STEP_ATOL, err_msg=path)


def specs(node):
    """Partition spec of every variable, trailing Nones dropped (P(None, 'data', None) == P(None, 'data'))."""
    def normal(spec):
        spec = tuple(spec)
        while spec and spec[-1] is None:
            spec = spec[:-1]
        return spec

    return {path: normal(v[...].sharding.spec) for path, v in flat_state(node).items()}


@multidevice
def test_multidevice_resnet_data_parallel_and_fsdp_match_one_device():
    mesh = sharding.make_mesh((DEVICES,), ("data",))
    x = pixels((16, 32, 32, 3))
    config = ResNetConfig(**RESNET)
    reference = AutoBackbone.from_config(config, rngs=nnx.Rngs(0))
    reference_losses, _ = run_steps(reference, x)
    assert reference_losses[-1] < reference_losses[0]
    assert reference.stem.conv.kernel[...].sharding.is_fully_replicated  # one device

    replicated = AutoBackbone.from_config(config, rngs=nnx.Rngs(0), mesh=mesh)
    assert all(spec == () for spec in specs(replicated).values())
    losses, _ = run_steps(replicated, x, mesh=mesh)
    assert_same_training(reference, replicated, reference_losses, losses)

    sharded = AutoBackbone.from_config(config, rngs=nnx.Rngs(0), mesh=mesh, shard_axis="data")
    before = specs(sharded)
    losses, optimizer = run_steps(sharded, x, mesh=mesh, axis="data")
    assert_same_training(reference, sharded, reference_losses, losses)
    after = specs(sharded)
    assert after == before
    split = [path for path, spec in after.items() if "data" in spec]
    assert "stages.2.blocks.0.convs.2.kernel" in split and len(split) > len(after) // 2
    for path in split:
        array = flat_state(sharded)[path][...]
        assert len(array.addressable_shards) == DEVICES
        assert array.addressable_shards[0].data.size == array.size // DEVICES
    momentum = [v[...] for p, v in flat_state(optimizer).items() if p.endswith("stages.2.blocks.0.convs.2.kernel")]
    assert momentum and "data" in momentum[0].sharding.spec


@multidevice
def test_multidevice_swin_fsdp_matches_one_device():
    mesh = sharding.make_mesh((DEVICES,), ("data",))
    x = pixels((8, 24, 20, 3), seed=1)
    reference = AutoBackbone.from_config(SwinConfig(**SWIN), rngs=nnx.Rngs(0))
    reference_losses, _ = run_steps(reference, x, steps=2)
    sharded = AutoBackbone.from_config(SwinConfig(**SWIN), rngs=nnx.Rngs(0), mesh=mesh, shard_axis="data")
    losses, _ = run_steps(sharded, x, mesh=mesh, axis="data", steps=2)
    assert_same_training(reference, sharded, reference_losses, losses)
    assert "data" in sharded.stages[0].blocks[1].mlp.fc1.kernel[...].sharding.spec


@multidevice
def test_multidevice_batch_norm_statistics_are_global():
    mesh = sharding.make_mesh((DEVICES,), ("data",))
    x = pixels((16, 24, 24, 3), seed=2)
    forward = nnx.jit(lambda model, x: model(x).feature_maps)
    models = {}
    for name, kwargs, batch in [("one", {}, x), ("mesh", dict(mesh=mesh, shard_axis="data"), None),
                                ("shard", {}, x[:2])]:
        model = AutoBackbone.from_config(ResNetConfig(**RESNET), rngs=nnx.Rngs(0), **kwargs)
        model.train()
        forward(model, sharding.shard_batch(x, mesh) if batch is None else batch)
        models[name] = {p: np.asarray(v[...]) for p, v in flat_state(model).items()
                        if p.endswith((".mean", ".var"))}
    assert len(models["one"]) == 2 * sum(isinstance(m, BatchNorm) for _, m in nnx.iter_modules(model))
    for path, value in models["one"].items():
        np.testing.assert_allclose(models["mesh"][path], value, rtol=1e-5, atol=1e-6, err_msg=path)
    # and not the statistics of one device's 2 images
    assert any(not np.allclose(models["shard"][p], v, rtol=1e-3) for p, v in models["one"].items())


@multidevice
def test_multidevice_from_pretrained_places_weights_sharded(tmp_path):
    mesh = sharding.make_mesh((DEVICES,), ("data",))
    source = AutoBackbone.from_config(ResNetConfig(**RESNET), rngs=nnx.Rngs(4))
    source.save_pretrained(tmp_path)
    model = AutoBackbone.from_pretrained(tmp_path, mesh=mesh, shard_axis="data")
    expected = arrays(source)
    for path, variable in flat_state(model).items():
        array = variable[...]
        np.testing.assert_array_equal(np.asarray(array), expected[path])
        assert array.sharding.mesh.shape == mesh.shape
        divisible = any(d % DEVICES == 0 for d in array.shape)
        assert ("data" in array.sharding.spec) == divisible, (path, array.shape, array.sharding.spec)
    outputs = model(sharding.shard_batch(pixels((8, 32, 32, 3)), mesh))
    reference = source
    reference.eval()
    for a, b in zip(reference(jnp.asarray(pixels((8, 32, 32, 3)))).feature_maps, outputs.feature_maps):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-5)


@pytest.fixture
def sharded_swin_checkpoint(tmp_path):
    """A transformers Swin checkpoint in three files, one attention's query, key and value in different files."""
    import transformers
    from helpers import randomize_torch_module, write_sharded_safetensors

    from jaxbackbones.checkpoint import read_safetensors

    config = transformers.SwinConfig(embed_dim=16, depths=[1, 2], num_heads=[2, 4], window_size=4, image_size=32,
                                     out_indices=[1, 2])
    torch_model = randomize_torch_module(transformers.SwinBackbone(config).eval(), seed=6)
    torch_model.save_pretrained(tmp_path / "single")
    tensors = {k: np.array(a) for k, a in read_safetensors(tmp_path / "single" / "model.safetensors").items()}
    split = [f"encoder.layers.1.blocks.1.attention.self.{role}.weight" for role in ("query", "key", "value")]
    rest = sorted(set(tensors) - set(split))
    third = len(rest) // 3
    config.save_pretrained(tmp_path / "sharded")
    write_sharded_safetensors(tmp_path / "sharded", tensors, [rest[:third] + split[:1],
                                                              rest[third:2 * third] + split[1:2],
                                                              rest[2 * third:] + split[2:]])
    return tmp_path / "sharded", tensors


def device_bytes(model):
    """Bytes of model state each device holds: the sum of its shards' sizes."""
    held = {}
    for variable in flat_state(model).values():
        for shard in variable[...].addressable_shards:
            held[shard.device] = held.get(shard.device, 0) + shard.data.nbytes
    return held


@multidevice
def test_multidevice_from_pretrained_reads_each_devices_slice_only(sharded_swin_checkpoint, monkeypatch):
    folder, _ = sharded_swin_checkpoint
    mesh = sharding.make_mesh((DEVICES,), ("data",))
    reference = AutoBackbone.from_pretrained(folder, cache_conversion=False)
    assert reference.stages[1].blocks[1].attn.qkv.kernel[...].sharding.is_fully_replicated  # one device
    expected = arrays(reference)

    slices = []  # (full shape, shape of what one callback returned)
    make_array = jax.make_array_from_callback

    def recording(shape, array_sharding, callback, *args, **kwargs):
        def recorded(index):
            value = callback(index)
            slices.append((tuple(shape), value.shape))
            return value

        return make_array(shape, array_sharding, recorded, *args, **kwargs)

    monkeypatch.setattr(jax, "make_array_from_callback", recording)
    model = AutoBackbone.from_pretrained(folder, mesh=mesh, shard_axis="data", cache_conversion=False)
    monkeypatch.undo()
    assert specs(model) == {path: spec for path, spec in specs(sharding.shard_model(reference, mesh, "data")).items()}

    model_bytes, sharded_bytes = 0, 0
    for path, variable in flat_state(model).items():
        array = variable[...]
        np.testing.assert_array_equal(np.asarray(array), expected[path], err_msg=path)  # bit for bit
        assert array.dtype == expected[path].dtype
        model_bytes += array.nbytes
        if "data" in array.sharding.spec:
            sharded_bytes += array.nbytes
            assert sorted(shard.data.size for shard in array.addressable_shards) == [array.size // DEVICES] * DEVICES
    assert sharded_bytes > 0.9 * model_bytes  # nearly every byte is in a split array
    # Each device holds its slices and the replicated rest, nothing more; no callback made more than a device's slice.
    held = device_bytes(model)
    assert set(held) == set(mesh.devices.flat)
    assert set(held.values()) == {model_bytes - sharded_bytes + sharded_bytes // DEVICES}
    split_shapes = {tuple(v[...].shape) for v in flat_state(model).values() if "data" in v[...].sharding.spec}
    for shape, returned in slices:
        if shape in split_shapes:
            assert np.prod(returned) == np.prod(shape) // DEVICES, (shape, returned)
    assert len(slices) >= len(flat_state(model))

    # By repo id: the conversion is cached (gathered one array at a time) and read back sharded, the same values.
    from helpers import write_to_hub_cache

    from jaxbackbones import hub

    commit = write_to_hub_cache(folder, "test-org/swin-sharded-mesh")
    AutoBackbone.from_pretrained("test-org/swin-sharded-mesh", mesh=mesh, shard_axis="data")
    assert (hub.conversion_cache_dir() / "models--test-org--swin-sharded-mesh" / commit / "float32").is_dir()
    cached = AutoBackbone.from_pretrained("test-org/swin-sharded-mesh", mesh=mesh, shard_axis="data")
    assert specs(cached) == specs(model)
    for path, value in arrays(cached).items():
        np.testing.assert_array_equal(value, expected[path], err_msg=path)

    # bfloat16 parameters: each slice cast on its own (round to nearest even, as one device's cast)
    half = AutoBackbone.from_pretrained(folder, mesh=mesh, shard_axis="data", param_dtype=jnp.bfloat16,
                                       cache_conversion=False)
    for path, value in arrays(half).items():
        assert value.dtype == jnp.bfloat16
        np.testing.assert_array_equal(value, expected[path].astype(jnp.bfloat16), err_msg=path)


@multidevice
def test_multidevice_sharded_checkpoint_errors_name_every_key(sharded_swin_checkpoint):
    from helpers import write_sharded_safetensors

    from jaxbackbones import CheckpointMismatchError

    folder, tensors = sharded_swin_checkpoint
    tensors = dict(tensors)
    del tensors["encoder.layers.0.blocks.0.layernorm_before.bias"]
    tensors["encoder.layers.5.blocks.0.layernorm_before.bias"] = np.zeros(16, np.float32)
    keys = sorted(tensors)
    write_sharded_safetensors(folder, tensors, [keys[: len(keys) // 2], keys[len(keys) // 2:]])
    for stale in sorted(folder.glob("model-*-of-00003.safetensors")):
        stale.unlink()
    mesh = sharding.make_mesh((DEVICES,), ("data",))
    with pytest.raises(CheckpointMismatchError) as error:
        AutoBackbone.from_pretrained(folder, mesh=mesh, shard_axis="data", cache_conversion=False)
    message = str(error.value)
    assert "missing from the checkpoint (1): stages.0.blocks.0.norm1.bias" in message
    assert "unexpected in the checkpoint (1): encoder.layers.5.blocks.0.layernorm_before.bias" in message


# --------------------------------------------------------------------------------------------------------------
# Two processes (multi-host), each with 2 CPU devices, over jax.distributed and gloo

WORKER = """
import json, os, sys
process, port, folder = int(sys.argv[1]), sys.argv[2], sys.argv[3]
import jax
try:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
except Exception as error:  # a jax without CPU collectives
    print(json.dumps({"skip": f"no gloo CPU collectives: {error}"}), flush=True)
    sys.exit(0)
jax.distributed.initialize(f"localhost:{port}", num_processes=2, process_id=process)
import numpy as np
from jaxbackbones import AutoBackbone, sharding
sys.path.insert(0, os.path.dirname(os.path.abspath(sys.argv[0])))
from steps import LOCAL_BATCH, batch, train

mesh = sharding.make_mesh((jax.device_count(),), ("data",))
model = AutoBackbone.from_pretrained(folder, mesh=mesh, shard_axis="data", cache_conversion=False)
local = batch()[process * LOCAL_BATCH:(process + 1) * LOCAL_BATCH]  # this process's part of the global batch
losses = train(model, sharding.shard_batch(local, mesh), mesh)
kernel = model.stages[1].blocks[0].convs[2].kernel[...]
print(json.dumps({"devices": jax.device_count(), "local_devices": jax.local_device_count(), "losses": losses,
                  "spec": [str(axis) for axis in kernel.sharding.spec],
                  "local_shards": len(kernel.addressable_shards), "shard_size": kernel.addressable_shards[0].data.size,
                  "size": kernel.size}), flush=True)
"""

STEPS = """
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxbackbones import sharding, trainable_filter

LOCAL_BATCH = 4


def batch():
    return np.random.default_rng(0).standard_normal((2 * LOCAL_BATCH, 32, 32, 3)).astype(np.float32)


def train(model, x, mesh=None, steps=2):
    model.train()
    wrt = trainable_filter(model)
    optimizer = nnx.Optimizer(model, optax.sgd(0.05, momentum=0.9), wrt=wrt)

    @nnx.jit
    def step(model, optimizer, x):
        def loss_fn(model):
            return sum(jnp.mean(jnp.square(f)) for f in model(x).feature_maps)

        loss, grads = nnx.value_and_grad(loss_fn, argnums=nnx.DiffState(0, wrt))(model)
        optimizer.update(model, grads)
        if mesh is not None:
            sharding.constrain(model, mesh, "data")
            sharding.constrain(optimizer, mesh, "data")
        return loss

    return [float(step(model, optimizer, x)) for _ in range(steps)]
"""


def test_two_processes_train_like_one(tmp_path):
    (tmp_path / "worker.py").write_text(WORKER)
    (tmp_path / "steps.py").write_text(STEPS)
    folder = tmp_path / "backbone"
    source = AutoBackbone.from_config(ResNetConfig(embedding_size=8, hidden_sizes=[16, 24], depths=[1, 1],
                                                   out_indices=[1, 2]), rngs=nnx.Rngs(0))
    source.save_pretrained(folder)

    spec = importlib.util.spec_from_file_location("two_process_steps", tmp_path / "steps.py")
    steps = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(steps)
    reference = steps.train(AutoBackbone.from_pretrained(folder), steps.batch())

    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        port = probe.getsockname()[1]
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=2".strip()
    workers = [subprocess.Popen([sys.executable, str(tmp_path / "worker.py"), str(process), str(port), str(folder)],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for process in range(2)]
    results = []
    for worker in workers:
        try:
            out, err = worker.communicate(timeout=240)
        except subprocess.TimeoutExpired:
            for other in workers:
                other.kill()
            pytest.fail("a worker process timed out")
        assert worker.returncode == 0, err[-4000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    if any("skip" in result for result in results):
        pytest.skip(results[0].get("skip", results[-1].get("skip")))
    for result in results:
        assert (result["devices"], result["local_devices"]) == (4, 2)
        np.testing.assert_allclose(result["losses"], reference, rtol=1e-5)
        assert result["spec"][-1] == "data" and result["local_shards"] == 2
        assert result["shard_size"] == result["size"] // 4
