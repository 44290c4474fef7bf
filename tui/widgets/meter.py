"""A one-line labelled bar: ``CPU ██████░░░░  62%  3.1 GHz``."""

from __future__ import annotations

from textual.content import Content
from textual.reactive import reactive
from textual.widget import Widget


def severity(fraction: float | None, warn: float = 0.75, error: float = 0.9) -> str:
    if fraction is None:
        return "$text-muted"
    if fraction >= error:
        return "$error"
    if fraction >= warn:
        return "$warning"
    return "$success"


class Meter(Widget):
    """A gauge that draws a bar for ``fraction`` (0..1) between a label and a value text.

    ``fraction`` None draws an empty bar with N/A: the field is not supported, not zero.
    """

    DEFAULT_CSS = """
    Meter { height: 1; width: 1fr; }
    """

    fraction: reactive[float | None] = reactive(None)
    """How full the bar is, 0..1; None when the reading is not available."""
    text: reactive[str] = reactive("")
    """What is written right of the bar (figures, units)."""

    def __init__(self, label: str, *, label_width: int = 5, name: str | None = None,
                 id: str | None = None, classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.label = label
        self.label_width = label_width

    def set(self, fraction: float | None, text: str) -> None:
        self.fraction = None if fraction is None else min(max(fraction, 0.0), 1.0)
        self.text = text

    def render(self) -> Content:
        width = self.size.width
        text = self.text if self.fraction is not None or self.text else "N/A"
        bar_width = max(width - self.label_width - len(text) - 2, 4)
        filled = round((self.fraction or 0.0) * bar_width)
        style = severity(self.fraction)
        return Content.assemble(
            (self.label.ljust(self.label_width)[: self.label_width], "bold"),
            ("█" * filled, style),
            ("░" * (bar_width - filled), "$text-disabled"),
            " ",
            text,
        )
