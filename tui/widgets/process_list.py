"""A light process table: a fixed header over pre-formatted rows, one highlighted row.

A DataTable rebuild costs tens of milliseconds for thirty rows (cells, measurements, a relayout);
this list turns each row into one string when the rows change and draws lines from that, so a
refresh costs about as much as the text it shows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

from rich.cells import cell_len, set_cell_size
from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding, BindingType
from textual.geometry import Region, Size
from textual.scroll_view import ScrollView
from textual.strip import Strip


@dataclass(frozen=True)
class Column:
    label: str
    align: Literal["left", "right"] = "left"
    # Longer cells are cut: a long user name must not push the command off screen.
    max_width: int | None = None


def format_row(cells: Sequence[str], widths: Sequence[int], columns: Sequence[Column]) -> str:
    """One line of the table: every cell padded to its column's width, one space either side."""
    parts = []
    last = len(columns) - 1
    for i, (cell, width, column) in enumerate(zip(cells, widths, columns, strict=True)):
        if i == last:
            parts.append(f" {cell}")  # the last column runs to the edge and is cut there
        elif column.align == "right":
            parts.append(f" {set_cell_size(cell, width).strip().rjust(width)} ")
        else:
            parts.append(f" {set_cell_size(cell, width)} ")
    return "".join(parts)


def column_widths(columns: Sequence[Column], rows: Sequence[Sequence[str]]) -> tuple[int, ...]:
    widths = []
    for i, column in enumerate(columns):
        width = max([cell_len(column.label), *(cell_len(row[i]) for row in rows)])
        if column.max_width is not None:
            width = min(width, column.max_width)
        widths.append(width)
    return tuple(widths)


