"""Weight files -> numpy state dicts, and converted arrays -> NNX module state.

safetensors files are parsed here with numpy alone (memory-mapped, every header entry checked against the
file size), so the runtime needs no torch. `pytorch_model.bin` needs torch and is only ever read with
`torch.load(weights_only=True)`.

Loading streams: a checkpoint is read in parts (`iter_checkpoint`: file by file), each converted array is placed as
soon as it is made (`load_parts`: on one device, or each device receiving its own slice of it), and its pages are
released: the host holds what is in flight, not a converted copy of the checkpoint, and with a mesh no device holds
more than its own shards.
"""

from __future__ import annotations

import contextlib
import json
import math
import mmap
import os
import shutil
import struct
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import jax
import ml_dtypes
import numpy as np
from flax import nnx
from tqdm.auto import tqdm

from . import safetensors_header
from .convert.rules import Conversion, ConversionReport, Rule, Table
from .initializers import abstract_module
from .sharding import place

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


# A page fault in a file mapping maps more cached pages than the one it reads: those of the aligned fault-around
# window (Linux's fault_around_bytes, 64 KiB by default), and, where the page cache holds large folios (ext4, xfs),
# every page of the folio, up to 2 MiB. Releases cover this much about a tensor.
FAULT_AROUND_BYTES = 2 * 1024 * 1024


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
    tensors = {key: np.asarray(array) for key, array in tensors.items()}
    with SafetensorsWriter(path, {key: (array.shape, array.dtype) for key, array in tensors.items()},
                           metadata) as writer:
        for key, array in tensors.items():
            writer.write(key, array)


class SafetensorsWriter:
    """Writes a safetensors file one tensor at a time, so that only the tensor being written need be in memory.

    The header (every name, dtype and shape, in sorted order) is written first, from `specs` (name -> (shape,
    dtype)); then `write` puts each tensor at its place, in any order. Closing raises if a tensor was not written.
    """

    def __init__(self, path: str | os.PathLike, specs: Mapping[str, tuple[Sequence[int], np.dtype]],
                 metadata: Mapping[str, str] | None = None):
        names = {np.dtype(dtype): name for name, dtype in SAFETENSORS_DTYPES.items()}
        header: dict = {"__metadata__": dict(metadata)} if metadata else {}
        self._entries: dict[str, tuple[int, tuple[int, ...], np.dtype]] = {}
        offset = 0
        for key in sorted(specs):
            shape, dtype = tuple(int(dim) for dim in specs[key][0]), np.dtype(specs[key][1])
            if dtype not in names:
                raise ValueError(f"cannot write tensor {key!r}: dtype {dtype} has no safetensors name")
            size = math.prod(shape) * dtype.itemsize
            header[key] = {"dtype": names[dtype], "shape": list(shape), "data_offsets": [offset, offset + size]}
            self._entries[key] = (offset, shape, dtype)
            offset += size
        blob = json.dumps(header, separators=(",", ":")).encode()
        blob += b" " * (-len(blob) % 8)  # the data section starts 8-byte aligned
        self._data_start = 8 + len(blob)
        self._unwritten = set(self._entries)
        self._file = open(path, "wb")
        self._file.write(struct.pack("<Q", len(blob)))
        self._file.write(blob)
        self._file.truncate(self._data_start + offset)

    def write(self, key: str, array: np.ndarray) -> None:
        offset, shape, dtype = self._entries[key]
        array = np.asarray(array)
        if array.shape != shape or array.dtype != dtype:
            raise ValueError(f"tensor {key!r} is {array.dtype}{list(array.shape)}; "
                             f"the header says {dtype}{list(shape)}")
        self._file.seek(self._data_start + offset)
        self._file.write(np.ascontiguousarray(array).reshape(-1).view(np.uint8).data)
        self._unwritten.discard(key)

    def close(self) -> None:
        self._file.close()
        if self._unwritten:
            raise ValueError(f"{self._file.name} is incomplete: tensors {sorted(self._unwritten)} were not written")

    def __enter__(self) -> SafetensorsWriter:
        return self

    def __exit__(self, *exc_info) -> None:
        if exc_info[0] is None:
            self.close()
        else:
            self._file.close()


