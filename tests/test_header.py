"""The safetensors header reader: valid files and every kind of broken one, with exact messages."""

from __future__ import annotations

import json
import os
import struct

import pytest
import torch
from safetensors.torch import save_file

from mechalang.archs import header as H
from mechalang.archs.header import HeaderError, TensorMeta, read_header


@pytest.fixture(autouse=True)
def _fresh_cache():
    H.clear_cache()
    yield
    H.clear_cache()


def raw_file(tmp_path, body: bytes | dict, data: bytes = b"", name="f.safetensors", length=None):
    if isinstance(body, dict):
        body = json.dumps(body).encode()
    p = tmp_path / name
    n = len(body) if length is None else length
    p.write_bytes(struct.pack("<Q", n) + body + data)
    return str(p)


def message(path) -> str:
    with pytest.raises(HeaderError) as ei:
        read_header(path)
    assert ei.value.path == str(path)
    assert str(ei.value) == f"{path}: {ei.value.message}"
    return ei.value.message


# ------------------------------------------------------------------------------------------------
# Valid files


def test_reads_a_file_written_by_safetensors(tmp_path):
    tensors = {
        "b.weight": torch.arange(6, dtype=torch.float16).reshape(2, 3),
        "a.bias": torch.ones(4, dtype=torch.bfloat16),
        "ids": torch.arange(5, dtype=torch.int64).reshape(1, 5),
        "scalar": torch.tensor(3.5, dtype=torch.float32),
        "empty": torch.zeros((0,), dtype=torch.int64),
    }
    p = str(tmp_path / "m.safetensors")
    save_file(tensors, p, metadata={"format": "pt", "note": "hello"})
    h = read_header(p)
    assert h.path == p
    assert h.size == os.path.getsize(p)
    assert h.metadata == {"format": "pt", "note": "hello"}
    assert set(h.tensors) == set(tensors)
    assert h.tensors["b.weight"].dtype == "F16" and h.tensors["b.weight"].shape == (2, 3)
    assert h.tensors["a.bias"].dtype == "BF16"
    assert h.tensors["ids"] == TensorMeta("I64", (1, 5), h.tensors["ids"].begin, h.tensors["ids"].end)
    assert h.tensors["scalar"].shape == () and h.tensors["scalar"].nbytes == 4
    # in file order, and the bytes at the offsets are the tensors' bytes
    begins = [t.begin for t in h.tensors.values()]
    assert begins == sorted(begins)
    raw = open(p, "rb").read()
    for name, t in tensors.items():
        meta = h.tensors[name]
        chunk = raw[h.data_start + meta.begin: h.data_start + meta.end]
        assert chunk == t.reshape(-1).view(torch.uint8).numpy().tobytes(), name
    assert h.data_start == 8 + struct.unpack("<Q", raw[:8])[0]


def test_no_metadata_and_no_tensors(tmp_path):
    p = raw_file(tmp_path, {})
    h = read_header(p)
    assert h.tensors == {} and h.metadata == {}


def test_tensors_come_in_offset_order_not_json_order(tmp_path):
    body = {"z": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]},
            "a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}
    h = read_header(raw_file(tmp_path, body, b"\0" * 8))
    assert list(h.tensors) == ["a", "z"]


def test_cache_is_keyed_on_size_and_mtime(tmp_path):
    p = tmp_path / "m.safetensors"
    save_file({"x": torch.zeros(2)}, str(p))
    h1 = read_header(str(p))
    assert read_header(str(p)) is h1
    save_file({"x": torch.zeros(3), "y": torch.zeros(1)}, str(p))
    os.utime(p, ns=(h1.mtime_ns + 10**9, h1.mtime_ns + 10**9))
    h2 = read_header(str(p))
    assert set(h2.tensors) == {"x", "y"}


def test_reads_only_the_header_of_a_huge_file(tmp_path):
    body = {"x": {"dtype": "F16", "shape": [5 * 10**9], "data_offsets": [0, 10**10]}}
    p = raw_file(tmp_path, body)
    with open(p, "r+b") as f:
        f.truncate(os.path.getsize(p) + 10**10)  # sparse: 10 GB of zeros that are never read
    h = read_header(p)
    assert h.tensors["x"].nbytes == 10**10


def test_sub_byte_and_fp8_dtypes(tmp_path):
    body = {"a": {"dtype": "F8_E4M3", "shape": [4], "data_offsets": [0, 4]},
            "b": {"dtype": "F4", "shape": [4], "data_offsets": [4, 6]}}
    h = read_header(raw_file(tmp_path, body, b"\0" * 6))
    assert h.tensors["b"].nbytes == 2


# ------------------------------------------------------------------------------------------------
# Broken files


def test_missing_file(tmp_path):
    assert message(tmp_path / "nope.safetensors") == "no such file"


def test_directory(tmp_path):
    assert message(tmp_path) == "is a directory"


def test_empty_file(tmp_path):
    p = tmp_path / "e.safetensors"
    p.write_bytes(b"")
    assert message(p) == "not a safetensors file: the file is empty"


