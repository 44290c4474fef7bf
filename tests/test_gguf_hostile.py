"""Hostile, corrupt and truncated GGUFs: always one ModelFileError, never a hang or a big read."""

from __future__ import annotations

import random
import struct
from pathlib import Path

import pytest
from support.gguf_factory import (
    ARRAY,
    INT32,
    STRING,
    UINT8,
    TensorSpec,
    Val,
    encode_header,
    encode_string,
    write_model,
    write_raw,
)

from rigdeck.core.errors import ModelFileError
from rigdeck.core.models.format.gguf import (
    MAX_ARRAY_DEPTH,
    BytesSource,
    FileSource,
    GGUFHeader,
    read_gguf,
    read_header,
)

NAME = "evil.gguf"
Q4_K, F32 = 12, 0


class RecordingSource(BytesSource):
    """Remembers the largest single read, to prove no claimed length drives a big request."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data, NAME)
        self.largest = 0
        self.total = 0

    def read_at(self, offset: int, size: int) -> bytes:
        self.largest = max(self.largest, size)
        self.total += size
        return super().read_at(offset, size)


def rejected(data: bytes, match: str, **kwargs: int) -> ModelFileError:
    source = RecordingSource(data)
    with pytest.raises(ModelFileError, match=match) as info:
        read_header(source, **kwargs)
    message = str(info.value)
    assert message.startswith(f"{NAME}: ")
    assert "\n" not in message
    # Whatever the file claims, the reader fetched no more than it holds (plus one chunk).
    assert source.total <= max(len(data), 256 * 1024)
    return info.value


def build(metadata: dict[str, object], tensors: list[TensorSpec] = (), **options: object) -> bytes:  # type: ignore[assignment]
    header, data_size = encode_header(metadata, tensors, **options)  # type: ignore[arg-type]
    return header + b"\0" * data_size


def valid_small() -> bytes:
    """A small file exercising every value type, arrays and tensors."""
    return build(
        {
            "general.architecture": "llama",
            "general.alignment": 32,
            "u8": Val(UINT8, 7),
            "i32": Val(INT32, -3),
            "f": 0.5,
            "b": True,
            "u64": 2**40,
            "s": "text",
            "strs": ["a", "bb", ""],
            "ints": [1, 2, 3],
            "nested": Val(ARRAY, [[1], [2, 3]], ARRAY),
        },
        [TensorSpec("a", (32,), F32), TensorSpec("b", (256, 2), Q4_K), TensorSpec("c", (64,), F32)],
    )


def test_valid_small_parses() -> None:
    header = read_header(BytesSource(valid_small(), NAME))
    assert [t.name for t in header.tensors] == ["a", "b", "c"]
    assert header.get("nested") == ((1,), (2, 3))


# -- the preamble ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "not a GGUF file \\(only 0 bytes\\)"),
        (b"GG", "only 2 bytes"),
        (b"PK\x03\x04" + b"\0" * 100, "not a GGUF file \\(starts with b'PK"),
        (b"GGML" + b"\0" * 100, "starts with b'GGML'"),
    ],
)
def test_not_a_gguf(data: bytes, match: str) -> None:
    rejected(data, match)


@pytest.mark.parametrize(
    ("version", "match"),
    [
        (1, "version 1 is no longer supported"),
        (0x03000000, "big-endian"),
        (4, "unsupported GGUF version 4"),
        (0, "unsupported GGUF version 0"),
    ],
)
def test_versions(version: int, match: str) -> None:
    err = rejected(build({"a": 1}, version=version), match)
    assert "at offset 4" in str(err)


@pytest.mark.parametrize(
    ("counts", "match"),
    [
        ({"n_tensors": 2**40}, "absurd tensor count 1099511627776"),
        ({"n_kv": 2**63}, "absurd metadata count"),
        ({"n_tensors": 60_000}, "60000 tensors are claimed but only 200 bytes remain"),
        ({"n_kv": 50_000}, "50000 metadata entries and 1 tensors are claimed but only"),
    ],
)
def test_absurd_counts(counts: dict[str, int], match: str) -> None:
    rejected(build({"a": 1}, [TensorSpec("t", (32,), F32)], **counts), match)


# -- metadata --------------------------------------------------------------------------------


def _with_raw_kv(raw: bytes, n_kv: int = 1) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", 3, 0, n_kv) + raw


def test_huge_key_length() -> None:
    raw = struct.pack("<Q", 2**62) + b"abc" + b"\0" * 64
    err = rejected(
        _with_raw_kv(raw), "metadata key is 4611686018427387904 bytes long, the limit is 65535"
    )
    assert "at offset 24" in str(err)


def test_key_longer_than_spec_limit() -> None:
    key = "k" * 70_000
    rejected(build({key: 1}), "metadata key is 70000 bytes long, the limit is 65535")


def test_empty_and_duplicate_keys() -> None:
    raw = encode_string("") + struct.pack("<IB", 0, 1) + b"\0" * 64
    rejected(_with_raw_kv(raw), "empty metadata key")
    kv = encode_string("a") + struct.pack("<IB", 0, 1)
    rejected(_with_raw_kv(kv + kv, n_kv=2), "duplicate metadata key 'a'")


def test_huge_string_value() -> None:
    raw = encode_string("k") + struct.pack("<IQ", 8, 2**63 + 5)
    rejected(_with_raw_kv(raw), "value of 'k' claims 9223372036854775813 bytes")


@pytest.mark.parametrize("elem", [UINT8, STRING, INT32, ARRAY])
def test_huge_array_length(elem: int) -> None:
    raw = encode_string("arr") + struct.pack("<IIQ", 9, elem, 2**61) + b"\0" * 64
    rejected(_with_raw_kv(raw), "claims 2305843009213693952 array elements")


def test_array_longer_than_its_bytes() -> None:
    # Claims 100 strings, holds 3: the walk runs into the end of the file.
    data = build({"a": Val(ARRAY, ["x", "y", "z"], STRING, count=100)})
    rejected(data, "claims 100 array elements but only 27 bytes remain in the file")
    data = build({"a": Val(ARRAY, ["x", "y", "z"], STRING, count=4)}) + b"\5" + b"\0" * 7 + b"ab"
    rejected(data, "element of array 'a' claims 5 bytes but only 2 bytes remain")
    # One string too many: the next key is taken as the last string and the rest is garbage.
    data = build({"a": Val(ARRAY, ["x"] * 5000, STRING, count=5001), "b": 1})
    rejected(data, "at offset")


def test_unknown_value_types() -> None:
    rejected(build({"k": Val(13, b"\0" * 8)}), "key 'k' has unknown value type 13")
    rejected(build({"k": Val(ARRAY, [], 77)}), "key 'k' is an array of unknown type 77")


def test_nesting_depth() -> None:
    ok: object = [1]
    for _ in range(MAX_ARRAY_DEPTH - 1):
        ok = [ok]
    assert read_header(BytesSource(build({"k": ok}), NAME)).get("k") is not None
    deep: object = [1]
    for _ in range(MAX_ARRAY_DEPTH):
        deep = [deep]
    rejected(build({"k": deep}), f"nests arrays deeper than {MAX_ARRAY_DEPTH} levels")


def test_nesting_bomb_is_bounded() -> None:
    # Thousands of nested array headers each claiming one element: refused at the depth limit
    # instead of recursing until Python gives up.
    raw = encode_string("k") + struct.pack("<I", 9) + struct.pack("<IQ", 9, 1) * 5000
    rejected(_with_raw_kv(raw), "nests arrays deeper")


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (Val(INT32, 32), "general.alignment must be uint32, not int32"),
        (48, "general.alignment 48 is not a power of two"),
        (0, "general.alignment 0 is not a power of two"),
    ],
)
def test_bad_alignment(value: object, match: str) -> None:
    rejected(build({"general.alignment": value}), match)


def test_invalid_utf8_is_replaced_not_fatal() -> None:
    raw = encode_string(b"k\xff") + struct.pack("<I", 8) + encode_string(b"\xc3(")
    header = read_header(BytesSource(_with_raw_kv(raw), NAME))
    assert header.get("k\ufffd") == "\ufffd("


# -- tensor table ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tensor", "match"),
    [
        (TensorSpec("t", (1, 1, 1, 1, 32), F32), "tensor 't' has 5 dimensions, ggml allows 4"),
        (TensorSpec("t", (32,), F32, n_dims=2**31), "has 2147483648 dimensions"),
        (TensorSpec("t", (32, -1), F32), "negative dimension"),
        (TensorSpec("t", (2**40, 2**40), F32), "overflows int64"),
        (TensorSpec("t", (32,), 99, offset=0), "unknown ggml type id 99"),
        (TensorSpec("t", (32,), 31, offset=0), "Q4_0_4_4, which llama.cpp no longer loads"),
        (TensorSpec("t", (100, 4), Q4_K, offset=0), "100 elements per row, not a multiple"),
        (TensorSpec("t" * 64, (32,), F32), "tensor name is 64 bytes long, the limit is 63"),
    ],
)
def test_bad_tensor_entries(tensor: TensorSpec, match: str) -> None:
    err = rejected(build({"a": 1}, [TensorSpec("ok", (32,), F32), tensor]), match)
    assert "at offset" in str(err)


def test_duplicate_tensor_names() -> None:
    rejected(
        build({}, [TensorSpec("w", (32,), F32), TensorSpec("w", (32,), F32)]),
        "duplicate tensor name 'w'",
    )


@pytest.mark.parametrize(
    ("second_offset", "match"),
    [
        (16, "data offset 16 is not a multiple of the alignment 32"),
        (256, "data offset is 256, expected 128"),  # a gap
        (64, "data offset is 64, expected 128"),  # overlaps the first tensor
        (0, "data offset is 0, expected 128"),
    ],
)
def test_tensor_layout(second_offset: int, match: str) -> None:
    tensors = [TensorSpec("a", (32,), F32), TensorSpec("b", (32,), F32, offset=second_offset)]
    rejected(build({}, tensors), match)


def test_tensor_data_past_end_of_file(tmp_path: Path) -> None:
    path = write_model(tmp_path / "m.gguf", "llama-3.1-8b", with_tokenizer=False)
    full = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(full - 1000)  # an interrupted download
    with pytest.raises(ModelFileError, match=r"past the end of the file .*incomplete download"):
        read_gguf(path)


def test_every_truncation_is_an_error() -> None:
    data = valid_small()
    for cut in range(len(data)):
        with pytest.raises(ModelFileError):
            read_header(BytesSource(data[:cut], NAME))
    read_header(BytesSource(data, NAME))


def test_truncated_file_on_disk(tmp_path: Path) -> None:
    data = valid_small()
    for cut in (0, 3, 10, 30, len(data) // 2, len(data) - 1):
        path = tmp_path / f"cut{cut}.gguf"
        path.write_bytes(data[:cut])
        with pytest.raises(ModelFileError, match=str(path)):
            read_gguf(path)


def test_max_bytes() -> None:
    data = build({"big": "x" * 5000})
    rejected(data, "claims 5000 bytes, past the 4096-byte header limit", max_bytes=4096)
    assert read_header(BytesSource(data, NAME), max_bytes=8192).get("big") == "x" * 5000


def test_random_corruption_never_escapes() -> None:
    # Flip bytes anywhere in a valid header: the reader either copes or says ModelFileError.
    base = bytearray(valid_small())
    rnd = random.Random(1234)
    parsed = 0
    for _ in range(1500):
        data = bytearray(base)
        for _ in range(rnd.randint(1, 4)):
            pos = rnd.randrange(len(data))
            data[pos] = rnd.choice([0, 0xFF, rnd.randrange(256)])
        try:
            result = read_header(BytesSource(bytes(data), NAME))
        except ModelFileError as exc:
            assert str(exc).startswith(NAME) and "\n" not in str(exc)
        else:
            assert isinstance(result, GGUFHeader)
            parsed += 1
    assert parsed  # some flips land in values and are harmless


def test_random_garbage_after_magic() -> None:
    rnd = random.Random(99)
    for _ in range(300):
        tail = bytes(rnd.randrange(256) for _ in range(rnd.randint(0, 400)))
        data = b"GGUF" + struct.pack("<I", 3) + tail
        try:
            read_header(BytesSource(data, NAME))
        except ModelFileError:
            pass


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="no such file"):
        read_gguf(tmp_path / "missing.gguf")
    with pytest.raises(ModelFileError, match="is a directory"):
        read_gguf(tmp_path)
    path = write_raw(tmp_path / "ok.gguf", {"a": 1})
    with FileSource(path) as source:
        assert source.read_at(10_000, 10) == b""  # past the end: nothing, not an error
