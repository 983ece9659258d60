"""Weight files -> numpy state dicts, and converted arrays -> NNX module state.

safetensors files are parsed here with numpy alone (memory-mapped, every header entry checked against the
file size), so the runtime needs no torch. `pytorch_model.bin` needs torch and is only ever read with
`torch.load(weights_only=True)`.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import jax.numpy as jnp
import ml_dtypes
import numpy as np
from flax import nnx

from .convert.rules import ConversionReport, Rule, convert_state_dict

SAFETENSORS_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
    "F8_E4M3": ml_dtypes.float8_e4m3fn, "F8_E5M2": ml_dtypes.float8_e5m2,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8,
    "U64": np.uint64, "U32": np.uint32, "U16": np.uint16, "U8": np.uint8, "BOOL": np.bool_,
}


class CheckpointError(ValueError):
    """A weight file that cannot be read: truncated, corrupt, or not a plain collection of tensors."""


def read_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Memory-mapped, read-only arrays of a safetensors file; `CheckpointError` if it is damaged."""
    path = Path(path)
    size = path.stat().st_size
    if size < 8:
        raise CheckpointError(f"{path} is truncated: {size} bytes, too short for a safetensors header")
    with open(path, "rb") as file:
        (header_size,) = struct.unpack("<Q", file.read(8))
        if header_size > size - 8:
            raise CheckpointError(
                f"{path} is truncated or not a safetensors file: the header claims {header_size} bytes, "
                f"the file has {size - 8} after the length field"
            )
        try:
            header = json.loads(file.read(header_size))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise CheckpointError(f"{path} is corrupt: its safetensors header is not valid JSON ({error})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path} is corrupt: its safetensors header is not a JSON object")
    header.pop("__metadata__", None)

    data_start = 8 + header_size
    data_size = size - data_start
    buffer = np.memmap(path, dtype=np.uint8, mode="r", offset=data_start, shape=(data_size,)) if data_size else None
    tensors = {}
    for name, entry in header.items():
        try:
            dtype = np.dtype(SAFETENSORS_DTYPES[entry["dtype"]])
            shape = tuple(int(dim) for dim in entry["shape"])
            begin, end = (int(offset) for offset in entry["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{path} is corrupt: bad header entry for tensor {name!r}: {entry!r}") from None
        if end - begin != int(np.prod(shape)) * dtype.itemsize or begin < 0:
            raise CheckpointError(f"{path} is corrupt: tensor {name!r} of shape {shape} has byte range "
                                  f"[{begin}, {end})")
        if end > data_size:
            raise CheckpointError(f"{path} is truncated: tensor {name!r} ends at byte {end} of the data section, "
                                  f"which has only {data_size} bytes")
        tensors[name] = buffer[begin:end].view(dtype).reshape(shape) if end > begin else np.zeros(shape, dtype)
    return tensors


def read_torch_bin(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A `pytorch_model.bin` state dict as numpy arrays, through `torch.load(weights_only=True)` only."""
    try:
        import torch
    except ImportError:
        raise ImportError(f"reading {path} needs PyTorch (pip install torch); safetensors checkpoints do not") from None
    import pickle

    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            f"{path} holds more than plain tensors and is refused: only weights_only checkpoints are loaded "
            f"(torch said: {str(error).splitlines()[0]})"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        raise CheckpointError(f"{path} is truncated or corrupt: torch.load failed with {error}") from None
    if not isinstance(state_dict, Mapping) or not all(
        isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in state_dict.items()
    ):
        raise CheckpointError(f"{path} is not a state dict (a mapping of names to tensors)")
    return {key: _tensor_to_numpy(tensor) for key, tensor in state_dict.items()}


def _tensor_to_numpy(tensor) -> np.ndarray:
    import torch

    tensor = tensor.detach().cpu().contiguous()
    if tensor.dtype == torch.bfloat16:
        return tensor.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return tensor.numpy()


def read_state_dict(paths: Sequence[str | os.PathLike]) -> dict[str, np.ndarray]:
    """Merge the tensors of every file (shards of one checkpoint)."""
    state_dict: dict[str, np.ndarray] = {}
    for path in paths:
        reader = read_safetensors if str(path).endswith(".safetensors") else read_torch_bin
        for key, array in reader(path).items():
            if key in state_dict:
                raise CheckpointError(f"tensor {key!r} appears in more than one shard (again in {path})")
            state_dict[key] = array
    return state_dict


def flat_state(module: nnx.Module) -> dict[str, nnx.Variable]:
    """Every variable of `module` by its dot-joined state path (`stages.0.blocks.1.convs.0.kernel`)."""
    return {".".join(map(str, path)): variable for path, variable in nnx.to_flat_state(nnx.state(module))}


def load_converted(
    build: Callable[[], nnx.Module],
    state_dict: Mapping[str, np.ndarray],
    rules: Sequence[Rule],
    *,
    allow_missing: Sequence[str] = (),
    source: str = "checkpoint",
) -> tuple[nnx.Module, ConversionReport]:
    """Build a module whose state comes from `state_dict` through `rules`.

    The module is first built abstractly (`nnx.eval_shape`), so no random weights are drawn unless the
    checkpoint lacks entries `allow_missing` permits; those keep the module's own initial values.
    Raises `CheckpointMismatchError` naming every missing, unexpected and mismatched entry.
    """
    abstract = nnx.eval_shape(build)
    graphdef, state = nnx.split(abstract)
    variables = flat_state(abstract)
    converted, report = convert_state_dict(
        state_dict, rules, {path: variable.shape for path, variable in variables.items()}, allow_missing
    )
    report.raise_if_incomplete(source)
    initial = flat_state(build()) if report.initialized else {}
    filled = []
    for path, variable in nnx.to_flat_state(state):
        key = ".".join(map(str, path))
        value = converted[key] if key in converted else initial[key][...]
        # A copy: on CPU jnp.asarray may alias the numpy buffer (a memory map, or a torch tensor's storage).
        filled.append((path, variable.replace(jnp.array(value, dtype=variable.dtype, copy=True))))
    return nnx.merge(graphdef, nnx.from_flat_state(filled)), report
