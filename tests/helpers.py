"""Test helpers: randomized torch references, hub-cache fixtures, parity checks."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import numpy as np

PARITY_RTOL = 1e-5


def randomize_torch_module(module, seed: int = 0):
    """Overwrite every floating parameter and buffer with random values, so no mapping hides behind an init.

    Norm and BatchNorm weights land near 1, biases and running means near 0, running variances in
    [0.5, 2], matrices and kernels at a fan-in scale that keeps deep stacks finite.
    """
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        tensors = list(module.named_parameters()) + list(module.named_buffers())
        for name, tensor in tensors:
            if not tensor.is_floating_point():
                continue
            shape = tensor.shape
            if name.endswith("running_var"):
                value = torch.rand(shape, generator=generator) * 1.5 + 0.5
            elif tensor.ndim == 1 and name.endswith("weight"):
                value = torch.rand(shape, generator=generator) + 0.5
            elif tensor.ndim <= 1:
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
