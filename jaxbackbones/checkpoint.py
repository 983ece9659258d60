"""Weight files -> numpy state dicts, and converted arrays -> NNX module state.

safetensors files are parsed here with numpy alone (memory-mapped, every header entry checked against the
file size), so the runtime needs no torch. `pytorch_model.bin` needs torch and is only ever read with
`torch.load(weights_only=True)`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import struct
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import jax.numpy as jnp
import ml_dtypes
import numpy as np
from flax import nnx

from . import safetensors_header
from .convert.rules import ConversionReport, Rule, Table, convert_state_dict

NATIVE_WEIGHTS_NAME = "model.nnx.safetensors"
NATIVE_KEY = "jaxbackbones"
NATIVE_FORMAT_VERSION = 1
SAFETENSORS_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
    "F8_E4M3": ml_dtypes.float8_e4m3fn, "F8_E5M2": ml_dtypes.float8_e5m2,
    "F8_E4M3FNUZ": ml_dtypes.float8_e4m3fnuz, "F8_E5M2FNUZ": ml_dtypes.float8_e5m2fnuz,
    "F8_E8M0": ml_dtypes.float8_e8m0fnu, "C64": np.complex64,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8,
    "U64": np.uint64, "U32": np.uint32, "U16": np.uint16, "U8": np.uint8, "BOOL": np.bool_,
}


class CheckpointError(ValueError):
    """A weight file that cannot be read: truncated, corrupt, or not a plain collection of tensors."""


def read_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Memory-mapped, read-only arrays of a safetensors file; `CheckpointError` if it is damaged.

    The file is validated as strictly as the `safetensors` library validates it (see `safetensors_header`): a file
    is read here exactly when the library reads it, with the same tensors. Packed sub-byte dtypes (F4, F6_*) are
    valid but not supported.
    """
    path = Path(path)
    size = path.stat().st_size
    if size < 8:
        raise CheckpointError(f"{path} is truncated: {size} bytes, too short for a safetensors header")
    with open(path, "rb") as file:
        (header_size,) = struct.unpack("<Q", file.read(8))
        if header_size > safetensors_header.MAX_HEADER_SIZE:
            raise CheckpointError(f"{path} is corrupt or not a safetensors file: its header claims {header_size} "
                                  f"bytes, more than the format's limit of {safetensors_header.MAX_HEADER_SIZE}")
        if header_size > size - 8:
            raise CheckpointError(
                f"{path} is truncated or not a safetensors file: the header claims {header_size} bytes, "
                f"the file has {size - 8} after the length field"
            )
        header = file.read(header_size)
    try:
        entries, _, data_end = safetensors_header.parse(header)
    except safetensors_header.HeaderError as error:
        raise CheckpointError(f"{path} is corrupt: {error}") from None
    data_start = 8 + header_size
    data_size = size - data_start
    if data_end > data_size:
        name = max(entries, key=lambda key: entries[key].end)
        raise CheckpointError(f"{path} is truncated: tensor {name!r} ends at byte {data_end} of the data section, "
                              f"which has only {data_size} bytes")
    if data_end < data_size:
        raise CheckpointError(f"{path} is corrupt: its tensors end at byte {data_end} of the data section, which "
                              f"has {data_size} bytes (the format allows no trailing bytes)")
    unsupported = sorted({entry.dtype for entry in entries.values() if entry.dtype not in SAFETENSORS_DTYPES})
    if unsupported:
        raise CheckpointError(f"{path} holds tensors of dtype {', '.join(unsupported)}, which jaxbackbones does not "
                              f"read (supported: {', '.join(SAFETENSORS_DTYPES)})")
    buffer = np.memmap(path, dtype=np.uint8, mode="r", offset=data_start, shape=(data_size,)) if data_size else None
    tensors = {}
    for name, entry in entries.items():
        dtype = np.dtype(SAFETENSORS_DTYPES[entry.dtype])
        if entry.end > entry.begin:
            tensors[name] = buffer[entry.begin:entry.end].view(dtype).reshape(entry.shape)
        else:
            tensors[name] = np.zeros(entry.shape, dtype)
    return tensors


