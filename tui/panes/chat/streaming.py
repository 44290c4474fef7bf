"""A reply on its way to the screen: the worker hands pieces over, the event loop draws them.

The reply's worker thread only appends text pieces to a locked buffer; a timer on the event loop
drains it 10 times a second (5 when generation has every core) into the Markdown stream, so a
fast model costs one re-render per frame, not per token. While a reply streams, the GIL switch
interval is shortened so the generating thread does not wait behind a frame for every token.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from textual.message import Message
from textual.widgets import Markdown
from textual.widgets.markdown import MarkdownStream

from rigdeck.core.errors import RigdeckError
from rigdeck.core.models.run.chat_runner import ReplyStream
from rigdeck.core.models.run.plan import GenerationStats
from rigdeck.tui.panes.chat.status import streaming_line
from rigdeck.tui.widgets.chat_message import ChatMessageView

DRAIN_INTERVAL_S = 1 / 10
# When generation's threads take every core, each frame drawn is time taken from generation (its
# threads wait for one another at every step). Measured on 2 cores with the demo model: drawing
# 10 times a second cost the reply ~12% of bare llama.cpp's speed, 5 times a second ~7%.
BUSY_DRAIN_INTERVAL_S = 1 / 5
# At the default 5 ms, each token can wait behind a frame; restored when the reply ends.
STREAM_SWITCH_INTERVAL_S = 0.0002


def drain_interval(generation_threads: int | None, logical_cores: int | None) -> float:
    """How often a streaming reply is drawn: less often when generation leaves no core spare.

    ``generation_threads`` None is llama-cpp-python's own default, half the logical cores.
    """
    if generation_threads is None or logical_cores is None:
        return DRAIN_INTERVAL_S
    return BUSY_DRAIN_INTERVAL_S if generation_threads >= logical_cores else DRAIN_INTERVAL_S


def one_line(exc: BaseException) -> str:
    """An exception as the one line the pane shows (a RigdeckError's message is already one)."""
    if isinstance(exc, RigdeckError):
        return str(exc)
    return " ".join(f"{type(exc).__name__}: {exc}".split())


@dataclass(frozen=True)
class Reply:
    """How a reply ended: its stats (None when it never started) or the error that ended it."""

    stats: GenerationStats | None
    error: str | None


class ReplyDone(Message, bubble=False):
    def __init__(self, reply: Reply) -> None:
        super().__init__()
        self.reply = reply


class PieceBuffer:
    """Text pieces from the reply's thread, waiting for the next drain."""

    def __init__(self) -> None:
        self._pieces: list[str] = []
        self._lock = threading.Lock()

    def append(self, piece: str) -> None:
        with self._lock:
            self._pieces.append(piece)

    def take(self) -> str:
        with self._lock:
            text = "".join(self._pieces)
            self._pieces.clear()
        return text


class ReplyStreamer:
    """One reply at a time: the stream being generated, its buffer, its live rate."""

    def __init__(self) -> None:
        self.buffer = PieceBuffer()
        self.current: ReplyStream | None = None
        self._stop_requested = threading.Event()
        self._markdown: MarkdownStream | None = None
        self._first_token: tuple[float, int] | None = None
        self._switch_interval = sys.getswitchinterval()

    def begin(self, view: ChatMessageView) -> None:
        """Get ready to stream into ``view`` (an empty assistant message)."""
        self._markdown = Markdown.get_stream(view)
        self.current = None
        self._first_token = None
        self._stop_requested.clear()
        self.buffer.take()
        self._switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(STREAM_SWITCH_INTERVAL_S)

    def run(self, start: Callable[[], ReplyStream], cancelled: Callable[[], bool]) -> Reply:
        """The worker's side (blocking): start the reply and hand its pieces over."""
        stream: ReplyStream | None = None
        try:
            stream = start()
            self.current = stream
            if self._stop_requested.is_set():
                stream.cancel()
            append = self.buffer.append
            for piece in stream:
                append(piece)
                if cancelled():
                    stream.cancel()
        except Exception as exc:  # always report back, or the pane would wait for it forever
            return Reply(stream.stats if stream else None, one_line(exc))
        return Reply(stream.stats, None)

    def stop(self) -> None:
        """Stop the reply within one token (also when it has not started yet)."""
        self._stop_requested.set()
        if self.current is not None:
            self.current.cancel()

    async def drain(self) -> str | None:
        """Draw what arrived; the live line ("generating… 40 tokens, 75.2 tok/s") once the
        first token is in, else None."""
        text = self.buffer.take()
        if text and self._markdown is not None:
            await self._markdown.write(text)
        current = self.current
        if current is None or self._markdown is None:
            return None
        count = current.decode_tokens
        if not count:
            return None
        now = time.monotonic()
        if self._first_token is None:
            self._first_token = (now, count)
        first_at, first_count = self._first_token
        rate = (count - first_count) / (now - first_at) if now > first_at else None
        return streaming_line(count, rate)

    async def finish(self) -> None:
        """The reply ended: restore the switch interval, draw the rest, close the stream."""
        sys.setswitchinterval(self._switch_interval)
        await self.drain()
        if self._markdown is not None:
            await self._markdown.stop()
        self._markdown = None
        self.current = None
