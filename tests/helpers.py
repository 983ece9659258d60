"""Test helpers: randomized torch references, hub-cache fixtures, parity checks."""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np

PARITY_RTOL = 1e-5

# XLA:CPU's LLVM optimisation passes are most of the suite's time: the tests compile hundreds of small programs and
# run each once or twice (a tiny Swin's train step compiled in 11.6 s with them, 2.3 s without; 2 EPYC cores), and
# its newer fusion emitters (MLIR) compile slower than the classic ones (a small SAM2 train step: 2.9 s against
# 1.1 s, a ResNet's 0.94 against 0.37, the same run time). The tests check values, which neither changes beyond float
# rounding; speed is measured in benchmarks/. conftest.py sets them for the session; what runs long (the notebooks'
# training) compiles without them.
QUICK_COMPILE_FLAGS = ("--xla_backend_optimization_level=0", "--xla_llvm_disable_expensive_passes=true",
                       "--xla_cpu_use_fusion_emitters=false")
# The classic emitters round differently from the fusion emitters where two programs differ (Linen's and NNX's train
# steps: the gradients of a k bias, zero but for rounding) and flush float32 denormals in a clamp. A test whose claim
# is bit equality across programs, or a value to the last bit, compiles with the emitters users get.
USERS_EMITTERS = {"xla_cpu_use_fusion_emitters": True}


def compiled_as_users_compile(jitted, *args):
    """`jitted` (a `jax.jit` or `nnx.jit` function) compiled for `args` with XLA:CPU's default fusion emitters."""
    return jitted.lower(*args).compile(USERS_EMITTERS)


# Learned tokens and position embeddings (any rank): drawn at unit scale, not at a fan-in scale that would make a
# (1, 1370, 384) position embedding ~1e-3 and let a wrong resampling hide under the parity bound.
EMBEDDING_NAMES = ("cls_token", "reg_token", "register_tokens", "mask_token", "position_embeddings", "pos_embed",
                   "pos_embed_win", "pos_embed_window")


def randomize_torch_module(module, seed: int = 0):
    """Overwrite every floating parameter and persistent buffer with random values, so no mapping hides behind an
    init.

    Norm and BatchNorm weights and scalar scales (HGNet's learnable affine `scale`) land near 1, biases, layer-scale vectors (`gamma`, `layer_scale_parameter`,
    `lambda1`) and running means near 0 (either sign, N(0, 0.2)), running variances in [0.5, 2], class / register /
    mask tokens and position embeddings at unit scale, matrices and kernels at a fan-in scale that keeps deep stacks
    finite. A vector stored with leading singleton axes (transformers' GRN `weight` / `bias`, (1, 1, 1, C)) counts
    as a vector. Non-persistent buffers (RoPE frequencies, attention masks) are not in checkpoints but computed from
    the config; randomizing them would only desynchronise the reference, so they are left alone (tests check them
    against ours directly).
    """
    import torch

    generator = torch.Generator().manual_seed(seed)
    persistent = set(module.state_dict())
    with torch.no_grad():
        tensors = list(module.named_parameters()) + [(name, buffer) for name, buffer in module.named_buffers()
                                                     if name in persistent]
        for name, tensor in tensors:
            if not tensor.is_floating_point():
                continue
            shape = tensor.shape
            vector = tensor.ndim <= 1 or all(size == 1 for size in shape[:-1])
            if name.endswith("running_var"):
                value = torch.rand(shape, generator=generator) * 1.5 + 0.5
            elif name.split(".")[-1] in EMBEDDING_NAMES or name.endswith("absolute_pos_embed"):
                value = torch.randn(shape, generator=generator)
            elif vector and (name.endswith("weight") or name.endswith(".scale")):
                value = torch.rand(shape, generator=generator) + 0.5
            elif vector:
                value = torch.randn(shape, generator=generator) * 0.2
            else:
                fan_in = max(int(np.prod(shape[1:])), 1)
                value = torch.randn(shape, generator=generator) / np.sqrt(fan_in)
            tensor.copy_(value.to(tensor.dtype))
    return module


