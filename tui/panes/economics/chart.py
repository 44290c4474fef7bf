"""Spend over this month as a text bar chart: one column pair per UTC day, eighth-block tops.

Drawn here rather than through a plotting library so the chart is plain text, the same on every
terminal and in snapshots, and sized exactly to the cells it is given.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from textual.content import Content
from textual.widgets import Static

EIGHTHS = " ▁▂▃▄▅▆▇█"


def spend_chart(days: Sequence[tuple[date, float]], *, width: int, height: int, label: str) -> str:
    """Bars of ``days`` in ``width`` x ``height`` cells (axis labels included)."""
    if height < 3 or width < 12:
        return ""
    if not days or max(v for _, v in days) <= 0:
        return f"{label}: no cloud spend this month yet"
    top = max(v for _, v in days)
    axis = f"${top:,.2f}"
    pad = len(axis) + 1
    room = max(width - pad, 1)
    bar_w = max(1, min(3, room // max(len(days), 1)))
    shown = list(days)[-(room // bar_w) :]
    rows = height - 2  # the title and the day labels
    cells = rows * 8
    lines = [label]
    for row in range(rows, 0, -1):
        left = axis if row == rows else ("$0" if row == 1 else "")
        chars = []
        for _, value in shown:
            filled = round(value / top * cells) if top else 0
            level = min(max(filled - (row - 1) * 8, 0), 8)
            if value > 0 and filled == 0 and row == 1:
                level = 1  # a day with any spend shows as more than nothing
            chars.append(EIGHTHS[level] * bar_w)
        lines.append(left.rjust(pad - 1) + " " + "".join(chars).rstrip())
    marks = [" "] * (len(shown) * bar_w)
    for i, (day, _) in enumerate(shown):
        if day.day == 1 or day.day % 5 == 0:
            text = str(day.day)
            at = i * bar_w
            if all(c == " " for c in marks[at : at + len(text)]) and at + len(text) <= len(marks):
                marks[at : at + len(text)] = list(text)
    lines.append(" " * pad + "".join(marks).rstrip())
    return "\n".join(lines)


class SpendChart(Static):
    """The chart above, redrawn to its own size whenever that changes."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__("", id=id)
        self._days: Sequence[tuple[date, float]] = ()
        self._label = ""
        self._shown = False

    def show(self, days: Sequence[tuple[date, float]], label: str) -> None:
        self._days, self._label, self._shown = days, label, True
        self._draw()

    def on_resize(self) -> None:
        self._draw()

    def _draw(self) -> None:
        if not self._shown:
            return
        width = (self.content_size.width or 60) - 1
        height = self.content_size.height or 7
        text = spend_chart(
            self._days, width=max(width, 20), height=max(height, 3), label=self._label
        )
        self.update(Content(text))
