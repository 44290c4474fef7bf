"""A one-line history graph drawn from block characters, newest sample on the right.

It draws what Textual's Sparkline draws (the samples spread over the width, each bar the max of
its bucket, scaled from the series' min to its max) but builds the line straight from a few
pre-resolved styles and keeps it until the data or width changes: the Sparkline renderable
resolves a colour per bar every frame, which made the graphs the costliest part of a tick.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from rich.segment import Segment
from rich.style import Style
from textual.strip import Strip
from textual.widget import Widget

BARS = "▁▂▃▄▅▆▇█"


def bucket_maxima(data: Sequence[float], width: int) -> list[float]:
    """``width`` values: the series stretched (or squeezed, keeping each bucket's max)."""
    n = len(data)
    out = []
    for i in range(width):
        start = n * i // width
        end = max(n * (i + 1) // width, start + 1)
        out.append(max(data[start:end]))
    return out


def bar_levels(data: Sequence[float], width: int) -> list[int]:
    """A level 0..7 (the bar height) per column; empty data is all 0, one sample all 7."""
    if not data or width <= 0:
        return [0] * max(width, 0)
    if len(data) == 1:
        return [len(BARS) - 1] * width
    low, high = min(data), max(data)
    extent = high - low or 1.0
    top = len(BARS) - 1
    return [min(int((v - low) / extent * top), top) for v in bucket_maxima(data, width)]


class Graph(Widget):
    """A history graph. ``set_data`` redraws only when the series or the width changed."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {"graph--min-color", "graph--max-color"}

    DEFAULT_CSS = """
    Graph { height: 1; }
    Graph > .graph--max-color { color: $primary; }
    Graph > .graph--min-color { color: $primary 30%; }
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self._data: tuple[float, ...] = ()
        self._line: Strip | None = None
        self._line_width = -1
        self._level_styles: tuple[Style, ...] | None = None

    @property
    def data(self) -> tuple[float, ...]:
        return self._data

    def set_data(self, data: Sequence[float]) -> None:
        data = tuple(data)
        if data == self._data:
            return
        self._data = data
        self._line = None
        self.refresh()

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._level_styles = None
        self._line = None

    def _styles(self) -> tuple[Style, ...]:
        """One style per bar level, blended from the min colour to the max colour."""
        if self._level_styles is None:
            _, base = self.background_colors
            low = base + self.get_component_styles("graph--min-color").color
            high = base + self.get_component_styles("graph--max-color").color
            top = len(BARS) - 1
            self._level_styles = tuple(
                Style(color=low.blend(high, level / top).rich_color, bgcolor=base.rich_color)
                for level in range(len(BARS))
            )
        return self._level_styles

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        if self._line is None or self._line_width != width:
            self._line = self._draw(width)
            self._line_width = width
        if y == 0:
            return self._line
        return Strip.blank(width)

    def _draw(self, width: int) -> Strip:
        styles = self._styles()
        levels = bar_levels(self._data, width)
        segments = []
        run_start = 0
        for i in range(1, width + 1):
            # One segment per run of equal bars: a flat graph is a single segment.
            if i == width or levels[i] != levels[run_start]:
                level = levels[run_start]
                segments.append(Segment(BARS[level] * (i - run_start), styles[level]))
                run_start = i
        return Strip(segments, width)
