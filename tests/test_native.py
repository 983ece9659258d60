"""The native format: save -> load bit-exact, no torch at load time, the conversion cache, atomic writes."""

import errno
import json
import mmap
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import transformers
from flax import nnx
from helpers import randomize_torch_module, write_to_hub_cache

from jaxbackbones import AutoBackbone, ResNetConfig, checkpoint, hub
from jaxbackbones.checkpoint import NATIVE_WEIGHTS_NAME, flat_state

SMALL = dict(embedding_size=8, hidden_sizes=[16, 24], depths=[1, 2], out_indices=[0, 1, 2])


def assert_same_state(a, b):
    state_a, state_b = flat_state(a), flat_state(b)
    assert state_a.keys() == state_b.keys()
    for path in state_a:
        x, y = np.asarray(state_a[path][...]), np.asarray(state_b[path][...])
        assert x.dtype == y.dtype and np.array_equal(x, y), path


def train_steps(model, steps=2):
    """A few SGD steps in train mode: weights and BatchNorm statistics both change."""
    model.train()
    optimizer = nnx.Optimizer(model, optax.sgd(0.1), wrt=nnx.Param)
    pixels = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))

    @nnx.jit
    def step(model, optimizer):
        grads = nnx.grad(lambda m: sum(jnp.mean(f ** 2) for f in m(pixels).feature_maps))(model)
        optimizer.update(model, grads)

    for _ in range(steps):
        step(model, optimizer)
    model.eval()


@pytest.mark.parametrize("param_dtype", [jnp.float32, jnp.bfloat16])
def test_save_load_is_bit_exact_after_training(tmp_path, param_dtype):
    model = AutoBackbone.from_config(ResNetConfig(**SMALL), rngs=nnx.Rngs(3), param_dtype=param_dtype)
    before = {path: np.asarray(v[...]).copy() for path, v in flat_state(model).items()}
    train_steps(model)
    changed = [path for path, v in flat_state(model).items() if not np.array_equal(before[path], v[...])]
    assert any(p.endswith(".mean") for p in changed) and any(p.endswith(".kernel") for p in changed)

    model.save_pretrained(tmp_path / "native")
    assert sorted(os.listdir(tmp_path / "native")) == ["config.json", NATIVE_WEIGHTS_NAME]
    loaded = AutoBackbone.from_pretrained(tmp_path / "native", param_dtype=param_dtype)
    assert_same_state(model, loaded)
    pixels = jnp.ones((1, 40, 40, 3))
    for a, b in zip(model(pixels).feature_maps, loaded(pixels).feature_maps):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    config = json.loads((tmp_path / "native" / "config.json").read_text())
    assert config["model_type"] == "resnet" and config["jaxbackbones"]["format_version"] == 1
    assert config["jaxbackbones"]["param_dtype"] == jnp.dtype(param_dtype).name


