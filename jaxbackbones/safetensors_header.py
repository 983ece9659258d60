"""The safetensors header, validated exactly as the reference implementation (the Rust `safetensors` crate behind the
`safetensors` Python package, 0.8) validates it, so that a file is read here if and only if the library reads it.

The file is an 8-byte little-endian header length N, N bytes of UTF-8 JSON, and the data section. The crate parses
the JSON with serde_json into `{"__metadata__": {str: str} | null, <name>: TensorInfo, ...}` and then checks that the
tensors tile the data section: sorted by offsets, each starts where the previous ends (no overlap, no hole), spans
exactly its shape times its dtype's size, and the last ends at the end of the file. serde_json is stricter than
Python's `json` in ways a hand-made header can reach, and each is reproduced here: no NaN or infinities, no number
out of float range, no lone surrogate escapes, nesting at most 127 deep; integers are unsigned 64-bit (`-0` and `2.0`
are not), a duplicate `__metadata__` or a duplicate field of a tensor is an error while a duplicate tensor name keeps
the last; a tensor's fields may come as an object (unknown fields ignored) or as a 3-element array; leading and
trailing whitespace is allowed. tests/test_safetensors_header.py fuzzes headers against the library.
"""

from __future__ import annotations

import json
import math
from typing import Any, NamedTuple

MAX_HEADER_SIZE = 100_000_000
MAX_NESTING = 127
U64_MAX = 2**64 - 1
# Every dtype the format names, with its size in bits (F4 and F6 pack several values into a byte).
DTYPE_BITS = {
    "BOOL": 8, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8,
    "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8, "I16": 16, "U16": 16, "F16": 16, "BF16": 16, "I32": 32, "U32": 32,
    "F32": 32, "C64": 64, "F64": 64, "I64": 64, "U64": 64,
}
TENSOR_FIELDS = ("dtype", "shape", "data_offsets")


class HeaderError(ValueError):
    """The header breaks the format; the message says how."""


class TensorEntry(NamedTuple):
    dtype: str
    shape: tuple[int, ...]
    begin: int  # byte offsets in the data section
    end: int


class _Pairs(list):
    """A JSON object as its (key, value) pairs, duplicates kept."""


class _Negative(int):
    """An integer written with a minus sign (`-0` included): never a valid size or offset."""


def _parse_int(text: str) -> int:
    value = int(text)
    try:
        float(value)  # serde_json reads integers beyond 64 bits as floats: too large is out of range
    except OverflowError:
        raise HeaderError(f"number out of range: {text[:20]}...") from None
    return _Negative(value) if text.startswith("-") else value


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise HeaderError(f"number out of range: {text}")
    return value


def _reject_constant(name: str):
    raise HeaderError(f"{name} is not JSON")


def _check_strings_and_depth(value: Any, depth: int = 1) -> None:
    """serde_json refuses lone surrogate escapes anywhere, and nesting deeper than 127."""
    if isinstance(value, str):
        if any("\ud800" <= char <= "\udfff" for char in value):
            raise HeaderError("a string holds a lone surrogate escape")
    elif isinstance(value, list):
        if depth > MAX_NESTING:
            raise HeaderError(f"arrays and objects nest deeper than {MAX_NESTING}")
        pairs = value if isinstance(value, _Pairs) else [(None, item) for item in value]
        for key, item in pairs:
            if key is not None:
                _check_strings_and_depth(key, depth)
            _check_strings_and_depth(item, depth + 1)


