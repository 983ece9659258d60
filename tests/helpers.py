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
    [0.5, 2], matrices and kernels at a fan-in scale that keeps deep stacks finite. A vector stored with leading
    singleton axes (transformers' GRN `weight` / `bias`, (1, 1, 1, C)) counts as a vector; vectors that are not
    named `weight` (biases, layer-scale `gamma` / `layer_scale_parameter`) get N(0, 0.2) values.
    """
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        tensors = list(module.named_parameters()) + list(module.named_buffers())
        for name, tensor in tensors:
            if not tensor.is_floating_point():
                continue
            shape = tensor.shape
            vector = tensor.ndim <= 1 or all(size == 1 for size in shape[:-1])
            if name.endswith("running_var"):
                value = torch.rand(shape, generator=generator) * 1.5 + 0.5
            elif vector and name.endswith("weight"):
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
