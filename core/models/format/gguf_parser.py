"""The bounded GGUF parser: every length checked against the bytes that can still follow before
anything is allocated, so a hostile or truncated file ends in one ``ModelFileError`` naming the
file, the problem and the byte offset. `gguf.read_header` is its door."""

from __future__ import annotations

import struct
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from rigdeck.core.errors import ModelFileError
from rigdeck.core.models.format.byte_source import ByteSource
from rigdeck.core.models.format.ggml_types import GGML_MAX_DIMS, GGML_TYPES
from rigdeck.core.models.format.gguf_header import (
    ARRAY,
    BOOL,
    DEFAULT_ALIGNMENT,
    FLOAT32,
    FLOAT64,
    GGUF_MAGIC,
    INLINE_ARRAY_LIMIT,
    INT8,
    INT16,
    INT32,
    INT64,
    MAX_ARRAY_DEPTH,
    MAX_KEY_LENGTH,
    MAX_KV_COUNT,
    MAX_TENSOR_COUNT,
    MAX_TENSOR_NAME,
    STRING,
    SUPPORTED_VERSIONS,
    UINT8,
    UINT16,
    UINT32,
    UINT64,
    VALUE_TYPE_NAMES,
    ArrayValue,
    GGUFHeader,
    TensorInfo,
)

# Skipping a long string array is vectorized when numpy is importable (see _walk_short_strings).
_VECTOR_MIN_STRINGS = 4096
_VECTOR_WINDOW = 64 * 1024
_VECTOR_MIN_PROGRESS = 256
_VECTOR_FALLBACK_BATCH = 4096

_FIRST_CHUNK = 256 * 1024
_MAX_CHUNK = 8 * 1024 * 1024
_INT64_MAX = 2**63 - 1

# struct code and size of each fixed-size scalar type.
_SCALARS: Mapping[int, tuple[str, int]] = MappingProxyType(
    {
        UINT8: ("B", 1),
        INT8: ("b", 1),
        UINT16: ("H", 2),
        INT16: ("h", 2),
        UINT32: ("I", 4),
        INT32: ("i", 4),
        FLOAT32: ("f", 4),
        BOOL: ("?", 1),
        UINT64: ("Q", 8),
        INT64: ("q", 8),
        FLOAT64: ("d", 8),
    }
)
# The fewest bytes one element of each type can take, to bound counts before looping.
_MIN_SIZE: Mapping[int, int] = MappingProxyType(
    {**{t: s for t, (_, s) in _SCALARS.items()}, STRING: 8, ARRAY: 12}
)
_MIN_KV_BYTES = 8 + 1 + 4 + 1  # key length, one key byte, value type, smallest value
_MIN_TENSOR_BYTES = 8 + 1 + 4 + 4 + 8  # name length, one name byte, n_dims, type, offset

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_DIMS = tuple(struct.Struct(f"<{n}Q") for n in range(GGML_MAX_DIMS + 1))
_TYPE_OFFSET = struct.Struct("<IQ")


