"""A job's log as lines a screen can show: read by byte offset, normalised, bounded.

Bytes arrive in whatever pieces a connection delivers. `LogNormaliser` turns them into the same
lines whatever the pieces: UTF-8 decoded incrementally (a character split across reads comes out
whole), ``\\r\\n`` split across reads is one line end, a bare ``\\r`` (tqdm redrawing its bar) keeps
only the text after it, ANSI escapes are dropped, and a line is cut at ``max_line_chars``.
It holds at most one partial line, so memory stays bounded however long the log.

`LogStream` adds the offsets: ``offset`` is the next byte to ask for (a dropped link continues
there, nothing lost or doubled); ``resume_offset`` is the byte after the last complete line,
the point a fresh reader (after rigdeck itself restarted) starts from to rebuild the same lines.
"""

from __future__ import annotations

import codecs
import re
from collections import deque
from collections.abc import Iterable, Iterator

TRUNCATED = "…"
"""Appended to a line cut at the length cap."""

# Characters that need a decision; everything between them is copied as is. Tab stays text.
_SPECIAL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")

_TEXT, _ESC, _ESC_INTER, _CSI, _STRING, _STRING_ESC = range(6)
_MAX_CSI = 64
_MAX_STRING = 4096


class LogNormaliser:
    """Bytes in, complete clean lines out; `partial` is the line still being written."""

    def __init__(self, *, max_line_chars: int = 4096) -> None:
        if max_line_chars < 1:
            raise ValueError("max_line_chars must be at least 1")
        self.max_line_chars = max_line_chars
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._parts: list[str] = []
        self._len = 0
        self._truncated = False
        self._pending_cr = False
        self._state = _TEXT
        self._esc_len = 0

    @property
    def partial(self) -> str:
        """The current line so far (its last frame, for a progress bar)."""
        return "".join(self._parts) + (TRUNCATED if self._truncated else "")

    def feed(self, data: bytes) -> list[str]:
        """Complete lines in ``data`` (with what came before); never the partial one."""
        out: list[str] = []
        self._feed_text(self._decoder.decode(data), out)
        return out

    def flush(self) -> list[str]:
        """At the end of the log: the partial line as a last line, if it has any text."""
        out: list[str] = []
        self._feed_text(self._decoder.decode(b"", final=True), out)
        if self._parts or self._truncated:
            out.append(self.partial)
        self._clear()
        self._pending_cr = False
        self._state = _TEXT
        return out

    def _clear(self) -> None:
        self._parts = []
        self._len = 0
        self._truncated = False

    def _append(self, text: str) -> None:
        room = self.max_line_chars - self._len
        if len(text) > room:
            text = text[: max(room, 0)]
            self._truncated = True
        if text:
            self._parts.append(text)
            self._len += len(text)

    def _end_line(self, out: list[str]) -> None:
        out.append(self.partial)
        self._clear()

    def _feed_text(self, text: str, out: list[str]) -> None:
        i, n = 0, len(text)
        while i < n:
            if self._state != _TEXT:
                i = self._escape(text, i, out)
                continue
            ch = text[i]
            if self._pending_cr:
                if ch == "\r":
                    i += 1
                    continue
                self._pending_cr = False
                if ch != "\n":
                    self._clear()  # a bare \r: the next frame replaces this one
            match = _SPECIAL.search(text, i)
            end = match.start() if match else n
            if end > i:
                self._append(text[i:end])
                i = end
            if match is None:
                break
            ch = text[i]
            i += 1
            if ch == "\n":
                self._end_line(out)
            elif ch == "\r":
                self._pending_cr = True
            elif ch == "\x1b":
                self._state, self._esc_len = _ESC, 0
            elif ch == "\x9b":
                self._state, self._esc_len = _CSI, 0
            # Other control characters (bell, backspace, C1) carry nothing a log view can show.

    def _escape(self, text: str, i: int, out: list[str]) -> int:
        """Consume escape-sequence characters from ``text[i]``; the index to go on from."""
        ch = text[i]
        code = ord(ch)
        if ch == "\n":
            # A line end inside an escape means the escape was broken: never swallow lines.
            self._state = _TEXT
            return i
        self._esc_len += 1
        state = self._state
        if state == _ESC:
            if ch == "[":
                self._state = _CSI
            elif ch in "]P_^X":
                self._state = _STRING
            elif 0x20 <= code <= 0x2F:
                self._state = _ESC_INTER
            elif 0x30 <= code <= 0x7E:
                self._state = _TEXT
            else:
                self._state = _TEXT
                return i  # not an escape after all: let the text path see this character
        elif state in (_CSI, _ESC_INTER):
            if 0x40 <= code <= 0x7E or (state == _ESC_INTER and 0x30 <= code <= 0x3F):
                self._state = _TEXT
            elif not 0x20 <= code <= 0x3F:
                self._state = _TEXT
                return i
            elif self._esc_len > _MAX_CSI:
                self._state = _TEXT
        elif state == _STRING:
            if ch in "\x07\x9c":
                self._state = _TEXT
            elif ch == "\x1b":
                self._state = _STRING_ESC
            elif self._esc_len > _MAX_STRING:
                self._state = _TEXT
        elif state == _STRING_ESC:
            if ch == "\\":
                self._state = _TEXT
            else:
                self._state, self._esc_len = _ESC, 0
                return i
        return i + 1