def state_dict_numpy(module) -> dict[str, np.ndarray]:
    return {key: value.detach().cpu().numpy().copy() for key, value in module.state_dict().items()}


def assert_parity(reference, ours, rtol: float = PARITY_RTOL, name: str = ""):
    """max |ours - reference| / max |reference| <= rtol, shapes equal."""
    reference = np.asarray(reference, dtype=np.float64)
    ours = np.asarray(ours, dtype=np.float64)
    assert reference.shape == ours.shape, f"{name}: shape {ours.shape} != reference {reference.shape}"
    scale = np.abs(reference).max()
    assert scale > 0, f"{name}: reference is all zeros, the comparison would prove nothing"
    error = np.abs(ours - reference).max() / scale
    assert error <= rtol, f"{name}: relative error {error:.3g} > {rtol}"
    return error


def nhwc(x) -> np.ndarray:
    """NCHW -> NHWC (numpy)."""
    return np.asarray(x).transpose(0, 2, 3, 1)


def torch_forward(model, x: np.ndarray, **kwargs):
    """`model(x)` on a numpy batch, without autograd."""
    import torch

    with torch.no_grad():
        return model(torch.from_numpy(x), **kwargs)


def check_maps(reference, ours, names, what="feature map") -> list[float]:
    """reference NCHW torch tensors, ours NHWC, one per name; returns the measured relative errors."""
    assert len(reference) == len(ours) == len(names)
    return [assert_parity(nhwc(r.numpy()), o, name=f"{what} {n}") for r, o, n in zip(reference, ours, names)]


