"""A metric's curve with steps on the x-axis, drawn by plotext into text a Static shows.

plotext keeps one figure per process, so drawing takes a lock; the text is plain (its colours
stripped) and the widget colours it from the theme. Redraws happen when points or the size
change, never per log line.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from textual.content import Content
from textual.widgets import Static

_PLOT_LOCK = threading.Lock()
MAX_DRAWN = 400
"""Points given to plotext at most (a braille cell holds two columns of dots)."""


def thin(points: Sequence[tuple[int, float]], limit: int = MAX_DRAWN) -> list[tuple[int, float]]:
    """Every n-th point and the last one: the curve's shape, at a bounded drawing cost."""
    if len(points) <= limit:
        return list(points)
    step = len(points) / (limit - 1)
    kept = [points[int(i * step)] for i in range(limit - 1)]
    return [*kept, points[-1]]


def chart_text(points: Sequence[tuple[int, float]], name: str, width: int, height: int) -> str:
    """The chart as plain text, ``width`` x ``height`` cells."""
    if width < 12 or height < 5:
        return ""
    if not points:
        return f"{name}: no points yet"
    import plotext

    drawn = thin(points)
    xs = [float(s) for s, _ in drawn]
    ys = [v for _, v in drawn]
    with _PLOT_LOCK:
        figure = plotext.figure
        figure.clear()
        figure.plot_size(width, height)
        figure.draw(figure.signal(xs, ys, marker="braille"))
        figure.label("step", axis=0)
        figure.title(f"{name} {ys[-1]:.4g} @ step {drawn[-1][0]}")
        text = str(figure.build())
    return str(plotext.uncolorize(text))


class LossChart(Static):
    DEFAULT_CSS = """
    LossChart { width: 1fr; height: 1fr; color: $accent; }
    """

    def __init__(self, **kwargs: object) -> None:
        super().__init__("", **kwargs)  # type: ignore[arg-type]
        self.metric = "loss"
        self.points: list[tuple[int, float]] = []
        self.draws = 0
        """How many times the chart was drawn (tests check redraws are batched)."""

    def set_points(self, metric: str, points: Sequence[tuple[int, float]]) -> None:
        if metric == self.metric and list(points) == self.points:
            return
        self.metric = metric
        self.points = list(points)
        self._draw()

    def clear_points(self) -> None:
        self.points = []
        self._draw()

    def on_resize(self) -> None:
        self._draw()

    def _draw(self) -> None:
        width, height = self.content_size.width, self.content_size.height
        self.draws += 1
        self.update(Content(chart_text(self.points, self.metric, width, height)))