class _Reader:
    """Sequential little-endian reads over a ByteSource, fetched in growing chunks.

    ``_buf`` holds bytes from absolute offset ``_base``; ``_pos`` indexes into it. Consumed bytes
    are dropped at each refill, so memory stays near one chunk however long the header is.
    """

    def __init__(self, source: ByteSource, max_bytes: int) -> None:
        self.source = source
        self.name = source.name
        self.size = source.size
        self.max_bytes = max_bytes
        self.limit = max_bytes if self.size is None else min(max_bytes, self.size)
        self.fetched = 0
        self._buf = b""
        self._base = 0
        self._pos = 0
        # A streaming source (one HTTP response read as far as asked) costs nothing per read, but
        # every byte asked for beyond the header is wire spent: ask in its small steps instead.
        step = getattr(source, "read_step", None)
        self._chunk = step if isinstance(step, int) and step > 0 else _FIRST_CHUNK
        self._max_chunk = self._chunk if step else _MAX_CHUNK

    # -- errors -----------------------------------------------------------------------------

    def error(self, problem: str, offset: int | None = None) -> ModelFileError:
        at = self.tell() if offset is None else offset
        return ModelFileError(f"{self.name}: {problem} at offset {at}")

    def _past_limit(self, end: int, what: str) -> ModelFileError:
        if self.size is not None and end > self.size:
            return self.error(f"truncated file ({self.size} bytes) while reading {what}")
        return self.error(
            f"header is larger than the {_limit_text(self.max_bytes)} limit (reading {what})"
        )

    def overrun(self, claim: str, offset: int) -> ModelFileError:
        """A length or count read from the file that cannot be true: say which bound it breaks."""
        if self.size is not None and self.size <= self.max_bytes:
            return self.error(
                f"{claim} but only {self.remaining()} bytes remain in the file", offset
            )
        return self.error(f"{claim}, past the {_limit_text(self.max_bytes)} header limit", offset)

    # -- buffer -----------------------------------------------------------------------------

    def tell(self) -> int:
        return self._base + self._pos

    def remaining(self) -> int:
        """Bytes that may still follow the current position within the limit."""
        return self.limit - self.tell()

    def _need(self, n: int, what: str) -> None:
        """Make sure ``n`` bytes from the current position are buffered."""
        have = len(self._buf) - self._pos
        if have >= n:
            return
        end = self.tell() + n
        if end > self.limit:
            raise self._past_limit(end, what)
        start = self._base + len(self._buf)
        want = min(max(self._chunk, n - have), self.limit - start)
        data = self.source.read_at(start, want)
        self.fetched += len(data)
        self._chunk = min(self._chunk * 2, self._max_chunk)
        self._buf = self._buf[self._pos :] + data
        self._base += self._pos
        self._pos = 0
        if len(data) < want:
            # The source ended early: from now on that is the limit, whatever size it claimed.
            self.limit = self._base + len(self._buf)
            if self.size is None or self.size > self.limit:
                self.size = self.limit
            if len(self._buf) < n:
                raise self._past_limit(end, what)

    def skip(self, n: int, what: str) -> None:
        if n > self.remaining():
            raise self._past_limit(self.tell() + n, what)
        have = len(self._buf) - self._pos
        if n <= have:
            self._pos += n
        else:
            # Jump without fetching the skipped bytes; a later read will find any truncation.
            self._base = self.tell() + n
            self._buf = b""
            self._pos = 0

    def raw(self, n: int, what: str) -> bytes:
        self._need(n, what)
        pos = self._pos
        self._pos = pos + n
        return self._buf[pos : pos + n]

    def u32(self, what: str) -> int:
        self._need(4, what)
        (value,) = _U32.unpack_from(self._buf, self._pos)
        self._pos += 4
        return int(value)

    def unpack(self, st: struct.Struct, what: str) -> tuple[Any, ...]:
        self._need(st.size, what)
        values = st.unpack_from(self._buf, self._pos)
        self._pos += st.size
        return values

    def u64(self, what: str) -> int:
        self._need(8, what)
        (value,) = _U64.unpack_from(self._buf, self._pos)
        self._pos += 8
        return int(value)

    def scalar(self, vtype: int, what: str) -> object:
        code, size = _SCALARS[vtype]
        self._need(size, what)
        (value,) = struct.unpack_from("<" + code, self._buf, self._pos)
        self._pos += size
        return value

    def string_bytes(self, what: str, limit: int | None = None) -> bytes:
        start = self.tell()
        length = self.u64(f"length of {what}")
        if limit is not None and length > limit:
            raise self.error(f"{what} is {length} bytes long, the limit is {limit}", start)
        if length > self.remaining():
            raise self.overrun(f"{what} claims {length} bytes", start)
        return self.raw(length, what)

    def string(self, what: str, limit: int | None = None) -> str:
        return self.string_bytes(what, limit).decode("utf-8", errors="replace")

    def strings(self, count: int, keep: bool, what: str) -> list[str]:
        """Read ``count`` strings; with ``keep`` false only walk past them."""
        if not keep and count >= _VECTOR_MIN_STRINGS:
            np = _numpy()
            if np is not None:
                self._skip_strings_vectorized(np, count, what)
                return []
        return self._strings(count, keep, what)

    def _strings(self, count: int, keep: bool, what: str) -> list[str]:
        out: list[str] = []
        unpack = _U64.unpack_from
        left = count
        while left:
            buf = self._buf
            pos = self._pos
            n = len(buf)
            # Tight loop over strings wholly inside the buffer; anything else takes the slow path.
            if keep:
                while left and pos + 8 <= n:
                    end = pos + 8 + unpack(buf, pos)[0]
                    if end > n:
                        break
                    out.append(buf[pos + 8 : end].decode("utf-8", errors="replace"))
                    pos = end
                    left -= 1
            else:
                while left and pos + 8 <= n:
                    end = pos + 8 + unpack(buf, pos)[0]
                    if end > n:
                        break
                    pos = end
                    left -= 1
            self._pos = pos
            if left:
                text = self.string(what)
                if keep:
                    out.append(text)
                left -= 1
        return out

    def _skip_strings_vectorized(self, np: Any, count: int, what: str) -> None:
        # A vocabulary and its merges are ~400k strings; walking them one by one in Python is most
        # of a header's parse time, so walk the buffered part with numpy and fall back to the
        # plain loop for whatever that cannot settle (buffer ends, unusual layouts).
        left = count
        walked = walked_bytes = 0
        per_string = 16.0  # bytes, typical of real vocabularies; refined as the walk goes
        while left:
            # Look about as far as the strings left should reach: whatever follows the array
            # costs time for nothing (and zero-filled data is all candidates).
            end = min(len(self._buf), self._pos + int(left * per_string * 1.1) + _VECTOR_WINDOW)
            start = self.tell()
            done, self._pos = _walk_short_strings(np, self._buf, self._pos, end, left)
            left -= done
            if done:
                walked += done
                walked_bytes += self.tell() - start
                per_string = walked_bytes / walked
            if left and done < _VECTOR_MIN_PROGRESS:
                batch = min(left, _VECTOR_FALLBACK_BATCH)
                self._strings(batch, False, what)
                left -= batch