def test_shorter_than_the_length_field(tmp_path):
    p = tmp_path / "s.safetensors"
    p.write_bytes(b"abcde")
    assert message(p) == "not a safetensors file: it is only 5 bytes long"


def test_header_length_past_the_end(tmp_path):
    p = raw_file(tmp_path, b"{}", length=2**64 - 1)
    assert message(p) == ("not a safetensors file: header length 18446744073709551615 is larger "
                          "than the file (10 bytes)")


def test_header_length_past_the_end_of_a_large_file(tmp_path):
    p = raw_file(tmp_path, b"{}", length=2**64 - 1)
    with open(p, "r+b") as f:
        f.truncate(2_100_000_000)
    assert message(p) == ("not a safetensors file: header length 18446744073709551615 is larger "
                          "than the file (2.1 GB)")


def test_header_over_the_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(H, "MAX_HEADER_BYTES", 10)
    p = raw_file(tmp_path, b"{" + b" " * 20 + b"}")
    assert message(p) == "not a safetensors file: header length 22 is over the 10 bytes limit"


def test_not_json(tmp_path):
    p = raw_file(tmp_path, b'{"x": {"dtype": "F16",, }}')
    assert message(p) == "header is not valid JSON at byte 22"


def test_not_json_byte_position_counts_utf8_bytes(tmp_path):
    p = raw_file(tmp_path, '{"é": 1,,}'.encode())
    assert message(p) == "header is not valid JSON at byte 9"  # character 8; é takes 2 bytes


def test_not_utf8(tmp_path):
    p = raw_file(tmp_path, b'{"\xff": 1}')
    assert message(p) == "header is not valid UTF-8 at byte 2"


def test_not_an_object(tmp_path):
    assert message(raw_file(tmp_path, b"[1, 2]")) == "header is not a JSON object (it is a list)"


def test_unknown_dtype(tmp_path):
    body = {"x": {"dtype": "F7", "shape": [2], "data_offsets": [0, 4]}}
    assert message(raw_file(tmp_path, body, b"\0" * 4)) == "tensor `x` has unknown dtype `F7`"


def test_missing_field(tmp_path):
    body = {"x": {"dtype": "F16", "shape": [2]}}
    assert message(raw_file(tmp_path, body, b"\0" * 4)) == "tensor `x` has no `data_offsets`"


def test_entry_not_an_object(tmp_path):
    assert message(raw_file(tmp_path, {"x": 3})) == "tensor `x`: entry is not a JSON object"


def test_invalid_shape(tmp_path):
    body = {"x": {"dtype": "F16", "shape": [2, -1], "data_offsets": [0, 4]}}
    assert message(raw_file(tmp_path, body, b"\0" * 4)) == "tensor `x` has an invalid shape [2, -1]"


def test_invalid_offsets(tmp_path):
    body = {"x": {"dtype": "F16", "shape": [2], "data_offsets": [0]}}
    assert message(raw_file(tmp_path, body, b"\0" * 4)) == "tensor `x` has invalid data offsets [0]"


def test_offsets_out_of_order(tmp_path):
    body = {"x": {"dtype": "F16", "shape": [2], "data_offsets": [10, 4]}}
    assert message(raw_file(tmp_path, body, b"\0" * 12)) == \
        "tensor `x`: data offsets [10, 4] are not in order"


def test_offsets_overlap(tmp_path):
    body = {"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
            "y": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}
    assert message(raw_file(tmp_path, body, b"\0" * 12)) == \
        "tensor `y`: data offsets [4, 12] overlap `x`"


def test_zero_length_tensors_do_not_overlap(tmp_path):
    body = {"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
            "e": {"dtype": "F32", "shape": [0], "data_offsets": [8, 8]}}
    assert set(read_header(raw_file(tmp_path, body, b"\0" * 8)).tensors) == {"x", "e"}


def test_offsets_past_the_end(tmp_path):
    body = {"x": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}
    assert message(raw_file(tmp_path, body, b"\0" * 10)) == \
        "tensor `x`: data offsets [0, 16] run past the end of the file (file is truncated?)"


def test_size_mismatch(tmp_path):
    body = {"x": {"dtype": "F16", "shape": [4], "data_offsets": [0, 6]}}
    assert message(raw_file(tmp_path, body, b"\0" * 8)) == \
        "tensor `x`: shape [4] × F16 is 8 bytes, but its data offsets [0, 6] span 6 bytes"


def test_metadata_must_be_strings(tmp_path):
    p = raw_file(tmp_path, {"__metadata__": {"a": 1}})
    assert message(p) == "header `__metadata__` is not a map of strings"


def test_truncated_real_file(tmp_path):
    p = tmp_path / "t.safetensors"
    save_file({"a": torch.zeros(100), "b": torch.zeros(100)}, str(p))
    data = p.read_bytes()
    p.write_bytes(data[:-10])
    msg = message(p)
    assert msg.startswith("tensor `b`: data offsets [400, 800] run past the end")


def test_format_bytes():
    from mechalang.units import format_bytes

    assert format_bytes(1) == "1 byte"
    assert format_bytes(999) == "999 bytes"
    assert format_bytes(2_100_000_000) == "2.1 GB"
    assert format_bytes(1500) == "1.5 KB"