class ProcessList(ScrollView, can_focus=True):
    """Rows of text cells under a header; up/down move the highlighted row.

    ``set_rows`` replaces the rows and redraws only when they changed; the cursor stays on the
    same key (a pid) when that row is still there.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "cursor_up", "Up", show=False),
        Binding("down", "cursor_down", "Down", show=False),
        Binding("pageup", "page_up", "Page up", show=False),
        Binding("pagedown", "page_down", "Page down", show=False),
        Binding("home", "first", "First", show=False),
        Binding("end", "last", "Last", show=False),
    ]

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "process-list--header",
        "process-list--cursor",
        "process-list--stripe",
    }

    DEFAULT_CSS = """
    ProcessList {
        background: $surface;
        color: $foreground;
        overflow-x: hidden;
        & > .process-list--header { text-style: bold; background: $panel; color: $foreground; }
        & > .process-list--stripe { background: $surface-lighten-1 50%; }
        &:dark > .process-list--stripe { background: $surface-darken-1 40%; }
        & > .process-list--cursor {
            background: $block-cursor-blurred-background;
            color: $block-cursor-blurred-foreground;
            text-style: $block-cursor-blurred-text-style;
        }
        &:focus > .process-list--cursor {
            background: $block-cursor-background;
            color: $block-cursor-foreground;
            text-style: $block-cursor-text-style;
        }
    }
    """

    def __init__(
        self, columns: Sequence[Column], *, id: str | None = None, classes: str | None = None
    ) -> None:
        super().__init__(id=id, classes=classes)
        self.columns = tuple(columns)
        self._rows: tuple[tuple[str, ...], ...] = ()
        self._keys: tuple[object, ...] = ()
        self._header = ""
        self._lines: tuple[str, ...] = ()
        self._cursor = 0
        self._strips: dict[tuple[int, int, bool], Strip] = {}
        self._strips_width = 0
        self._line_styles: tuple[Style, Style, Style, Style] | None = None
        self._layout_rows(())

    # -- data --------------------------------------------------------------------------------
    @property
    def row_count(self) -> int:
        return len(self._rows)

    @property
    def cursor_row(self) -> int:
        """Index of the highlighted row (0 when the list is empty)."""
        return self._cursor

    def get_row_at(self, index: int) -> tuple[str, ...]:
        return self._rows[index]

    def set_rows(self, rows: Sequence[Sequence[str]], keys: Sequence[object]) -> None:
        """Show ``rows`` (cells as text); ``keys`` name them, to keep the cursor in place."""
        shown: tuple[tuple[str, ...], ...] = tuple(tuple(row) for row in rows)
        keys = tuple(keys)
        if shown == self._rows and keys == self._keys:
            return  # nothing moved: no redraw at all
        selected = self._keys[self._cursor] if self._cursor < len(self._keys) else None
        self._rows, self._keys = shown, keys
        self._layout_rows(shown)
        cursor = keys.index(selected) if selected is not None and selected in keys else 0
        self._cursor = min(cursor, max(len(rows) - 1, 0))
        height = len(rows) + 1
        if self.virtual_size.height != height:
            self.virtual_size = Size(self.virtual_size.width, height)
        self._strips.clear()
        self._scroll_cursor_into_view()
        self.refresh()

    def _layout_rows(self, rows: tuple[tuple[str, ...], ...]) -> None:
        widths = column_widths(self.columns, rows)
        self._header = format_row([c.label for c in self.columns], widths, self.columns)
        self._lines = tuple(format_row(row, widths, self.columns) for row in rows)

    # -- cursor ------------------------------------------------------------------------------
    def move_cursor(self, row: int) -> None:
        if not self._rows:
            return
        row = min(max(row, 0), len(self._rows) - 1)
        if row == self._cursor:
            return
        old, self._cursor = self._cursor, row
        self._refresh_row(old)
        self._refresh_row(row)
        self._scroll_cursor_into_view()

    def _refresh_row(self, row: int) -> None:
        y = row + 1 - round(self.scroll_y)
        if 1 <= y < self.size.height:
            self.refresh(Region(0, y, self.size.width, 1))

    def _scroll_cursor_into_view(self) -> None:
        visible = max(self.size.height - 1, 1)  # the header line is always there
        top = round(self.scroll_y)
        if self._cursor < top:
            self.scroll_to(y=self._cursor, animate=False, immediate=True)
        elif self._cursor >= top + visible:
            self.scroll_to(y=self._cursor - visible + 1, animate=False, immediate=True)

    def action_cursor_up(self) -> None:
        self.move_cursor(self._cursor - 1)

    def action_cursor_down(self) -> None:
        self.move_cursor(self._cursor + 1)

    def action_page_up(self) -> None:
        self.move_cursor(self._cursor - max(self.size.height - 2, 1))

    def action_page_down(self) -> None:
        self.move_cursor(self._cursor + max(self.size.height - 2, 1))

    def action_first(self) -> None:
        self.move_cursor(0)

    def action_last(self) -> None:
        self.move_cursor(len(self._rows) - 1)

    def on_click(self, event: events.Click) -> None:
        offset = event.get_content_offset(self)
        if offset is None or offset.y < 1:
            return
        self.move_cursor(offset.y - 1 + round(self.scroll_y))

    # -- drawing -----------------------------------------------------------------------------
    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._line_styles = None
        self._strips.clear()

    def _styles(self) -> tuple[Style, Style, Style, Style]:
        """(plain, stripe, header, cursor), resolved once per theme or focus change."""
        if self._line_styles is None:
            component = self.get_component_rich_style
            self._line_styles = (
                self.rich_style,
                component("process-list--stripe"),
                component("process-list--header"),
                component("process-list--cursor"),
            )
        return self._line_styles

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        if width != self._strips_width:
            self._strips.clear()
            self._strips_width = width
        if y == 0:
            return self._strip(-1, width, False)
        row = y - 1 + round(self.scroll_y)
        if row >= len(self._lines):
            return Strip.blank(width, self._styles()[0])
        return self._strip(row, width, row == self._cursor)

    def _strip(self, row: int, width: int, cursor: bool) -> Strip:
        key = (row, width, cursor)
        strip = self._strips.get(key)
        if strip is None:
            plain, stripe, header, cursor_style = self._styles()
            if row < 0:
                text, style = self._header, header
            else:
                text = self._lines[row]
                style = cursor_style if cursor else (stripe if row % 2 else plain)
            strip = Strip([Segment(set_cell_size(text, width), style)], width)
            self._strips[key] = strip
        return strip
