"""The selected job's log beside its loss chart, with an indicator row (k9s style).

Lines arrive from a reader thread into a queue; a flush timer moves them to the screen in
batches and redraws the chart only when new points came, so a fast log costs a few redraws a
second, not one per line. The indicator always says whether the stream is live, reconnecting or
ended: never a silent freeze. Search filters the view to the lines holding the text.
"""

from __future__ import annotations

import threading
from collections import deque

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.widgets import Input, RichLog, Static

from rigdeck.core.cloud.jobs.follow import StreamState
from rigdeck.core.cloud.jobs.logs import LogTail
from rigdeck.core.cloud.jobs.metrics import MetricParser, MetricSeries

FLUSH_S = 0.1
MAX_LINES = 5000

STATE_WORDS: dict[str, str] = {
    "idle": "no job selected",
    "connecting": "connecting…",
    "streaming": "● streaming",
    "reconnecting": "◌ reconnecting…",
    "ended": "■ stream ended",
}


class JobLogView(Vertical):
    DEFAULT_CSS = """
    JobLogView { height: 1fr; }
    JobLogView #job-log-status { height: 1; color: $text-muted; padding: 0 1; }
    JobLogView #job-log-status.-reconnecting { color: $warning; }
    JobLogView #job-log-status.-ended { color: $text; }
    JobLogView #job-log-search { height: 1; display: none; }
    JobLogView #job-log-search.-shown { display: block; }
    JobLogView #job-log-body { height: 1fr; }
    JobLogView #job-log-lines { width: 2fr; height: 1fr; }
    JobLogView #job-log-chart { width: 1fr; min-width: 24; height: 1fr; }
    """

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._queue: deque[list[str]] = deque()
        self._feed_lock = threading.Lock()
        self.tail = LogTail(MAX_LINES)
        self.parser = MetricParser()
        self.series = MetricSeries()
        self.follow = True
        self.wrap = False
        self.search = ""
        self.stream_state = "idle"
        self.stream_reason = ""
        self.job_label = ""
        self.flushes = 0
        """Batches drawn (tests check lines are drawn in batches, not one by one)."""
        self._points_seen = 0

    def compose(self) -> ComposeResult:
        yield Static("", id="job-log-status")
        yield Input(placeholder="search the log (enter filters, escape clears)",
                    id="job-log-search", compact=True)  # fmt: skip
        with Horizontal(id="job-log-body"):
            yield RichLog(id="job-log-lines", max_lines=MAX_LINES, wrap=False, markup=False,
                          highlight=False, auto_scroll=True)  # fmt: skip
            from rigdeck.tui.widgets.loss_chart import LossChart

            yield LossChart(id="job-log-chart")

    def on_mount(self) -> None:
        self.set_interval(FLUSH_S, self.flush)
        self._show_status()

    # -- fed from the reader thread -----------------------------------------------------------
    def feed(self, lines: list[str]) -> None:
        """Thread-safe: queue lines for the next flush."""
        if lines:
            with self._feed_lock:
                self._queue.append(lines)

    # -- on the event loop ----------------------------------------------------------------------
    def start(self, label: str) -> None:
        """A new job: empty view, empty chart."""
        with self._feed_lock:
            self._queue.clear()
        self.job_label = label
        self.tail = LogTail(MAX_LINES)
        self.parser = MetricParser()
        self.series = MetricSeries()
        self._points_seen = 0
        self.query_one("#job-log-lines", RichLog).clear()
        from rigdeck.tui.widgets.loss_chart import LossChart

        self.query_one(LossChart).clear_points()
        self.set_stream_state("connecting", "")

    def set_stream_state(self, state: StreamState | str, why: str) -> None:
        self.flush()  # what came before the change is drawn before the change is told
        self.stream_state = state
        self.stream_reason = why
        self._show_status()

    def flush(self) -> None:
        with self._feed_lock:
            batches = list(self._queue)
            self._queue.clear()
        if not batches:
            return
        lines = [line for batch in batches for line in batch]
        self.tail.extend(lines)
        self.series.extend(self.parser.parse_all(lines))
        log = self.query_one("#job-log-lines", RichLog)
        for line in lines:
            if not self.search or self.search.lower() in line.lower():
                log.write(self._text(line), scroll_end=self.follow)
        self.flushes += 1
        self._update_chart()
        self._show_status()

    def _update_chart(self) -> None:
        if len(self.series) == self._points_seen:
            return
        self._points_seen = len(self.series)
        names = self.series.names()
        metric = "loss" if "loss" in names else (names[0] if names else "loss")
        from rigdeck.tui.widgets.loss_chart import LossChart

        self.query_one(LossChart).set_points(metric, self.series.finite(metric))

    def _text(self, line: str) -> Text:
        text = Text(line)
        if self.search:
            text.highlight_words([self.search], style="reverse", case_sensitive=False)
        return text

    def _redraw(self) -> None:
        log = self.query_one("#job-log-lines", RichLog)
        log.clear()
        log.wrap = self.wrap
        log.auto_scroll = self.follow
        for line in self.tail:
            if not self.search or self.search.lower() in line.lower():
                log.write(self._text(line), scroll_end=self.follow)
        self._show_status()

    def matches(self) -> int:
        needle = self.search.lower()
        return sum(1 for line in self.tail if needle in line.lower()) if needle else 0

    def visible_lines(self) -> list[str]:
        """The lines the view shows now (after the search filter)."""
        needle = self.search.lower()
        return [line for line in self.tail if not needle or needle in line.lower()]

    def _show_status(self) -> None:
        status = self.query_one("#job-log-status", Static)
        state = STATE_WORDS.get(self.stream_state, self.stream_state)
        reason = f": {self.stream_reason}" if self.stream_reason else ""
        parts = [self.job_label or "job", f"{state}{reason}"]
        parts.append("follow on" if self.follow else "follow off (f)")
        parts.append("wrap on" if self.wrap else "wrap off")
        if self.search:
            parts.append(f"search {self.search!r}: {self.matches()} lines")
        dropped = self.tail.dropped
        parts.append(f"{self.tail.total} lines" + (f" ({dropped} scrolled out)" if dropped else ""))
        status.update(Content(" · ".join(parts)))
        status.set_class(self.stream_state == "reconnecting", "-reconnecting")
        status.set_class(self.stream_state == "ended", "-ended")

    # -- toggles --------------------------------------------------------------------------------
    def toggle_follow(self) -> None:
        self.follow = not self.follow
        log = self.query_one("#job-log-lines", RichLog)
        log.auto_scroll = self.follow
        if self.follow:
            log.scroll_end(animate=False)
        self._show_status()

    def toggle_wrap(self) -> None:
        self.wrap = not self.wrap
        self._redraw()

    def open_search(self) -> None:
        field = self.query_one("#job-log-search", Input)
        field.add_class("-shown")
        field.value = self.search
        field.focus()

    def set_search(self, text: str) -> None:
        self.search = text.strip()
        field = self.query_one("#job-log-search", Input)
        field.set_class(bool(self.search), "-shown")
        self._redraw()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "job-log-search":
            event.stop()
            self.set_search(event.value)
            self.query_one("#job-log-lines", RichLog).focus()

    def on_key(self, event: events.Key) -> None:
        field = self.query_one("#job-log-search", Input)
        if event.key == "escape" and (field.has_focus or self.search):
            event.stop()
            self.set_search("")
            self.query_one("#job-log-lines", RichLog).focus()
