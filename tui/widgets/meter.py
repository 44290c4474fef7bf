"""A one-line labelled bar: ``CPU ██████░░░░  62%  3.1 GHz``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from rich.segment import Segment
from rich.style import Style
from textual.reactive import reactive
from textual.strip import Strip
from textual.widget import Widget


def severity(fraction: float | None, warn: float = 0.75, error: float = 0.9) -> str:
    if fraction is None:
        return "$text-muted"
    if fraction >= error:
        return "$error"
    if fraction >= warn:
        return "$warning"
    return "$success"


# The component class that colours the filled part, by the severity above.
_FILL_CLASS = {
    "$text-muted": "meter--na",
    "$error": "meter--error",
    "$warning": "meter--warning",
    "$success": "meter--ok",
}


METER_CSS = """
    & > .meter--label { text-style: bold; }
    & > .meter--ok { color: $success; }
    & > .meter--warning { color: $warning; }
    & > .meter--error { color: $error; }
    & > .meter--na { color: $text-muted; }
    & > .meter--empty { color: $text-disabled; }
"""
METER_CLASSES = frozenset(
    {"meter--label", "meter--ok", "meter--warning", "meter--error", "meter--na", "meter--empty"}
)


def meter_segments(
    label: str,
    label_width: int,
    fraction: float | None,
    text: str,
    width: int,
    styles: Mapping[str, Style],
) -> list[Segment]:
    """The meter's line: ``styles`` maps the METER_CLASSES (and "plain") to resolved styles."""
    text = text if fraction is not None or text else "N/A"
    bar_width = max(width - label_width - len(text) - 2, 4)
    filled = round((fraction or 0.0) * bar_width)
    return [
        Segment(label.ljust(label_width)[:label_width], styles["meter--label"]),
        Segment("█" * filled, styles[_FILL_CLASS[severity(fraction)]]),
        Segment("░" * (bar_width - filled), styles["meter--empty"]),
        Segment(f" {text}", styles["plain"]),
    ]


class Meter(Widget):
    """A gauge that draws a bar for ``fraction`` (0..1) between a label and a value text.

    ``fraction`` None draws an empty bar with N/A: the field is not supported, not zero.
    The line is built from styles resolved once per theme and kept until a value changes, so
    a meter whose reading did not move costs nothing on a tick.
    """

    COMPONENT_CLASSES: ClassVar[set[str]] = set(METER_CLASSES)

    DEFAULT_CSS = "Meter { height: 1; width: 1fr; " + METER_CSS + "}"

    fraction: reactive[float | None] = reactive(None)
    """How full the bar is, 0..1; None when the reading is not available."""
    text: reactive[str] = reactive("")
    """What is written right of the bar (figures, units)."""

    def __init__(
        self,
        label: str,
        *,
        label_width: int = 5,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.label = label
        self.label_width = label_width
        self._line: Strip | None = None
        self._line_key: tuple[object, ...] = ()
        self._styles: dict[str, Style] | None = None

    def set(self, fraction: float | None, text: str) -> None:
        self.fraction = None if fraction is None else min(max(fraction, 0.0), 1.0)
        self.text = text

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._line = None
        self._styles = None

    def _resolved(self) -> dict[str, Style]:
        """Every style the line uses, resolved once per theme (a refresh drops Textual's own
        cache of them, and resolving costs more than drawing the line)."""
        if self._styles is None:
            styles = {name: self.get_component_rich_style(name) for name in self.COMPONENT_CLASSES}
            styles["plain"] = self.rich_style
            self._styles = styles
        return self._styles

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        if y != 0:
            return Strip.blank(width, self._resolved()["plain"])
        key = (width, self.fraction, self.text)
        if self._line is None or key != self._line_key:
            self._line = self._draw(width)
            self._line_key = key
        return self._line

    def _draw(self, width: int) -> Strip:
        styles = self._resolved()
        segments = meter_segments(
            self.label, self.label_width, self.fraction, self.text, width, styles
        )
        return Strip(segments).crop_extend(0, width, styles["plain"])