def _numpy() -> Any:
    """numpy if it can be imported (it comes with llama-cpp-python), else None."""
    global _NUMPY
    if _NUMPY is False:
        try:
            import numpy
        except ImportError:
            _NUMPY = None
        else:
            _NUMPY = numpy
    return _NUMPY


_NUMPY: Any = False  # not tried yet


def _walk_short_strings(np: Any, buf: bytes, pos: int, end: int, left: int) -> tuple[int, int]:
    """Walk up to ``left`` length-prefixed strings from ``buf[pos:end]``, vectorized.

    Returns (strings passed, new position); only strings wholly before ``end`` are passed, and it
    may stop early anywhere. The result is exactly what the sequential walk would give.

    A string shorter than 256 bytes starts with 8 bytes [n, 0, 0, 0, 0, 0, 0, 0], so every such
    start is a "candidate" (bytes 1..7 zero) and its successor is at start + 8 + n. Where each
    candidate's successor is the next candidate, the chain is settled without visiting it one by
    one; breaks in that pattern (a long string, a stray candidate inside a string) are stepped
    over individually.
    """
    r = np.frombuffer(buf, dtype=np.uint8, count=end - pos, offset=pos)
    m = len(r)
    if m < 8:
        return 0, pos
    k = m - 7
    zero = r == 0
    ok = zero[1 : 1 + k].copy()
    for j in range(2, 8):
        ok &= zero[j : j + k]
    cand = np.flatnonzero(ok)
    if not len(cand):
        return 0, pos
    nxt = cand + 8 + r[cand]
    breaks = np.flatnonzero(nxt[:-1] != cand[1:])
    last = len(cand) - 1
    unpack = _U64.unpack_from
    done = 0
    p = 0  # relative to pos; always the start of a real string
    steps = 0
    while done < left:
        i = int(np.searchsorted(cand, p))
        if i <= last and int(cand[i]) == p:
            b = int(np.searchsorted(breaks, i))
            f = int(breaks[b]) if b < len(breaks) else last
            run = f - i  # strings cand[i..f-1], each ending where the next begins
            if run >= left - done:
                p = int(cand[i + left - done])
                done = left
                break
            done += run
            q = int(nxt[f])
            if q > m:
                p = int(cand[f])
                break
        else:
            if p + 8 > m:
                break
            q = p + 8 + unpack(buf, pos + p)[0]
            if q > m:
                break
        p = q
        done += 1
        steps += 1
        if steps > 64 and steps * 16 > done:
            break  # mostly breaks: not worth it, leave the rest to the plain loop
    return done, pos + p