def write_to_hub_cache(folder: str | os.PathLike, repo_id: str, *, cache_dir: str | os.PathLike | None = None,
                       commit: str | None = None, ref: str | None = "main") -> str:
    """Lay `folder`'s files out exactly as huggingface_hub's cache does (blobs, snapshots, refs).

    Returns the commit hash the snapshot is stored under.
    """
    from huggingface_hub import constants

    cache_dir = Path(cache_dir or constants.HF_HUB_CACHE)
    repo_dir = cache_dir / ("models--" + repo_id.replace("/", "--"))
    commit = commit or hashlib.sha1(f"{repo_id}{os.urandom(8).hex()}".encode()).hexdigest()
    snapshot = repo_dir / "snapshots" / commit
    (repo_dir / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    for path in sorted(Path(folder).iterdir()):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        blob = repo_dir / "blobs" / digest
        shutil.copyfile(path, blob)
        link = snapshot / path.name
        if link.exists() or link.is_symlink():
            link.unlink()
        link.symlink_to(os.path.relpath(blob, snapshot))
    if ref:
        (repo_dir / "refs").mkdir(exist_ok=True)
        (repo_dir / "refs" / ref).write_text(commit)
    return commit


def write_sharded_safetensors(folder: str | os.PathLike, tensors: dict[str, np.ndarray],
                              shards: list[list[str]]) -> list[Path]:
    """Write `tensors` as a sharded checkpoint in transformers' layout: `shards` lists the keys of each file
    (`model-0000i-of-0000n.safetensors`), and `model.safetensors.index.json` maps every key to its file."""
    import json

    import safetensors.numpy

    folder = Path(folder)
    assert sorted(key for keys in shards for key in keys) == sorted(tensors), "every key in exactly one shard"
    names = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    for name, keys in zip(names, shards):
        safetensors.numpy.save_file({key: np.ascontiguousarray(tensors[key]) for key in keys}, folder / name,
                                    metadata={"format": "pt"})
    index = {"metadata": {"total_size": int(sum(a.nbytes for a in tensors.values()))},
             "weight_map": {key: name for name, keys in zip(names, shards) for key in keys}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    return [folder / name for name in names]


def _small_config(model_type: str, **kwargs):
    from jaxbackbones import AutoConfig

    return AutoConfig.for_model(model_type, **copy.deepcopy(kwargs))


def _small_configs():
    from jaxbackbones import registry

    return {name: functools.partial(_small_config, **example) for name, example in registry.examples().items()}


# One small config per family and checkpoint layout (name -> a function returning a fresh config): the tests that
# must hold for every backbone (Linen <-> NNX, Orbax) run over these: the `examples` of every family's registry entry
# (jaxbackbones/families/<name>.py).
SMALL_CONFIGS = _small_configs()
# Examples whose token layout fixes or constrains the input size (Hiera: its image_size; SAM2's HieraDet and neck:
# sides multiples of 32): the every-family tests run them at this (height, width) instead of an odd, non-square one.
FIXED_INPUT_SIZES = {"hiera": (32, 32), "timm_hiera": (32, 32), "sam2": (64, 32), "sam2_video": (32, 64),
                     "timm_hieradet": (64, 32)}


@functools.cache
def _built(family: str):
    from flax import nnx

    from jaxbackbones import AutoBackbone

    return nnx.split(AutoBackbone.from_config(SMALL_CONFIGS[family](), rngs=nnx.Rngs(0)))


def fresh_model(family: str):
    """A new model of `SMALL_CONFIGS[family]` with the weights of `nnx.Rngs(0)` (train mode, as from_config returns
    it). The random initialisation runs once per family and process."""
    import jax
    from flax import nnx

    graphdef, state = _built(family)
    return nnx.merge(graphdef, jax.tree.map(lambda array: array, state))  # new Variables: the cache stays as built


MULTIDEVICE_COUNT = 8


def run_multidevice_tests(tests_folder: str | os.PathLike, timeout: int = 900) -> None:
    """Run every `multidevice` test of the folder in one subprocess with 8 virtual CPU devices (jax fixes the device
    count when it starts); fail with its output unless they all pass."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={MULTIDEVICE_COUNT}"
    env["XLA_FLAGS"] = env["XLA_FLAGS"].strip()
    env.pop("PYTEST_XDIST_WORKER", None)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-m", "multidevice",
         str(tests_folder)],
        cwd=Path(tests_folder).parent, env=env, capture_output=True, text=True, timeout=timeout, check=False,
    )
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert "passed" in summary and "skipped" not in summary, summary


def run_cli(*args: str, env: dict | None = None):
    """The `jaxbackbones` command with these arguments: (returncode, stdout, stderr), as `subprocess.run` gives.

    In this process (`cli.main`, its output captured) unless `env` is given: a subprocess costs a jax and torch
    import, seconds each call, and the command reads nothing the test session has not set the same way. With `env`
    (another hub cache, say, which huggingface_hub reads at import) it runs for real in a subprocess.
    """
    if env is not None:
        return subprocess.run([sys.executable, "-m", "jaxbackbones.cli", *args], capture_output=True, text=True,
                              timeout=300, env=env)
    from jaxbackbones import cli

    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            returncode = cli.main(list(args))
        except SystemExit as exit_:  # argparse's usage errors
            returncode = exit_.code
    return SimpleNamespace(returncode=returncode, stdout=stdout.getvalue(), stderr=stderr.getvalue())


def assert_same_pixels(ours, theirs, images, theirs_kwargs=None, **call_kwargs):
    """An image processor gives transformers' `pixel_values` (and `pixel_mask`) in both layouts, bit for bit
    (`theirs_kwargs`: transformers' spelling of the call's options, where it differs)."""
    reference = theirs(images, return_tensors="np", **(call_kwargs if theirs_kwargs is None else theirs_kwargs))
    for data_format, expected in (("channels_first", reference.pixel_values),
                                  ("channels_last", reference.pixel_values.transpose(0, 2, 3, 1))):
        got = ours(images, data_format=data_format, **call_kwargs)
        assert got.pixel_values.dtype == np.float32
        np.testing.assert_array_equal(got.pixel_values, expected)
        assert ("pixel_mask" in got) == ("pixel_mask" in reference)
        if "pixel_mask" in reference:
            assert got.pixel_mask.dtype == np.int64
            np.testing.assert_array_equal(got.pixel_mask, reference.pixel_mask)
