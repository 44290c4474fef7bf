"""A GGUF byte source over HTTP range requests: a remote header costs a request or three and a
few MiB, never the file. The token goes in an ``Authorization`` header added at send time, for the
Hub's own origin only."""

from __future__ import annotations

import re
import threading
from collections.abc import Generator
from urllib.parse import urlsplit

import httpx2
from huggingface_hub import get_session, hf_raise_for_status

from rigdeck.core.errors import HubError
from rigdeck.core.models.sources.hub_errors import hub_error
from rigdeck.core.models.sources.hub_values import Cancelled
from rigdeck.core.secrets import Secret

MiB = 1024 * 1024
DEFAULT_BLOCK_SIZE = 1 * MiB
# The first fetch takes two blocks: most model headers (metadata, vocabulary, tensor table) end
# within 2 MiB, so one request usually answers a whole header read.
DEFAULT_FIRST_FETCH = 2 * MiB
DEFAULT_MAX_FETCH = 16 * MiB


class _BearerAuth(httpx2.Auth):
    """Adds the token when the request is sent, so no frame of ours holds it in a local (a
    traceback that shows locals must not print it). httpx drops it on cross-origin redirects."""

    def __init__(self, token: Secret) -> None:
        self._token = token

    def __repr__(self) -> str:
        return "_BearerAuth(***)"

    def auth_flow(
        self, request: httpx2.Request
    ) -> Generator[httpx2.Request, httpx2.Response, None]:
        request.headers["Authorization"] = f"Bearer {self._token.reveal()}"
        yield request


def bearer_auth(token: Secret | None) -> _BearerAuth | None:
    return _BearerAuth(token) if token else None


