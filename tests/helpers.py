"""Test helpers: randomized torch references, hub-cache fixtures, parity checks."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import numpy as np

PARITY_RTOL = 1e-5


# Learned tokens and position embeddings (any rank): drawn at unit scale, not at a fan-in scale that would make a
# (1, 1370, 384) position embedding ~1e-3 and let a wrong resampling hide under the parity bound.
EMBEDDING_NAMES = ("cls_token", "reg_token", "register_tokens", "mask_token", "position_embeddings", "pos_embed")


def randomize_torch_module(module, seed: int = 0):
    """Overwrite every floating parameter and persistent buffer with random values, so no mapping hides behind an
    init.

    Norm and BatchNorm weights land near 1, biases, layer-scale vectors and running means near 0 (either sign),
    running variances in [0.5, 2], class / register / mask tokens and position embeddings at unit scale, matrices
    and kernels at a fan-in scale that keeps deep stacks finite. Non-persistent buffers (RoPE frequencies,
    attention masks) are not in checkpoints but computed from the config; randomizing them would only
    desynchronise the reference, so they are left alone (tests check them against ours directly).
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
            if name.endswith("running_var"):
                value = torch.rand(shape, generator=generator) * 1.5 + 0.5
            elif name.split(".")[-1] in EMBEDDING_NAMES or name.endswith("absolute_pos_embed"):
                value = torch.randn(shape, generator=generator)
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
