"""Where a GGUF header's bytes come from: a local file, bytes in memory, or (sources/hub_range)
HTTP range requests. The reader asks for growing chunks at offsets, never seeks around."""

from __future__ import annotations

import os
from typing import Protocol, runtime_checkable

from rigdeck.core.errors import ModelFileError


@runtime_checkable
class ByteSource(Protocol):
    """Random-access bytes: a local file, or a remote file read with HTTP range requests."""

    name: str  # shown in error messages (a path, or repo/file)

    @property
    def size(self) -> int | None:
        """Total bytes, when known."""
        ...

    def read_at(self, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes at ``offset``; fewer only at end of file."""
        ...


class FileSource:
    """A ByteSource over a local file; use it as a context manager so the file gets closed."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.name = str(path)
        try:
            self._file = open(path, "rb", buffering=0)  # noqa: SIM115 -- closed by close()
            self._size: int = os.fstat(self._file.fileno()).st_size
        except IsADirectoryError:
            raise ModelFileError(f"{self.name}: is a directory, not a GGUF file") from None
        except FileNotFoundError:
            raise ModelFileError(f"{self.name}: no such file") from None
        except OSError as exc:
            raise ModelFileError(f"{self.name}: cannot open: {exc.strerror or exc}") from None

    @property
    def size(self) -> int:
        return self._size

    def read_at(self, offset: int, size: int) -> bytes:
        try:
            self._file.seek(offset)
            parts: list[bytes] = []
            want = size
            # A raw read may stop short of the request without being at EOF; only b"" means EOF.
            while want > 0:
                data = self._file.read(want)
                if not data:
                    break
                parts.append(data)
                want -= len(data)
        except OSError as exc:
            raise ModelFileError(
                f"{self.name}: read failed at offset {offset}: {exc.strerror or exc}"
            ) from None
        return b"".join(parts)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> FileSource:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class BytesSource:
    """A ByteSource over bytes in memory (tests, or a header already downloaded)."""

    def __init__(self, data: bytes, name: str = "<bytes>") -> None:
        self.name = name
        self._data = bytes(data)

    @property
    def size(self) -> int:
        return len(self._data)

    def read_at(self, offset: int, size: int) -> bytes:
        return self._data[offset : offset + size]
