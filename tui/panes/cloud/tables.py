"""A DataTable that redraws only what changed: rows keyed by id, cells updated in place when the
rows are the same ones in the same order, the cursor kept on the same row otherwise."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual import events
from textual.widgets import DataTable

Cell = str | Text


class KeyedTable(DataTable[Cell]):
    def __init__(self, columns: Sequence[str], **kwargs: object) -> None:
        super().__init__(cursor_type="row", zebra_stripes=False, **kwargs)  # type: ignore[arg-type]
        self._columns = list(columns)
        self._shown: list[tuple[str, tuple[Cell, ...]]] = []

    def on_mount(self) -> None:
        self._set_columns(self._columns)

    async def _on_idle(self, event: events.Idle) -> None:
        # DataTable sizes its columns to new rows on idle, but its render caches are not keyed
        # by column width: what was drawn before (the header at its labels' widths, and on a
        # busy machine whole rows) stayed at the old widths until some later change.
        widths = [column.content_width for column in self.columns.values()]
        await super()._on_idle(event)
        if [column.content_width for column in self.columns.values()] != widths:
            self._clear_caches()
            self.refresh()

    def _set_columns(self, columns: Sequence[str]) -> None:
        self._columns = list(columns)
        self.clear(columns=True)
        for name in self._columns:
            self.add_column(name, key=name)
        self._shown = []

    def set_columns(self, columns: Sequence[str]) -> None:
        if list(columns) != self._columns:
            self._set_columns(columns)

    def clear_rows(self) -> None:
        self.clear()
        self._shown = []

    def selected_key(self) -> str | None:
        if not self.row_count:
            return None
        try:
            key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value
        except Exception:
            return None
        return key

    def show_rows(self, rows: Sequence[tuple[str, Sequence[Cell]]]) -> None:
        new = [(key, tuple(cells)) for key, cells in rows]
        if [k for k, _ in new] == [k for k, _ in self._shown]:
            for (key, cells), (_, old) in zip(new, self._shown, strict=True):
                for name, cell, before in zip(self._columns, cells, old, strict=True):
                    if cell != before:
                        self.update_cell(key, name, cell, update_width=True)
            self._shown = new
            return
        keep = self.selected_key()
        self.clear()
        for key, cells in new:
            self.add_row(*cells, key=key)
        self._shown = new
        if keep is not None:
            for n, (key, _) in enumerate(new):
                if key == keep:
                    self.move_cursor(row=n, animate=False)
                    break
