"""The safetensors reader is exactly as strict as the `safetensors` library: fuzzed headers are rejected by both
(ours with a `CheckpointError`) or read by both into the same tensors."""

from __future__ import annotations

import json
import random
import struct

import numpy as np
import pytest
import safetensors

from jaxbackbones import CheckpointError
from jaxbackbones.checkpoint import SAFETENSORS_DTYPES, read_safetensors, write_safetensors
from jaxbackbones.safetensors_header import DTYPE_BITS

DTYPES = ["F32", "F16", "BF16", "F64", "I64", "I32", "I16", "I8", "U8", "U16", "U32", "U64", "BOOL", "F8_E4M3",
          "F8_E5M2", "C64"]
NAMES = {np.dtype(dtype): name for name, dtype in SAFETENSORS_DTYPES.items()}


class Raw(str):
    """A JSON token written as is (`-0`, `2.0`, `NaN`, a lone surrogate escape...)."""


class Obj(list):
    """A JSON object as (key, value) pairs, so duplicates can be written."""


def dump(value) -> str:
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, Obj):
        return "{" + ", ".join(f"{dump(key)}: {dump(item)}" for key, item in value) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(dump(item) for item in value) + "]"
    return json.dumps(value)


def valid_file(rng: random.Random):
    """(header pairs, data) of a well-formed file: tensors tiling the data section, in a random key order."""
    entries, offset, data = [], 0, b""
    for index in range(rng.randint(0, 4)):
        dtype = rng.choice(DTYPES)
        shape = [rng.randint(0, 3) for _ in range(rng.randint(0, 3))]
        size = int(np.prod(shape, dtype=np.int64)) * DTYPE_BITS[dtype] // 8
        entries.append((f"t{index}", Obj([("dtype", dtype), ("shape", shape), ("data_offsets", [offset,
                                                                                                offset + size])])))
        data += bytes(rng.getrandbits(8) for _ in range(size))
        offset += size
    rng.shuffle(entries)
    metadata = rng.choice([None, "absent", Obj([]), Obj([("format", "pt")])])
    if metadata != "absent":
        entries.insert(rng.randint(0, len(entries)), ("__metadata__", metadata))
    return Obj(entries), data


BAD_NUMBERS = ["-0", "-1", "2.0", "1e0", "1e400", "NaN", "Infinity", "true", "null", '"2"', "18446744073709551616",
               "18446744073709551615", "4294967296", "01"]
ODD_VALUES = ["-1", "2.5", "1e400", "NaN", '"\\ud800"', '"\\ud83d\\ude00"', "[" * 126 + "]" * 126,
              "[" * 124 + "]" * 124, '{"a": 1, "a": 2}', "null", '"\\u0000"']


def field(info: Obj, name: str):
    """The list a tensor description holds under `name`, if it holds one."""
    value = dict(info).get(name)
    return value if isinstance(value, list) and not isinstance(value, Obj) else None


def mutate(rng: random.Random, header: Obj, data: bytes):
    """One random change: most make the file invalid in a way the format forbids, some keep it valid."""
    tensors = [(i, info) for i, (key, info) in enumerate(header) if key != "__metadata__" and isinstance(info, Obj)]
    kind = rng.randrange(16)
    if tensors and kind == 0:  # overlap, hole, or wrong size
        offsets = field(rng.choice(tensors)[1], "data_offsets")
        if offsets and isinstance(offsets[-1], int):
            offsets[rng.randrange(len(offsets))] = max(offsets[-1] + rng.choice([-3, -1, 1, 2]), 0)
    elif tensors and kind == 1:  # a dimension changes
        shape = field(rng.choice(tensors)[1], "shape")
        if shape and isinstance(shape[0], int):
            shape[0] = max(shape[0] + rng.choice([-1, 1]), 0)
        elif shape == []:
            shape.append(rng.choice([0, 1, 2]))
    elif tensors and kind == 2:  # another, unknown or misspelt dtype
        i, info = rng.choice(tensors)
        header[i] = (header[i][0], Obj([(k, rng.choice(DTYPES + ["f32", "F128", "XX", 3]) if k == "dtype" else v)
                                        for k, v in info]))
    elif tensors and kind == 3:  # a number that is not an unsigned 64-bit integer
        numbers = field(rng.choice(tensors)[1], rng.choice(["shape", "data_offsets"]))
        if numbers:
            numbers[rng.randrange(len(numbers))] = Raw(rng.choice(BAD_NUMBERS))
    elif tensors and kind == 4:  # a missing field, or an extra one (ignored unless it is bad JSON)
        i, info = rng.choice(tensors)
        if rng.random() < 0.4:
            del info[rng.randrange(len(info))]
        else:
            info.insert(rng.randint(0, len(info)), (rng.choice(["extra", "dtype", "offsets"]),
                                                    Raw(rng.choice(ODD_VALUES + ['"U8"', "[0, 0]"]))))
    elif tensors and kind == 5:  # the same tensor name twice: the last one counts
        i, info = rng.choice(tensors)
        other = rng.choice(tensors)[1]
        header.insert(rng.randint(0, len(header)), (header[i][0], Obj(list(other))))
    elif tensors and kind == 6:  # the array form [dtype, shape, data_offsets] (of a wrong length, sometimes)
        i, info = rng.choice(tensors)
        values = [v for k, v in info if k in ("dtype", "shape", "data_offsets")]
        header[i] = (header[i][0], values + ([0] if rng.random() < 0.2 else []))
    elif kind == 7:  # metadata: twice, not strings, not a map
        bad = rng.choice([Obj([("a", 1)]), Obj([("a", "x"), ("a", "y")]), [], Raw("null"), "text"])
        header.insert(rng.randint(0, len(header)), ("__metadata__", bad))
    elif kind == 8:  # a name with a lone surrogate, a surrogate pair, a control character or an escaped NUL
        key = rng.choice(['"\\udc00x"', '"\\ud83d\\ude00"', '"a\\u0000"', '"tab\tkey"'])
        header.insert(0, (Raw(key), Obj([("dtype", "U8"), ("shape", [0]), ("data_offsets", [0, 0])])))
    elif kind == 9:
        return None, data, rng.choice(["[]", "null", "1", '"x"', "", "{", "{}}"])
    elif tensors and kind == 10:  # a tensor described by something that is no description
        i, _ = rng.choice(tensors)
        header[i] = (header[i][0], Raw(rng.choice(["null", "1", '"x"', "[]"])))
    elif kind == 11:  # more or fewer data bytes
        data = data + bytes(rng.randint(1, 3)) if rng.random() < 0.5 or not data else data[:-1]
    return header, data, None


