"""Memory-against-budget bars: a small one for a table cell, a stacked one per device.

``usage_cell`` returns a Rich ``Text`` because DataTable cells are Rich renderables; its colours
come from the theme's CSS variables (``theme_styles(app.get_css_variables())``), converted to Rich
styles here because a 16-colour theme names them ``ansi_green`` and the like, which Rich does not
read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from rich.style import Style
from rich.text import Text
from textual.color import Color, ColorParseError
from textual.content import Content
from textual.reactive import reactive
from textual.widget import Widget

from rigdeck.tui.widgets.meter import severity

_EIGHTHS = " ▏▎▍▌▋▊▉█"


def bar_chars(fraction: float, width: int) -> tuple[str, str]:
    """(filled, empty) characters for a bar ``width`` cells wide, in eighths of a cell."""
    fraction = min(max(fraction, 0.0), 1.0)
    eighths = round(fraction * width * 8)
    full, part = divmod(eighths, 8)
    filled = "█" * full + (_EIGHTHS[part] if part else "")
    return filled, "░" * (width - len(filled))


_STYLE_VARIABLES = ("success", "warning", "error", "accent", "primary", "secondary")
_DIM = Style(dim=True)


def theme_styles(variables: Mapping[str, str]) -> dict[str, Style]:
    """Rich styles for the theme colours the models table uses, by variable name.

    Muted and disabled text are 'auto N%' in themes (relative to the background): dim does.
    """
    styles: dict[str, Style] = {"text-muted": _DIM, "text-disabled": _DIM}
    for name in _STYLE_VARIABLES:
        try:
            styles[name] = Style(color=Color.parse(variables[name]).rich_color)
        except (KeyError, ColorParseError):
            styles[name] = Style.null()
    return styles


def usage_cell(used: int, budget: int, styles: Mapping[str, Style], *, width: int = 4) -> Text:
    """``██▌░ 6.0/9.5`` (GiB): how much of a device's budget a plan takes."""
    if budget <= 0:
        return Text(f"{used / (1 << 30):.1f}/0", style=styles.get("error", Style.null()))
    fraction = used / budget
    colour_var = severity(fraction, warn=0.85, error=1.0).lstrip("$")
    filled, empty = bar_chars(fraction, width)
    text = Text()
    text.append(filled, style=styles.get(colour_var, Style.null()))
    text.append(empty, style=styles.get("text-disabled", _DIM))
    text.append(f" {used / (1 << 30):.1f}/{budget / (1 << 30):.1f}")
    return text


# Component name -> theme variable it is drawn in.
COMPONENT_STYLES: tuple[tuple[str, str], ...] = (
    ("weights", "$primary"),
    ("KV", "$success"),
    ("compute", "$warning"),
    ("other", "$secondary"),
)


class StackedBar(Widget):
    """One device: weights, KV, compute and other stacked against its budget, one line.

    Parts beyond the budget are cut at the bar's end and the label says how far over it is.
    """

    DEFAULT_CSS = """
    StackedBar { height: 1; width: 1fr; }
    """

    parts: reactive[tuple[int, ...]] = reactive(tuple, layout=False)
    """Bytes per component, in COMPONENT_STYLES order."""
    budget: reactive[int] = reactive(0, layout=False)

    def __init__(
        self,
        parts: Sequence[int] = (),
        budget: int = 0,
        *,
        label: str = "",
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(id=id, classes=classes)
        self.label = label
        self.set_reactive(StackedBar.parts, tuple(parts))
        self.set_reactive(StackedBar.budget, budget)

    def render(self) -> Content:
        total = sum(self.parts)
        text = f" {total / (1 << 30):.1f} of {self.budget / (1 << 30):.1f} GiB"
        if self.budget and total > self.budget:
            text += f" ({(total - self.budget) / (1 << 30):.1f} over)"
        label = self.label.ljust(8)[:8]
        width = max(self.size.width - len(label) - len(text), 4)
        scale = width / max(self.budget, total, 1)
        pieces: list[tuple[str, str] | str] = [(label, "bold")]
        used = 0
        for (_, style), nbytes in zip(COMPONENT_STYLES, self.parts, strict=False):
            cells = min(round(nbytes * scale), width - used)
            pieces.append(("█" * cells, style))
            used += cells
        pieces.append(("░" * (width - used), "$text-disabled"))
        pieces.append(text)
        return Content.assemble(*pieces)
