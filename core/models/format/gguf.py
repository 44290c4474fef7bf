"""A bounded GGUF header reader: metadata and tensor table, never the weights.

The reader works over a ``ByteSource`` (a local file, or HTTP range requests against a hub), so
it pulls bytes in growing chunks instead of seeking around: a fit over HTTP then costs a handful
of requests. Every length read from the file is checked against the bytes that can still follow
before anything is allocated, so a hostile or truncated file ends in one ``ModelFileError`` naming
the file, the problem and the byte offset -- never a hang or a huge allocation.

Large metadata arrays (a 150k-string vocabulary, BPE merges, per-token scores) are not kept: an
array longer than ``INLINE_ARRAY_LIMIT`` becomes an ``ArrayValue`` that knows its element type,
length and where it lives, so ``len(header.get("tokenizer.ggml.tokens"))`` stays cheap.

The checks follow what llama.cpp's loader enforces, so a header this module accepts is one
llama.cpp will not reject for its layout.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from rigdeck.core.errors import ModelFileError
from rigdeck.core.models.format.byte_source import ByteSource, BytesSource, FileSource
from rigdeck.core.models.format.gguf_header import (
    DEFAULT_MAX_BYTES,
    INLINE_ARRAY_LIMIT,
    MAX_ARRAY_DEPTH,
    VALUE_TYPE_NAMES,
    ArrayValue,
    GGUFHeader,
    TensorInfo,
)
from rigdeck.core.models.format.gguf_parser import parse_header

__all__ = [
    "DEFAULT_MAX_BYTES",
    "INLINE_ARRAY_LIMIT",
    "MAX_ARRAY_DEPTH",
    "VALUE_TYPE_NAMES",
    "ArrayValue",
    "ByteSource",
    "BytesSource",
    "FileSource",
    "GGUFHeader",
    "TensorInfo",
    "join_split",
    "read_gguf",
    "read_header",
    "split_parts",
]

_SPLIT_RE = re.compile(
    r"^(?P<prefix>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})(?P<ext>\.gguf)$", re.IGNORECASE
)


def read_header(source: ByteSource, *, max_bytes: int = DEFAULT_MAX_BYTES) -> GGUFHeader:
    """Parse the header of the GGUF behind ``source``, reading at most ``max_bytes`` from it."""
    return parse_header(source, max_bytes)


def split_parts(path: str | os.PathLike[str]) -> list[Path]:
    """All files of the split model ``path`` belongs to, in order (whether they exist or not).

    llama.cpp names split files ``<prefix>-00001-of-00003.gguf``; any part finds the others. A
    path without that pattern is a single-file model: ``[path]``.
    """
    p = Path(path)
    m = _SPLIT_RE.match(p.name)
    if m is None:
        return [p]
    no, count = int(m["no"]), int(m["count"])
    if count < 1 or not 1 <= no <= count:
        raise ModelFileError(f"{p}: split file name says part {no} of {count}")
    prefix, ext = m["prefix"], m["ext"]
    return [p.with_name(f"{prefix}-{i:05d}-of-{count:05d}{ext}") for i in range(1, count + 1)]


def _read_one(path: Path) -> GGUFHeader:
    with FileSource(path) as source:
        return read_header(source)


def read_gguf(path: str | os.PathLike[str]) -> GGUFHeader:
    """Read the header of a local GGUF; a split model is read as one model.

    For a split model the metadata is the first part's (it carries all of it), the tensor tables
    are concatenated (``TensorInfo.part`` says which file holds each, and its ``offset`` is within
    that file's data section), ``version``, ``alignment`` and ``data_offset`` are the first
    part's, ``file_size`` and ``header_bytes`` are summed over the parts, and ``parts`` lists the
    files.
    """
    paths = split_parts(path)
    if len(paths) == 1:
        header = _read_one(paths[0])
        count = header.get("split.count")
        if isinstance(count, int) and count > 1:
            raise ModelFileError(
                f"{paths[0]}: is one part of a {count}-part split model but its name does not "
                "end in -0000N-of-0000M.gguf"
            )
        return header
    return _read_split(paths)


def _read_split(paths: list[Path]) -> GGUFHeader:
    first = paths[0]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        names = ", ".join(p.name for p in missing)
        raise ModelFileError(f"{first}: split model is missing part(s) {names}")
    return join_split([_read_one(p) for p in paths], [str(p) for p in paths])


def join_split(headers: Sequence[GGUFHeader], names: Sequence[str]) -> GGUFHeader:
    """One model from the headers of every part of a split, in order (local files or remote).

    Checks what the parts say about themselves (part number, part count, tensor count) against
    their names, so a mixed-up or incomplete set is one clear error rather than a wrong fit.
    """
    first = names[0]
    tensors: list[TensorInfo] = []
    seen: set[str] = set()
    for index, (p, h) in enumerate(zip(names, headers, strict=True)):
        count = h.get("split.count")
        if count is not None and count != len(names):
            raise ModelFileError(
                f"{p}: says it is one of {count} parts, the name says {len(names)}"
            )
        no = h.get("split.no")
        if no is not None and no != index:
            raise ModelFileError(f"{p}: says it is part {no} (from 0), the name says {index}")
        for t in h.tensors:
            if t.name in seen:
                raise ModelFileError(f"{p}: tensor {t.name!r} also appears in an earlier part")
            seen.add(t.name)
            tensors.append(_with_part(t, index))
    expected = headers[0].get("split.tensors.count")
    if isinstance(expected, int) and expected != len(tensors):
        raise ModelFileError(
            f"{first}: split model should hold {expected} tensors, its parts hold {len(tensors)}"
        )
    sizes = [h.file_size for h in headers]
    head = headers[0]
    return GGUFHeader(
        source=head.source,
        version=head.version,
        metadata=head.metadata,
        tensors=tuple(tensors),
        alignment=head.alignment,
        data_offset=head.data_offset,
        file_size=None if None in sizes else sum(s for s in sizes if s is not None),
        header_bytes=sum(h.header_bytes for h in headers),
        parts=tuple(names),
    )


def _with_part(t: TensorInfo, part: int) -> TensorInfo:
    if t.part == part:
        return t
    return TensorInfo(t.name, t.ggml_type, t.type_name, t.shape, t.offset, t.nbytes, part)