def encode(rng: random.Random, header, data: bytes, text: str | None) -> bytes:
    text = dump(header) if text is None else text
    trimmings = rng.randrange(12)
    if trimmings == 0:
        text = rng.choice([" ", "\n", "\t\r\n "]) + text
    elif trimmings == 1:
        text += rng.choice([" ", "\n  ", "\0", "x", "}"])
    elif trimmings == 2:
        text = "\ufeff" + text
    blob = text.encode("utf-8", "surrogatepass")
    if trimmings == 3 and blob:
        index = rng.randrange(len(blob))
        blob = blob[:index] + rng.choice([b"\xff", b"\xc3", b"\xed\xa0\x80"]) + blob[index:]
    blob += b" " * rng.choice([0, 0, (-len(blob)) % 8])
    length = len(blob) + (rng.choice([-2, -1, 1, 3]) if trimmings == 4 else 0)
    return struct.pack("<Q", max(length, 0)) + blob + data


def library(raw: bytes):
    try:
        return {name: (info["dtype"], list(info["shape"]), bytes(info["data"]))
                for name, info in safetensors.deserialize(raw)}
    except Exception:  # noqa: BLE001 - the library raises SafetensorError, and others for some inputs
        return None


def ours(path):
    try:
        tensors = read_safetensors(path)
    except CheckpointError:
        return None
    return {name: (NAMES[array.dtype], list(array.shape), array.tobytes()) for name, array in tensors.items()}


def test_fuzzed_headers_are_judged_as_the_library_judges_them(tmp_path):
    rng = random.Random(20261126)
    path = tmp_path / "fuzz.safetensors"
    counts = {"read": 0, "rejected": 0}
    for case in range(3000):
        header, data = valid_file(rng)
        text = None
        for _ in range(rng.choice([0, 1, 1, 1, 2, 3])):
            if header is None:
                break
            header, data, text = mutate(rng, header, data)
        raw = encode(rng, header, data, text)
        path.write_bytes(raw)
        expected, actual = library(raw), ours(path)
        assert actual == expected, (case, raw[:400], expected, actual)
        counts["read" if expected is not None else "rejected"] += 1
    # the fuzzer reaches both sides of the line
    assert counts["read"] > 600 and counts["rejected"] > 600, counts


@pytest.mark.parametrize("offsets, problem", [
    ([[0, 8], [4, 12]], "overlaps the tensor before it"),
    ([[0, 8], [12, 20]], "leaves a hole before it"),
    ([[4, 12], [12, 20]], "leaves a hole before it"),
    ([[0, 8], [8, 12]], "needs 8 bytes, its byte range \\[8, 12\\) has 4"),
])
def test_overlaps_and_holes_are_named(tmp_path, offsets, problem):
    header = {f"t{i}": {"dtype": "F32", "shape": [2], "data_offsets": pair} for i, pair in enumerate(offsets)}
    blob = json.dumps(header).encode()
    (tmp_path / "x.safetensors").write_bytes(struct.pack("<Q", len(blob)) + blob + bytes(offsets[-1][1]))
    assert library((tmp_path / "x.safetensors").read_bytes()) is None
    with pytest.raises(CheckpointError, match=problem):
        read_safetensors(tmp_path / "x.safetensors")


def test_trailing_bytes_and_sub_byte_dtypes(tmp_path):
    path = tmp_path / "x.safetensors"
    write_safetensors(path, {"a": np.arange(3, dtype=np.float32)})
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(CheckpointError, match="allows no trailing bytes"):
        read_safetensors(path)
    blob = json.dumps({"packed": {"dtype": "F4", "shape": [4], "data_offsets": [0, 2]}}).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + b"\1\2")
    assert library(path.read_bytes()) is not None  # valid, but 4-bit values have no numpy dtype
    with pytest.raises(CheckpointError, match="dtype F4, which jaxbackbones does not read"):
        read_safetensors(path)
