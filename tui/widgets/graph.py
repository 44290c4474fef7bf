"""One-line history graphs drawn from block characters, newest sample on the right.

They draw what Textual's Sparkline draws (the samples spread over the width, each bar the max of
its bucket, scaled from the series' min to its max) but from eight pre-resolved styles, one per
bar height, and one segment per run of equal bars: the Sparkline renderable resolves a colour
per bar every frame, which made the graphs the costliest part of a tick.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.segment import Segment
from rich.style import Style
from textual.color import Color

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


def level_styles(low: Color, high: Color, background: Color) -> tuple[Style, ...]:
    """One style per bar height, blended from the low colour to the high one."""
    top = len(BARS) - 1
    return tuple(
        Style(color=low.blend(high, level / top).rich_color, bgcolor=background.rich_color)
        for level in range(len(BARS))
    )


def graph_segments(data: Sequence[float], width: int, styles: Sequence[Style]) -> list[Segment]:
    levels = bar_levels(data, width)
    segments = []
    run_start = 0
    for i in range(1, width + 1):
        # One segment per run of equal bars: a flat graph is a single segment.
        if i == width or levels[i] != levels[run_start]:
            level = levels[run_start]
            segments.append(Segment(BARS[level] * (i - run_start), styles[level]))
            run_start = i
    return segments