def test_native_load_does_not_import_torch(tmp_path):
    AutoBackbone.from_config(ResNetConfig(**SMALL)).save_pretrained(tmp_path / "native")
    script = (
        "import sys, jax.numpy as jnp\n"
        "from jaxbackbones import AutoBackbone\n"
        f"model = AutoBackbone.from_pretrained({str(tmp_path / 'native')!r})\n"
        "model(jnp.zeros((1, 32, 32, 3)))\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def resident_bytes_of(path) -> int:
    """How much of the file at `path` this process's memory maps of it hold resident: the present bits of their
    pages in /proc/self/pagemap (reading /proc/self/smaps instead walks every mapping of the process: seconds in a
    long-lived test worker)."""
    page, resident = mmap.PAGESIZE, 0
    with open("/proc/self/pagemap", "rb") as pagemap:
        for low, high, _ in checkpoint.mapped_regions(path):
            pagemap.seek(low // page * 8)
            entries = np.frombuffer(pagemap.read((high - low) // page * 8), dtype=np.uint64)
            resident += int(np.count_nonzero(entries >> np.uint64(63))) * page
    return resident


def write_large_small_model(folder, kind):
    """A ResNet whose weights (15 MB) are many tensors of at most 2.4 MB: a native folder, or a torch .bin one."""
    hidden_sizes, depths = [256, 512, 1024], [2, 2, 3]
    if kind == "native":
        AutoBackbone.from_config(ResNetConfig(embedding_size=32, hidden_sizes=hidden_sizes,
                                              depths=depths)).save_pretrained(folder)
        return folder / NATIVE_WEIGHTS_NAME
    import torch

    model = transformers.ResNetBackbone(transformers.ResNetConfig(embedding_size=32, hidden_sizes=hidden_sizes,
                                                                  depths=depths))
    model.config.save_pretrained(folder)
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    return folder / "pytorch_model.bin"


@pytest.mark.parametrize("kind", ["native", "bin"])
def test_loading_holds_one_tensor_of_the_file_at_a_time(tmp_path, monkeypatch, kind):
    # Every tensor is read from the memory-mapped file while it is placed, and its pages released once placed; a
    # loader that read the whole file before placing it, or kept the pages it read mapped (torch's own map of a
    # .bin file), holds the whole file resident.
    path = os.path.realpath(write_large_small_model(tmp_path / kind, kind))
    release_pages, resident = checkpoint.release_pages, []

    def recording_release(array):
        resident.append((array.nbytes, resident_bytes_of(path)))
        release_pages(array)

    monkeypatch.setattr(checkpoint, "release_pages", recording_release)
    AutoBackbone.from_pretrained(tmp_path / kind, cache_conversion=False)
    largest = max(nbytes for nbytes, _ in resident)
    # what one tensor in flight may keep mapped: itself and the rest of the windows its reads map
    bound = largest + 2 * checkpoint.FAULT_AROUND_BYTES
    assert os.path.getsize(path) > 2 * bound
    # the tensor being released is resident (it was read from the map), and little else of the file is
    assert max(held for nbytes, held in resident if nbytes == largest) >= largest
    assert max(held for _, held in resident) <= bound


def hub_checkpoint(tmp_path, repo_id, seed=0):
    torch_model = randomize_torch_module(transformers.ResNetBackbone(transformers.ResNetConfig(**SMALL)), seed)
    torch_model.save_pretrained(tmp_path / repo_id)
    return write_to_hub_cache(tmp_path / repo_id, repo_id)


def break_weights(repo_id, commit):
    """Make the hub copy of the torch weights unreadable, so only a cached conversion can load."""
    snapshot = hub.resolve_file(repo_id, "model.safetensors", revision=commit)
    os.unlink(snapshot)
    snapshot.write_bytes(b"\x00")


def test_conversion_is_cached_by_repo_and_commit(tmp_path):
    commit = hub_checkpoint(tmp_path, "test-org/cached", seed=1)
    first = AutoBackbone.from_pretrained("test-org/cached", out_indices=[-1])
    cache = hub.conversion_cache_dir() / "models--test-org--cached" / commit / "float32"
    assert (cache / NATIVE_WEIGHTS_NAME).is_file()
    # the cache keeps the hub's own stage selection, not the first caller's
    assert json.loads((cache / "config.json").read_text())["out_indices"] == [0, 1, 2]

    break_weights("test-org/cached", commit)
    second = AutoBackbone.from_pretrained("test-org/cached", out_indices=[-1])
    assert_same_state(first, second)
    assert second.out_indices == [-1]
    with pytest.raises(checkpoint.CheckpointError):
        AutoBackbone.from_pretrained("test-org/cached", cache_conversion=False)

    # a new commit is converted again
    new_commit = hub_checkpoint(tmp_path, "test-org/cached", seed=2)
    third = AutoBackbone.from_pretrained("test-org/cached")
    assert (hub.conversion_cache_dir() / "models--test-org--cached" / new_commit / "float32").is_dir()
    assert not np.array_equal(np.asarray(third.stem.conv.kernel[...]), np.asarray(first.stem.conv.kernel[...]))


def test_cache_can_be_disabled(tmp_path, monkeypatch):
    hub_checkpoint(tmp_path, "test-org/uncached")
    monkeypatch.setenv("JAXBACKBONES_CACHE", "0")
    assert hub.conversion_cache_dir() is None
    AutoBackbone.from_pretrained("test-org/uncached")
    monkeypatch.undo()
    assert not (hub.conversion_cache_dir() / "models--test-org--uncached").exists()


def test_failed_write_leaves_nothing_behind(tmp_path, monkeypatch):
    model = AutoBackbone.from_config(ResNetConfig(**SMALL))
    model.save_pretrained(tmp_path / "out")
    original = (tmp_path / "out" / NATIVE_WEIGHTS_NAME).read_bytes()

    def failing_write(writer, key, array):  # the disk fills up after the header, mid-way through the tensors
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint.SafetensorsWriter, "write", failing_write)
    other = AutoBackbone.from_config(ResNetConfig(**SMALL), rngs=nnx.Rngs(9))
    with pytest.raises(OSError, match="No space left on device"):
        other.save_pretrained(tmp_path / "out")
    with pytest.raises(OSError, match="No space left on device"):
        other.save_pretrained(tmp_path / "fresh")
    assert sorted(os.listdir(tmp_path)) == ["out"]  # no partial folder, no temporary left
    assert (tmp_path / "out" / NATIVE_WEIGHTS_NAME).read_bytes() == original


def test_existing_folder_is_kept_without_overwrite(tmp_path):
    (tmp_path / "out").mkdir()
    with pytest.raises(FileExistsError, match="already exists; pass --force"):
        AutoBackbone.from_config(ResNetConfig(**SMALL)).save_pretrained(tmp_path / "out", overwrite=False)


def test_unwritable_location_is_named(tmp_path):
    (tmp_path / "a-file").write_text("not a folder")
    with pytest.raises(OSError, match="cannot write .*a-file/out"):
        AutoBackbone.from_config(ResNetConfig(**SMALL)).save_pretrained(tmp_path / "a-file" / "out")