class HttpRangeSource:
    """A `gguf.ByteSource` over HTTP range requests, with a block cache and transfer counters.

    Reads are served from aligned blocks (`block_size`). A miss fetches the missing blocks in one
    request, stretched to at least the current fetch size, which starts at `first_fetch` and
    doubles up to `max_fetch`; the GGUF reader's growing chunks therefore cost a few requests.
    `requests` and `bytes_fetched` say what the reads cost on the wire.

    The token, if any, is sent as ``Authorization`` and appears in no repr or message. A server
    that ignores ``Range`` is read only as far as needed, then the connection is dropped.
    """

    def __init__(
        self,
        url: str,
        *,
        name: str,
        size: int | None = None,
        token: Secret | None = None,
        block_size: int = DEFAULT_BLOCK_SIZE,
        first_fetch: int = DEFAULT_FIRST_FETCH,
        max_fetch: int = DEFAULT_MAX_FETCH,
        timeout: float = 30.0,
        cancel: threading.Event | None = None,
    ) -> None:
        if block_size <= 0:
            raise ValueError("block_size must be positive")
        self.name = name
        self._url = url
        self._size = size
        self._token = token
        self._block = block_size
        self._fetch_blocks = max(1, -(-first_fetch // block_size))
        self._max_blocks = max(self._fetch_blocks, max_fetch // block_size)
        self._timeout = timeout
        self._cancel = cancel
        self._blocks: dict[int, bytes] = {}
        self._eof_block: int | None = None  # index of the last block, once known
        self._requests = 0
        self._bytes = 0
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (
            f"HttpRangeSource(name={self.name!r}, size={self._size}, requests={self._requests}, "
            f"bytes_fetched={self._bytes})"
        )

    @property
    def size(self) -> int | None:
        return self._size

    @property
    def requests(self) -> int:
        """HTTP requests made so far."""
        return self._requests

    @property
    def bytes_fetched(self) -> int:
        """Body bytes received so far."""
        return self._bytes

    def read_at(self, offset: int, size: int) -> bytes:
        if offset < 0 or size < 0:
            raise ValueError("offset and size must not be negative")
        with self._lock:
            end = offset + size
            if self._size is not None:
                end = min(end, self._size)
            if end <= offset:
                return b""
            first, last = offset // self._block, (end - 1) // self._block
            if self._eof_block is not None:
                last = min(last, self._eof_block)
            missing = [i for i in range(first, last + 1) if i not in self._blocks]
            if missing:
                self._fetch(missing[0], missing[-1])
            out = bytearray()
            for index in range(first, last + 1):
                block = self._blocks.get(index)
                if block is None:
                    break  # past the end of the file
                out += block
                if len(block) < self._block:
                    break
            start = offset - first * self._block
            return bytes(out[start : start + (end - offset)])

    def _fetch(self, first: int, last: int) -> None:
        if self._cancel is not None and self._cancel.is_set():
            raise Cancelled(f"{self.name}: cancelled")
        last = max(last, first + self._fetch_blocks - 1)
        if self._size is not None:
            last = min(last, (self._size - 1) // self._block)
        self._fetch_blocks = min(self._fetch_blocks * 2, self._max_blocks)
        start, stop = first * self._block, (last + 1) * self._block  # stop is exclusive
        if self._size is not None:
            stop = min(stop, self._size)
        headers = {"Range": f"bytes={start}-{stop - 1}", "Accept-Encoding": "identity"}
        self._requests += 1
        try:
            with get_session().stream(
                "GET",
                self._url,
                headers=headers,
                auth=bearer_auth(self._token),
                timeout=http_timeout(self._timeout),
            ) as response:
                if response.status_code == 416:
                    # Asked past the end: the file is shorter than we thought.
                    total = _content_range_total(response.headers.get("Content-Range"))
                    if total is not None:
                        self._size = total
                    self._eof_block = max(first - 1, 0)
                    return
                hf_raise_for_status(response)
                start, data = self._read_body(response, start, stop)
        except HubError:
            raise
        except Exception as exc:  # every transport or HTTP failure becomes one HubError line
            raise hub_error(
                exc, what=self.name, token=self._token, endpoint=origin(self._url)
            ) from None
        first = start // self._block
        if len(data) < stop - start:
            self._eof_block = (start + len(data) - 1) // self._block if data else max(first - 1, 0)
            if self._size is None or self._size > start + len(data):
                self._size = start + len(data)
        for i in range(0, len(data), self._block):
            self._blocks[first + i // self._block] = data[i : i + self._block]

    def _read_body(self, response: httpx2.Response, start: int, stop: int) -> tuple[int, bytes]:
        """``(offset of the first byte, bytes up to stop)`` from a 206 or a 200 answer."""
        want = stop - start
        if response.status_code == 206:
            got_start = _content_range_start(response.headers.get("Content-Range"))
            if got_start is not None and got_start != start:
                raise HubError(
                    f"{self.name}: the server answered bytes from {got_start}, not {start}"
                )
            total = _content_range_total(response.headers.get("Content-Range"))
            if total is not None:
                self._size = total
        else:
            # 200: the server ignored Range and sends the file from byte 0. Read only up to
            # `stop` and hang up instead of downloading gigabytes; keep it all, it was paid for.
            length = response.headers.get("Content-Length")
            if self._size is None and length is not None and length.isdigit():
                self._size = int(length)
            start, want = 0, stop
        buf = bytearray()
        for chunk in response.iter_bytes(chunk_size=64 * 1024):
            self._bytes += len(chunk)
            buf += chunk
            if len(buf) >= want:
                break
        return start, bytes(buf[:want])


def _content_range_total(value: str | None) -> int | None:
    if value and "/" in value:
        total = value.rsplit("/", 1)[1].strip()
        if total.isdigit():
            return int(total)
    return None


def _content_range_start(value: str | None) -> int | None:
    match = re.match(r"bytes\s+(\d+)-\d+/", value or "")
    return int(match[1]) if match else None


def http_timeout(seconds: float) -> httpx2.Timeout:
    # Connect fast or fail; a slow body is fine as long as bytes keep arriving.
    return httpx2.Timeout(seconds, connect=min(seconds, 10.0))


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def same_origin(url: str, other: str) -> bool:
    a, b = urlsplit(url), urlsplit(other)
    ports = {"http": 80, "https": 443}
    return (a.scheme, a.hostname, a.port or ports.get(a.scheme)) == (
        b.scheme,
        b.hostname,
        b.port or ports.get(b.scheme),
    )