def read_torch_bin(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A `pytorch_model.bin` state dict as numpy arrays, through `torch.load(weights_only=True)` only."""
    try:
        import torch
    except ImportError:
        raise ImportError(f"reading {path} needs PyTorch (pip install torch); safetensors checkpoints do not") from None
    import pickle

    try:
        try:  # memory-mapped: a tensor is read when it is used
            state_dict = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # the legacy (pre-zip) format cannot be memory-mapped
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
    return _views_of_own_map(path, state_dict) or {key: _tensor_to_numpy(tensor) for key, tensor in state_dict.items()}


def mapped_regions(path: str | os.PathLike) -> list[tuple[int, int, int]]:
    """(start address, end address, file offset) of each of this process's memory maps of the file at `path`, from
    /proc/self/maps (`OSError` where there is none: not Linux)."""
    real, regions = os.path.realpath(path), []
    with open("/proc/self/maps") as maps:
        for line in maps:  # start-end perms offset device inode path
            fields = line.rstrip("\n").split(maxsplit=5)
            if len(fields) == 6 and fields[5] == real:
                low, high = (int(address, 16) for address in fields[0].split("-"))
                regions.append((low, high, int(fields[2], 16)))
    return regions


def _views_of_own_map(path: str | os.PathLike, state_dict: Mapping) -> dict[str, np.ndarray] | None:
    """torch's memory-mapped tensors as views into a memory map of our own of the same file, at the places torch's
    map gives them, so that `release_pages` can drop their pages as they are placed (torch's map keeps every page
    read: the whole file, by the end); None where torch's map is not found (not Linux, or not memory-mapped)."""
    try:
        regions = mapped_regions(path)
    except OSError:
        return None
    if not regions:
        return None
    buffer = np.memmap(path, dtype=np.uint8, mode="r")  # its base is the mmap.mmap that `release_pages` looks for
    views = {}
    for key, tensor in state_dict.items():
        address = tensor.data_ptr()
        region = next(((low, offset) for low, high, offset in regions if low <= address < high), None)
        if region is None or not tensor.is_contiguous():
            views[key] = _tensor_to_numpy(tensor)
            continue
        dtype = _tensor_to_numpy(tensor.reshape(-1)[:0]).dtype
        begin = address - region[0] + region[1]
        views[key] = buffer[begin:begin + tensor.numel() * dtype.itemsize].view(dtype).reshape(tuple(tensor.shape))
    return views


def _tensor_to_numpy(tensor) -> np.ndarray:
    import torch

    tensor = tensor.detach().cpu().contiguous()
    if tensor.dtype == torch.bfloat16:
        return tensor.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return tensor.numpy()


def read_weights(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The tensors of one weight file, `.safetensors` or `.bin`, memory-mapped where the format allows.

    The suffix picks the reader, and any other suffix is refused: only a `.bin` file ever reaches `torch.load`.
    """
    if str(path).endswith(".safetensors"):
        return read_safetensors(path)
    if str(path).endswith(".bin"):
        return read_torch_bin(path)
    raise CheckpointError(f"{path} is neither a .safetensors nor a .bin weight file")


def read_state_dict(paths: Sequence[str | os.PathLike]) -> dict[str, np.ndarray]:
    """Merge the tensors of every file (shards of one checkpoint)."""
    state_dict: dict[str, np.ndarray] = {}
    for path in paths:
        for key, array in read_weights(path).items():
            if key in state_dict:
                raise CheckpointError(f"tensor {key!r} appears in more than one shard (again in {path})")
            state_dict[key] = array
    return state_dict


def iter_checkpoint(paths: Sequence[str | os.PathLike], table: Table) -> Iterator[dict[str, np.ndarray]]:
    """The tensors of a checkpoint in parts, for `load_parts`, memory-mapped (nothing is read before it is used).

    File by file: the keys that `table.prepare` takes alone make one part per file, and the keys of each
    `table.prepare_groups` group a part of their own once the file that completes the group is reached (those read
    from earlier files are copied out of them, so that their mappings can go). A table whose `prepare` names no
    groups sees the whole checkpoint as one part.
    """
    if table.prepare is not None and table.prepare_groups is None:
        yield read_state_dict(paths)
        return
    group = table.prepare_groups or (lambda key: None)
    last_file = {}  # group -> index of the last file that holds one of its keys
    for index, path in enumerate(paths if len(paths) > 1 and table.prepare_groups is not None else ()):
        for key in read_weights(path):  # safetensors: the header only
            if (name := group(key)) is not None:
                last_file[name] = index
    seen: set[str] = set()
    groups: dict[str, dict[str, np.ndarray]] = {}  # group -> its keys read so far
    for index, path in enumerate(paths):
        alone, complete, incomplete = {}, {}, []
        for key, array in read_weights(path).items():
            if key in seen:
                raise CheckpointError(f"tensor {key!r} appears in more than one shard (again in {path})")
            seen.add(key)
            if (name := group(key)) is None:
                alone[key] = array
                continue
            groups.setdefault(name, {})[key] = array
            if last_file.get(name, index) == index:
                complete[name] = None
            else:
                incomplete.append((name, key))
        for name, key in incomplete:
            groups[name][key] = np.array(groups[name][key])
        if alone:
            yield alone
        for name in complete:
            yield groups.pop(name)


def release_pages(array: np.ndarray) -> None:
    """Drop this process's pages of a memory-mapped tensor once it has been copied where it goes.

    They stay in the page cache (and come back if the tensor is read again), but no longer count in the process's
    resident memory, which then holds the tensors in flight rather than every page of the file read so far.
    The pages dropped are those of the aligned `FAULT_AROUND_BYTES` about the tensor: reading a tensor also maps
    cached pages around it, which hold its neighbours (released before, or read later, which then fault them in
    again); left mapped, a file of small tensors stays largely resident. A no-op for arrays that are not views into
    a memory map.
    """
    mapping = array
    while isinstance(mapping, np.ndarray):
        mapping = mapping.base
    if not isinstance(mapping, mmap.mmap) or array.size == 0 or not hasattr(mmap, "MADV_DONTNEED"):
        return
    extents = [stride * (length - 1) for stride, length in zip(array.strides, array.shape)]
    low = array.__array_interface__["data"][0] + sum(extent for extent in extents if extent < 0)
    high = low + sum(abs(extent) for extent in extents) + array.itemsize
    start = np.frombuffer(mapping, np.uint8, count=1).ctypes.data
    begin = max(low // FAULT_AROUND_BYTES * FAULT_AROUND_BYTES, start)
    end = min(-(-high // FAULT_AROUND_BYTES) * FAULT_AROUND_BYTES, start + len(mapping))
    mapping.madvise(mmap.MADV_DONTNEED, begin - start, end - begin)


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
    """Build a module whose state comes from `state_dict` through `table`, on the default device (see `load_parts`)."""
    return load_parts(build, [state_dict], table, source=source, progress=progress)


def load_parts(
    build: Callable[[], nnx.Module],
    parts: Iterable[Mapping[str, np.ndarray]],
    table: Table,
    *,
    source: str = "checkpoint",
    progress: bool = False,
    shardings: Callable[[tuple[int, ...]], jax.sharding.Sharding] | None = None,
) -> tuple[nnx.Module, ConversionReport]:
    """Build a module whose state comes from a checkpoint read in `parts` (see `iter_checkpoint`) through `table`.

    The module is built abstractly (`initializers.abstract_module`): no random weights are drawn. Each converted
    array goes to its place as soon as it is made, and is freed: on the default device, or, with `shardings` (array
    shape -> `Sharding`, e.g. `sharding.ShardingRule`), straight onto its devices, each of which receives only its
    own slice, read from the (memory-mapped) checkpoint; in a multi-host run each process reads only the slices of
    its own devices. Entries the table allows to be missing get the table's initial values. Raises
    `CheckpointMismatchError` naming every missing, unexpected and mismatched entry of every part.
    """
    graphdef, state = nnx.split(abstract_module(build))
    variables = {".".join(map(str, path)): (path, variable) for path, variable in nnx.to_flat_state(state)}
    conversion = Conversion(table, {key: variable.shape for key, (_, variable) in variables.items()})
    filled = {}

    def fill(key: str, value: np.ndarray) -> None:
        variable = variables[key][1]
        if shardings is None:
            # A copy (on CPU jax may otherwise alias the numpy buffer: a memory map, or a torch tensor's storage), and
            # one only (`jnp.array(copy=True)` makes a second on the host). The transfer reads `value` asynchronously:
            # it must be done before the pages are released, or it reads them back in, and they stay until the part
            # is done (a native file is one part: the whole checkpoint).
            array = jax.device_put(np.asarray(value, dtype=variable.dtype), may_alias=False).block_until_ready()
        else:
            array = place(value, shardings(value.shape), dtype=variable.dtype)
        filled[key] = variable.replace(array)
        release_pages(value)

    with tqdm(total=len(variables), desc="loading", unit="array", disable=not progress) as bar:
        for part in parts:
            for key, value in conversion.convert(part):
                fill(key, value)
                bar.update()
            for array in part.values():  # what `prepare` read to make the arrays it combined
                release_pages(array)
        for key, value in conversion.finish().items():
            fill(key, value)
            bar.update()
    conversion.report.raise_if_incomplete(source)
    model = nnx.merge(graphdef, nnx.from_flat_state([(path, filled[key]) for key, (path, _) in variables.items()]))
    return model, conversion.report


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
    variables = flat_state(module)
    config = dict(config_dict if config_dict is not None else module.config.to_dict())
    param_dtypes = sorted({str(variable.dtype) for variable in variables.values() if isinstance(variable, nnx.Param)})
    config[NATIVE_KEY] = {"format_version": NATIVE_FORMAT_VERSION, "param_dtype": ",".join(param_dtypes),
                          "newly_initialized": list(newly_initialized)}
    with atomic_directory(directory, overwrite=overwrite) as staging:
        (staging / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        specs = {path: (variable[...].shape, variable[...].dtype) for path, variable in variables.items()}
        with SafetensorsWriter(staging / NATIVE_WEIGHTS_NAME, specs, {"format": "jaxbackbones-nnx"}) as writer:
            for path, variable in variables.items():  # one array on the host at a time (a sharded one gathered)
                writer.write(path, np.asarray(variable[...]))
        for extra in extra_files:
            shutil.copyfile(extra, staging / Path(extra).name)
    return Path(directory)


# A native folder's state paths are the module's own: one identity rule maps them.
NATIVE_TABLE = Table(rules=(Rule("{path*}", "{path*}"),))