def _limit_text(max_bytes: int) -> str:
    mib = 1024 * 1024
    if max_bytes % mib == 0:
        return f"{max_bytes // mib} MiB"
    return f"{max_bytes}-byte"


def _align(offset: int, alignment: int) -> int:
    return offset + (-offset % alignment)


class _Parser:
    def __init__(self, reader: _Reader) -> None:
        self.r = reader

    def value(self, vtype: int, key: str, depth: int) -> object:
        r = self.r
        if vtype == STRING:
            return r.string(f"value of {key!r}")
        if vtype == ARRAY:
            return self.array(key, depth + 1)
        if vtype in _SCALARS:
            return r.scalar(vtype, f"value of {key!r}")
        raise r.error(f"key {key!r} has unknown value type {vtype}", r.tell() - 4)

    def array(self, key: str, depth: int) -> tuple[object, ...] | ArrayValue:
        r = self.r
        start = r.tell()
        if depth > MAX_ARRAY_DEPTH:
            raise r.error(f"key {key!r} nests arrays deeper than {MAX_ARRAY_DEPTH} levels", start)
        etype = r.u32(f"array type of {key!r}")
        if etype not in _MIN_SIZE:
            raise r.error(f"key {key!r} is an array of unknown type {etype}", start)
        count = r.u64(f"array length of {key!r}")
        if count * _MIN_SIZE[etype] > r.remaining():
            raise r.overrun(f"key {key!r} claims {count} array elements", start)
        first = r.tell()
        keep = count <= INLINE_ARRAY_LIMIT
        items: tuple[object, ...]
        if etype in _SCALARS:
            code, size = _SCALARS[etype]
            if not keep:
                r.skip(count * size, f"array {key!r}")
                return ArrayValue(etype, count, first, count * size)
            data = r.raw(count * size, f"array {key!r}")
            items = struct.unpack(f"<{count}{code}", data)
        elif etype == STRING:
            texts = r.strings(count, keep, f"element of array {key!r}")
            if not keep:
                return ArrayValue(etype, count, first, r.tell() - first)
            items = tuple(texts)
        else:
            nested = [self.array(key, depth + 1) for _ in range(count)]
            if not keep:
                return ArrayValue(etype, count, first, r.tell() - first)
            items = tuple(nested)
        return items

    def header(self) -> GGUFHeader:
        r = self.r
        magic = r.raw(4, "magic") if r.limit >= 4 else b""
        if magic != GGUF_MAGIC:
            if len(magic) < 4:
                raise ModelFileError(f"{r.name}: not a GGUF file (only {r.limit} bytes)")
            raise ModelFileError(f"{r.name}: not a GGUF file (starts with {magic!r}, not b'GGUF')")
        version = r.u32("version")
        if version not in SUPPORTED_VERSIONS:
            if version == 1:
                problem = "GGUF version 1 is no longer supported; re-convert the model"
            elif version and version & 0xFFFF == 0:
                problem = "big-endian GGUF files are not supported"
            else:
                problem = f"unsupported GGUF version {version}"
            raise r.error(problem, 4)
        n_tensors = r.u64("tensor count")
        n_kv = r.u64("metadata count")
        if n_tensors > MAX_TENSOR_COUNT:
            raise r.error(f"absurd tensor count {n_tensors} (limit {MAX_TENSOR_COUNT})", 8)
        if n_kv > MAX_KV_COUNT:
            raise r.error(f"absurd metadata count {n_kv} (limit {MAX_KV_COUNT})", 16)
        if n_kv * _MIN_KV_BYTES + n_tensors * _MIN_TENSOR_BYTES > r.remaining():
            raise r.overrun(f"{n_kv} metadata entries and {n_tensors} tensors are claimed", 8)

        metadata: dict[str, object] = {}
        alignment = DEFAULT_ALIGNMENT
        for _ in range(n_kv):
            key_at = r.tell()
            key = r.string("metadata key", MAX_KEY_LENGTH)
            if not key:
                raise r.error("empty metadata key", key_at)
            if key in metadata:
                raise r.error(f"duplicate metadata key {key!r}", key_at)
            vtype = r.u32(f"value type of {key!r}")
            value = self.value(vtype, key, 0)
            if key == "general.alignment":
                # llama.cpp reads it as uint32 only and needs a power of two.
                if vtype != UINT32:
                    raise r.error(
                        f"general.alignment must be uint32, not {VALUE_TYPE_NAMES[vtype]}", key_at
                    )
                assert isinstance(value, int)
                if value <= 0 or value & (value - 1):
                    raise r.error(f"general.alignment {value} is not a power of two", key_at)
                alignment = value
            metadata[key] = value

        tensors: list[TensorInfo] = []
        seen: set[str] = set()
        for _ in range(n_tensors):
            tensors.append(self.tensor_info(seen))

        end = r.tell()
        data_offset = _align(end, alignment) if n_tensors else end
        self.check_layout(tensors, alignment, data_offset)
        return GGUFHeader(
            source=r.name,
            version=version,
            metadata=MappingProxyType(metadata),
            tensors=tuple(tensors),
            alignment=alignment,
            data_offset=data_offset,
            file_size=r.source.size,
            header_bytes=r.fetched,
        )

    def tensor_info(self, seen: set[str]) -> TensorInfo:
        r = self.r
        at = r.tell()
        name = r.string("tensor name", MAX_TENSOR_NAME)
        if name in seen:
            raise r.error(f"duplicate tensor name {name!r}", at)
        seen.add(name)
        label = f"tensor {name!r}"
        n_dims = r.u32(label)
        if n_dims > GGML_MAX_DIMS:
            raise r.error(f"{label} has {n_dims} dimensions, ggml allows {GGML_MAX_DIMS}", at)
        shape: tuple[int, ...] = r.unpack(_DIMS[n_dims], label)
        n_elements = 1
        for dim in shape:
            # ggml dimensions are int64: a uint64 above INT64_MAX is a negative size.
            if dim > _INT64_MAX:
                raise r.error(f"{label} has a negative dimension in shape {shape}", at)
            n_elements *= dim
        if n_elements > _INT64_MAX:
            raise r.error(f"{label} shape {shape} overflows int64", at)
        type_id, offset = r.unpack(_TYPE_OFFSET, label)
        info = GGML_TYPES.get(type_id)
        if info is None:
            raise r.error(f"tensor {name!r} has unknown ggml type id {type_id}", at)
        if info.removed:
            raise r.error(
                f"tensor {name!r} uses type {info.name}, which llama.cpp no longer loads; "
                "use a Q4_0/IQ4_NL file instead",
                at,
            )
        row = shape[0] if shape else 1
        if row % info.block_size:
            raise r.error(
                f"tensor {name!r} of type {info.name} has {row} elements per row, "
                f"not a multiple of the block size {info.block_size}",
                at,
            )
        nbytes = n_elements // info.block_size * info.type_size
        return TensorInfo(name, type_id, info.name, shape, offset, nbytes)

    def check_layout(self, tensors: list[TensorInfo], alignment: int, data_offset: int) -> None:
        # llama.cpp requires the data section to be the tensors back to back, each padded to the
        # alignment, in table order; anything else is a corrupt or hand-edited file.
        r = self.r
        expected = 0
        for t in tensors:
            if t.offset % alignment:
                raise r.error(
                    f"tensor {t.name!r} data offset {t.offset} is not a multiple of the "
                    f"alignment {alignment}",
                    data_offset,
                )
            if t.offset != expected:
                raise r.error(
                    f"tensor {t.name!r} data offset is {t.offset}, expected {expected} "
                    "(tensor data must be contiguous and in order)",
                    data_offset,
                )
            expected += _align(t.nbytes, alignment)
        size = r.source.size
        if tensors and size is not None:
            last = tensors[-1]
            end = data_offset + last.offset + last.nbytes
            if end > size:
                raise r.error(
                    f"tensor {last.name!r} data ends at byte {end}, past the end of the file "
                    f"({size} bytes); incomplete download?",
                    data_offset,
                )


def parse_header(source: ByteSource, max_bytes: int) -> GGUFHeader:
    return _Parser(_Reader(source, max_bytes)).header()