def write_safetensors(path: str | os.PathLike, tensors: Mapping[str, np.ndarray],
                      metadata: Mapping[str, str] | None = None) -> None:
    """Write `tensors` (numpy arrays; bfloat16 and float8 via ml_dtypes too) in the safetensors format."""
    names = {np.dtype(dtype): name for name, dtype in SAFETENSORS_DTYPES.items()}
    header: dict = {"__metadata__": dict(metadata)} if metadata else {}
    offset = 0
    arrays = []
    for key in sorted(tensors):
        array = np.asarray(tensors[key])
        if array.dtype not in names:
            raise ValueError(f"cannot write tensor {key!r}: dtype {array.dtype} has no safetensors name")
        header[key] = {"dtype": names[array.dtype], "shape": list(array.shape),
                       "data_offsets": [offset, offset + array.nbytes]}
        offset += array.nbytes
        arrays.append(array)
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # the data section starts 8-byte aligned
    with open(path, "wb") as file:
        file.write(struct.pack("<Q", len(blob)))
        file.write(blob)
        for array in arrays:
            file.write(array.tobytes(order="C"))


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
    table: Table,
    *,
    source: str = "checkpoint",
    progress: bool = False,
) -> tuple[nnx.Module, ConversionReport]:
    """Build a module whose state comes from `state_dict` through `table`.

    The module is built abstractly (`nnx.eval_shape`): no random weights are drawn. Entries the table allows
    to be missing get the table's initial values. Raises `CheckpointMismatchError` naming every missing,
    unexpected and mismatched entry.
    """
    abstract = nnx.eval_shape(build)
    graphdef, state = nnx.split(abstract)
    variables = flat_state(abstract)
    converted, report = convert_state_dict(
        state_dict, table, {path: variable.shape for path, variable in variables.items()}, progress
    )
    report.raise_if_incomplete(source)
    filled = []
    for path, variable in nnx.to_flat_state(state):
        # Popped, so each converted array is freed once it is on the device: peak memory stays near 2x the model.
        value = converted.pop(".".join(map(str, path)))
        # A copy: on CPU jnp.asarray may alias the numpy buffer (a memory map, or a torch tensor's storage).
        filled.append((path, variable.replace(jnp.array(value, dtype=variable.dtype, copy=True))))
    return nnx.merge(graphdef, nnx.from_flat_state(filled)), report


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike, *, overwrite: bool):
    """Yield an empty temporary folder beside `path`; when the block succeeds it becomes `path` by a rename.

    On any error the temporary folder is removed, so `path` is either absent, the old folder, or complete.
    Raises `FileExistsError` if `path` exists and not `overwrite`.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass --force (overwrite=True) to replace it")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.partial-", dir=path.parent))
    except OSError as error:
        raise OSError(error.errno, f"cannot write {path}: {error.strerror}", str(path.parent)) from error
    try:
        yield staging
        if path.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
            os.replace(path, retired / path.name)
            os.replace(staging, path)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def is_native(config_dict: Mapping) -> bool:
    """Whether a `config.json` describes a folder written by `save_native`."""
    return NATIVE_KEY in config_dict


def save_native(module: nnx.Module, directory: str | os.PathLike, *, config_dict: Mapping | None = None,
                extra_files: Sequence[str | os.PathLike] = (), newly_initialized: Sequence[str] = (),
                overwrite: bool = True) -> Path:
    """Write `module` as a native folder, atomically.

    The folder holds `config.json` (the hub config, `config_dict` or the module's own, plus a `jaxbackbones`
    entry), `model.nnx.safetensors` with every variable (parameters and BatchNorm statistics) keyed by its
    NNX state path, in its own dtype, and copies of `extra_files` (e.g. `preprocessor_config.json`).
    `newly_initialized` lists entries that did not come from the source checkpoint, reported again on load.
    """
    tensors = {path: np.asarray(variable[...]) for path, variable in flat_state(module).items()}
    config = dict(config_dict if config_dict is not None else module.config.to_dict())
    param_dtypes = sorted({str(variable.dtype) for variable in flat_state(module).values()
                           if isinstance(variable, nnx.Param)})
    config[NATIVE_KEY] = {"format_version": NATIVE_FORMAT_VERSION, "param_dtype": ",".join(param_dtypes),
                          "newly_initialized": list(newly_initialized)}
    with atomic_directory(directory, overwrite=overwrite) as staging:
        (staging / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        write_safetensors(staging / NATIVE_WEIGHTS_NAME, tensors, metadata={"format": "jaxbackbones-nnx"})
        for extra in extra_files:
            shutil.copyfile(extra, staging / Path(extra).name)
    return Path(directory)


# A native folder's state paths are the module's own: one identity rule maps them.
NATIVE_TABLE = Table(rules=(Rule("{path*}", "{path*}"),))
