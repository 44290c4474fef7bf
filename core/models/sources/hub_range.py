"""A GGUF byte source over HTTP range requests: a remote header costs a request or three and a
few MiB, never the file. The token goes in an ``Authorization`` header added at send time, for the
Hub's own origin only."""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Generator, Iterator
from typing import Any
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
# A streamed read holds at most this much unread in the socket, so closing the stream once the
# parser is done wastes about this much of the wire (the server's send side adds its own).
STREAM_RECEIVE_BUFFER = 128 * 1024
_STREAM_CHUNK = 32 * 1024


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
        stream: bool = True,
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
        # Streaming: one open-ended response read as far as the reader asks, then closed.
        self._streaming = stream
        self._stream_cm: Any = None
        self._stream_iter: Iterator[bytes] | None = None
        self._stream_start = 0
        self._stream_buf = bytearray()
        self._stream_eof = False
        self._stream_sock: Any = None
        self._unread = 0
        self._ranges_honoured = True

    def __repr__(self) -> str:
        return (
            f"HttpRangeSource(name={self.name!r}, size={self._size}, requests={self._requests}, "
            f"bytes_fetched={self._bytes})"
        )

    @property
    def size(self) -> int | None:
        return self._size

    @property
    def read_step(self) -> int | None:
        """Streaming: the reader should ask in steps this small (see gguf_parser._Reader)."""
        return _STREAM_CHUNK * 2 if self._streaming else None

    @property
    def requests(self) -> int:
        """HTTP requests made so far."""
        return self._requests

    @property
    def bytes_fetched(self) -> int:
        """Body bytes read so far."""
        return self._bytes

    @property
    def bytes_received(self) -> int:
        """Bytes that reached this machine: those read, and those a closed stream left unread in
        the socket (at most about STREAM_RECEIVE_BUFFER)."""
        return self._bytes + self._unread

    def read_at(self, offset: int, size: int) -> bytes:
        if offset < 0 or size < 0:
            raise ValueError("offset and size must not be negative")
        if self._streaming:
            with self._lock:
                return self._read_streamed(offset, size)
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

    # -- streaming ------------------------------------------------------------------------------

    def _read_streamed(self, offset: int, size: int) -> bytes:
        """A header read is one pass from the start: one response, read only as far as asked.

        A reader that jumps back before the stream, or far past it, gets a new stream there.
        """
        end = offset + size
        if self._size is not None:
            end = min(end, self._size)
        if end <= offset:
            return b""
        have_end = self._stream_start + len(self._stream_buf)
        open_here = self._stream_iter is not None or self._stream_eof
        cached = self._stream_start <= offset and end <= have_end
        # Far ahead: a new range skips the gap, unless the server ignores ranges (then a new
        # answer would start from byte 0 again, and reading on costs less).
        ahead = offset > have_end + self._block and self._ranges_honoured
        jumped = offset < self._stream_start or ahead
        if not cached and (not open_here or jumped):
            self._open_stream(offset)
        while self._stream_start + len(self._stream_buf) < end and not self._stream_eof:
            self._pull()
        lo = offset - self._stream_start
        return bytes(self._stream_buf[lo : lo + (end - offset)])

    def _open_stream(self, offset: int) -> None:
        if self._cancel is not None and self._cancel.is_set():
            raise Cancelled(f"{self.name}: cancelled")
        self.close()
        self._stream_start, self._stream_buf, self._stream_eof = offset, bytearray(), False
        headers = {"Range": f"bytes={offset}-", "Accept-Encoding": "identity"}
        self._requests += 1
        try:
            cm = get_session().stream(
                "GET",
                self._url,
                headers=headers,
                auth=bearer_auth(self._token),
                timeout=http_timeout(self._timeout),
            )
            response = cm.__enter__()
            self._stream_cm = cm
            if response.status_code == 416:
                total = _content_range_total(response.headers.get("Content-Range"))
                if total is not None:
                    self._size = total
                self._stream_eof = True
                self.close()
                return
            hf_raise_for_status(response)
            self._stream_sock = _shrink_receive_buffer(response)
            skip = 0
            if response.status_code == 206:
                got = _content_range_start(response.headers.get("Content-Range"))
                if got is not None and got != offset:
                    raise HubError(
                        f"{self.name}: the server answered bytes from {got}, not {offset}"
                    )
                total = _content_range_total(response.headers.get("Content-Range"))
                if total is not None:
                    self._size = total
            else:
                # 200: the server ignored Range and sends from byte 0; walk to the offset.
                self._ranges_honoured = False
                length = response.headers.get("Content-Length")
                if self._size is None and length is not None and length.isdigit():
                    self._size = int(length)
                skip = offset
            self._stream_iter = response.iter_bytes(chunk_size=_STREAM_CHUNK)
            while skip > 0 and not self._stream_eof:
                chunk = self._next_chunk()
                if len(chunk) > skip:
                    self._stream_buf += chunk[skip:]
                skip = max(skip - len(chunk), 0)
        except HubError:
            self.close()
            raise
        except Exception as exc:  # every transport or HTTP failure becomes one HubError line
            self.close()
            raise hub_error(
                exc, what=self.name, token=self._token, endpoint=origin(self._url)
            ) from None

    def _next_chunk(self) -> bytes:
        assert self._stream_iter is not None
        try:
            chunk = next(self._stream_iter)
        except StopIteration:
            chunk = b""
        if not chunk:
            self._stream_eof = True
            end = self._stream_start + len(self._stream_buf)
            if self._size is None or self._size > end:
                self._size = end
            self.close()
            return b""
        self._bytes += len(chunk)
        return chunk

    def _pull(self) -> None:
        if self._cancel is not None and self._cancel.is_set():
            self.close()
            raise Cancelled(f"{self.name}: cancelled")
        try:
            self._stream_buf += self._next_chunk()
        except HubError:
            self.close()
            raise
        except Exception as exc:
            self.close()
            raise hub_error(
                exc, what=self.name, token=self._token, endpoint=origin(self._url)
            ) from None

    def close(self) -> None:
        """Hang up a stream still open (the reader is done); reads already made stay cached."""
        cm, self._stream_cm, self._stream_iter = self._stream_cm, None, None
        sock, self._stream_sock = self._stream_sock, None
        if sock is not None and not self._stream_eof:
            self._unread += _unread_bytes(sock)
        if cm is not None:
            try:
                cm.__exit__(None, None, None)
            except Exception:  # a connection already gone is what closing wanted anyway
                pass

    def __del__(self) -> None:
        # A reader that never said it was done still must not hold a connection open.
        with contextlib.suppress(Exception):
            self.close()

    def __enter__(self) -> HttpRangeSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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


def _shrink_receive_buffer(response: httpx2.Response) -> Any:
    """Keep little unread data in the socket: what is there when the stream closes is waste.

    Returns the socket (None where the transport does not show it)."""
    import socket

    stream = response.extensions.get("network_stream")
    sock = stream.get_extra_info("socket") if stream is not None else None
    if not isinstance(sock, socket.socket):
        return None
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, STREAM_RECEIVE_BUFFER)
    return sock


def _unread_bytes(sock: Any) -> int:
    """Bytes waiting in a socket's receive queue (Linux, macOS); 0 where it cannot tell."""
    try:
        import array
        import fcntl
        import termios

        buf = array.array("i", [0])
        fcntl.ioctl(sock.fileno(), termios.FIONREAD, buf)
        return max(int(buf[0]), 0)
    except (ImportError, OSError, ValueError):
        return 0


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
