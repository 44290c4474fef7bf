"""Several gauge lines in one widget: meters, graphs, plain text, or cells side by side.

Every widget on a changed part of the screen costs the compositor a render and a cut per line,
whether or not it changed; a box of three meters and three graphs as six widgets cost most of a
tick. One panel draws them all from lines described by small frozen values: a line equal to the
one shown is not redrawn, and a changed one redraws only its own row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

from rich.segment import Segment
from rich.style import Style
from textual.geometry import Region, Size
from textual.strip import Strip
from textual.widget import Widget

from rigdeck.tui.widgets.graph import graph_segments, level_styles
from rigdeck.tui.widgets.meter import METER_CLASSES, METER_CSS, meter_segments


@dataclass(frozen=True)
class MeterLine:
    """``label ████░░░░ text``; ``fraction`` None is a reading the hardware does not give."""

    label: str
    fraction: float | None
    text: str
    label_width: int = 5


@dataclass(frozen=True)
class GraphLine:
    """A history graph of ``data``, newest sample right."""

    data: tuple[float, ...]


@dataclass(frozen=True)
class TextRow:
    text: str


@dataclass(frozen=True)
class Cells:
    """Meters or graphs side by side, equal widths, one column after each (as ``1fr`` with
    ``margin-right: 1`` would place them)."""

    cells: tuple[MeterLine | GraphLine, ...]


Line = MeterLine | GraphLine | TextRow | Cells


def cell_widths(width: int, count: int, gap: int = 1) -> list[int]:
    room = max(width - gap * count, 0)
    return [room * (i + 1) // count - room * i // count for i in range(count)]


class LinePanel(Widget):
    """A fixed number of lines; ``set_lines`` redraws the rows that changed."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        *METER_CLASSES,
        "graph--min-color",
        "graph--max-color",
    }

    DEFAULT_CSS = (
        "LinePanel { height: auto; "
        + METER_CSS
        + """
    & > .graph--max-color { color: $primary; }
    & > .graph--min-color { color: $primary 30%; }
    }
    """
    )

    def __init__(
        self, lines: Sequence[Line], *, id: str | None = None, classes: str | None = None
    ) -> None:
        super().__init__(id=id, classes=classes)
        self._lines: list[Line] = list(lines)
        self._strips: dict[int, Strip] = {}
        self._strips_width = -1
        self._resolved: tuple[Mapping[str, Style], tuple[Style, ...]] | None = None

    @property
    def lines(self) -> tuple[Line, ...]:
        return tuple(self._lines)

    def set_lines(self, lines: Sequence[Line]) -> None:
        if len(lines) != len(self._lines):
            self._lines = list(lines)
            self._strips.clear()
            self.refresh(layout=True)
            return
        width = self.size.width
        for y, line in enumerate(lines):
            if line != self._lines[y]:
                self._lines[y] = line
                self._strips.pop(y, None)
                self.refresh(Region(0, y, width, 1))

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        return len(self._lines)

    # -- drawing -----------------------------------------------------------------------------
    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._resolved = None
        self._strips.clear()

    def _styles(self) -> tuple[Mapping[str, Style], tuple[Style, ...]]:
        """Meter styles by class, and graph styles by bar height: once per theme."""
        if self._resolved is None:
            meters = {name: self.get_component_rich_style(name) for name in METER_CLASSES}
            meters["plain"] = self.rich_style
            _, base = self.background_colors
            low = base + self.get_component_styles("graph--min-color").color
            high = base + self.get_component_styles("graph--max-color").color
            self._resolved = (meters, level_styles(low, high, base))
        return self._resolved

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        if width != self._strips_width:
            self._strips.clear()
            self._strips_width = width
        strip = self._strips.get(y)
        if strip is None:
            strip = self._strips[y] = self._draw(y, width)
        return strip

    def _draw(self, y: int, width: int) -> Strip:
        meters, graphs = self._styles()
        plain = meters["plain"]
        if y >= len(self._lines):
            return Strip.blank(width, plain)
        line = self._lines[y]
        if isinstance(line, Cells):
            segments: list[Segment] = []
            gap = Segment(" ", plain)
            for cell, cell_width in zip(
                line.cells, cell_widths(width, len(line.cells)), strict=True
            ):
                segments += Strip(self._segments(cell, cell_width, meters, graphs)).crop_extend(
                    0, cell_width, plain
                )
                segments.append(gap)
        else:
            segments = self._segments(line, width, meters, graphs)
        return Strip(segments).crop_extend(0, width, plain)

    @staticmethod
    def _segments(
        line: Line, width: int, meters: Mapping[str, Style], graphs: Sequence[Style]
    ) -> list[Segment]:
        if isinstance(line, MeterLine):
            return meter_segments(
                line.label, line.label_width, line.fraction, line.text, width, meters
            )
        if isinstance(line, GraphLine):
            return graph_segments(line.data, width, graphs)
        if isinstance(line, TextRow):
            return [Segment(line.text, meters["plain"])]
        raise TypeError(f"a cell cannot hold {type(line).__name__}")