def _u64(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or isinstance(value, _Negative) or value > U64_MAX:
        raise HeaderError(f"{what} must be an unsigned 64-bit integer, got {value!r}")
    return int(value)


def _tensor(name: str, info: Any) -> TensorEntry:
    if isinstance(info, _Pairs):
        fields: dict[str, Any] = {}
        for key, value in info:
            if key in TENSOR_FIELDS:
                if key in fields:
                    raise HeaderError(f"tensor {name!r} has the field {key!r} twice")
                fields[key] = value
        missing = [field for field in TENSOR_FIELDS if field not in fields]
        if missing:
            raise HeaderError(f"tensor {name!r} lacks {missing}")
        dtype, shape, offsets = (fields[field] for field in TENSOR_FIELDS)
    elif isinstance(info, list) and len(info) == 3:
        dtype, shape, offsets = info
    else:
        raise HeaderError(f"tensor {name!r} must be described by an object (dtype, shape, data_offsets), got "
                          f"{type(info).__name__}")
    if not isinstance(dtype, str) or dtype not in DTYPE_BITS:
        raise HeaderError(f"tensor {name!r} has dtype {dtype!r}; the format knows {sorted(DTYPE_BITS)}")
    if not isinstance(shape, list) or isinstance(shape, _Pairs):
        raise HeaderError(f"tensor {name!r}: shape must be an array, got {shape!r}")
    if not isinstance(offsets, list) or isinstance(offsets, _Pairs) or len(offsets) != 2:
        raise HeaderError(f"tensor {name!r}: data_offsets must be an array [begin, end], got {offsets!r}")
    shape = tuple(_u64(dim, f"tensor {name!r}: a dimension") for dim in shape)
    begin, end = (_u64(offset, f"tensor {name!r}: an offset") for offset in offsets)
    return TensorEntry(dtype, shape, begin, end)


def parse(header: bytes) -> tuple[dict[str, TensorEntry], dict[str, str] | None, int]:
    """The tensors (by name), the metadata and the data section's length the header describes.

    Raises `HeaderError` for a header the reference rejects, before the file's size is compared.
    """
    try:
        text = header.decode("utf-8")
    except UnicodeDecodeError as error:
        raise HeaderError(f"the header is not UTF-8 ({error})") from None
    try:
        document = json.loads(text, object_pairs_hook=_Pairs, parse_int=_parse_int, parse_float=_parse_float,
                              parse_constant=_reject_constant)
    except json.JSONDecodeError as error:
        raise HeaderError(f"the header is not valid JSON ({error})") from None
    except RecursionError:
        raise HeaderError(f"arrays and objects nest deeper than {MAX_NESTING}") from None
    _check_strings_and_depth(document)
    if not isinstance(document, _Pairs):
        raise HeaderError(f"the header must be a JSON object, got {type(document).__name__}")

    metadata, seen_metadata, tensors = None, False, {}
    for key, value in document:
        if key == "__metadata__":
            if seen_metadata:
                raise HeaderError("the header has __metadata__ twice")
            seen_metadata = True
            if value is not None:
                if not isinstance(value, _Pairs) or not all(isinstance(item, str) for _, item in value):
                    raise HeaderError(f"__metadata__ must map strings to strings, got {value!r}")
                metadata = dict(value)
        else:
            tensors[key] = _tensor(key, value)  # a repeated name: the last one counts, as in the reference
    return tensors, metadata, _data_length(tensors)


def _data_length(tensors: dict[str, TensorEntry]) -> int:
    """Where the tensors end, once checked to tile the data section from byte 0 with no overlap and no hole."""
    position = 0
    for name, entry in sorted(tensors.items(), key=lambda item: (item[1].begin, item[1].end)):
        if entry.begin != position or entry.end < entry.begin:
            what = "overlaps the tensor before it" if entry.begin < position else "leaves a hole before it"
            if entry.end < entry.begin:
                what = "ends before it begins"
            raise HeaderError(f"tensor {name!r} at bytes [{entry.begin}, {entry.end}) {what} (expected it to start "
                              f"at byte {position})")
        position = entry.end
        count = 1
        for dim in entry.shape:
            count *= dim
            if count > U64_MAX:
                raise HeaderError(f"tensor {name!r}: shape {entry.shape} overflows 64 bits")
        bits = count * DTYPE_BITS[entry.dtype]
        if bits > U64_MAX:
            raise HeaderError(f"tensor {name!r}: shape {entry.shape} of {entry.dtype} overflows 64 bits")
        if bits % 8:
            raise HeaderError(f"tensor {name!r}: {count} values of {entry.dtype} do not fill whole bytes")
        if entry.end - entry.begin != bits // 8:
            raise HeaderError(f"tensor {name!r} of shape {entry.shape} and dtype {entry.dtype} needs {bits // 8} "
                              f"bytes, its byte range [{entry.begin}, {entry.end}) has {entry.end - entry.begin}")
    return position