class LogStream:
    """Offset bookkeeping around a `LogNormaliser`, for a log read piece by piece.

    Ask for bytes from ``offset``; feed what came back. Persist ``resume_offset``: a new
    stream started there rebuilds exactly the lines that follow the ones already shown.
    """

    def __init__(self, start: int = 0, *, max_line_chars: int = 4096) -> None:
        if start < 0:
            raise ValueError("start must be >= 0")
        self.max_line_chars = max_line_chars
        self.offset = start
        self.resume_offset = start
        self._norm = LogNormaliser(max_line_chars=max_line_chars)

    @property
    def partial(self) -> str:
        return self._norm.partial

    def feed(self, data: bytes) -> list[str]:
        """Lines completed by ``data``, the bytes that followed ``offset``."""
        last_nl = data.rfind(b"\n")
        # Every 0x0A byte is a line end: UTF-8 never uses it inside a character, and the
        # normaliser ends any escape at it, so the state after it is a fresh stream's.
        if last_nl >= 0:
            self.resume_offset = self.offset + last_nl + 1
        self.offset += len(data)
        return self._norm.feed(data)

    def finish(self) -> list[str]:
        """The log is complete: its unterminated last line, if any."""
        self.resume_offset = self.offset
        return self._norm.flush()

    def restart(self, start: int = 0) -> None:
        """Start over at ``start`` (the log was replaced or truncated)."""
        self.offset = self.resume_offset = start
        self._norm = LogNormaliser(max_line_chars=self.max_line_chars)

    def check_size(self, size: int) -> bool:
        """Given the log's current size: True (and a restart at 0) when it shrank below us."""
        if size < self.offset:
            self.restart(0)
            return True
        return False


class LogTail:
    """The last ``max_lines`` lines, for a view: memory bounded however long the job runs."""

    def __init__(self, max_lines: int = 5000) -> None:
        self._lines: deque[str] = deque(maxlen=max_lines)
        self.total = 0
        """Lines ever added (the view shows how many scrolled out)."""

    def extend(self, lines: Iterable[str]) -> None:
        for line in lines:
            self._lines.append(line)
            self.total += 1

    @property
    def dropped(self) -> int:
        return self.total - len(self._lines)

    def __len__(self) -> int:
        return len(self._lines)

    def __iter__(self) -> Iterator[str]:
        return iter(self._lines)

    def last(self, n: int) -> list[str]:
        return list(self._lines)[-n:] if n > 0 else []


# The metric parser reads the lines this module produces; one import for both.
from rigdeck.core.cloud.jobs.metrics import MetricParser, MetricPoint, MetricSeries  # noqa: E402

__all__ = [
    "TRUNCATED",
    "LogNormaliser",
    "LogStream",
    "LogTail",
    "MetricParser",
    "MetricPoint",
    "MetricSeries",
]
