"""The cloud pane's tables: columns as wide as their cells, whenever a frame was drawn."""

from __future__ import annotations

from textual.app import App, ComposeResult
from textual.geometry import Region

from rigdeck.tui.panes.cloud.tables import KeyedTable


class _OneTable(App[None]):
    def compose(self) -> ComposeResult:
        yield KeyedTable(["id", "GPUs"])


async def test_columns_fit_their_cells_even_when_a_frame_came_before_they_were_measured() -> None:
    app = _OneTable()
    async with app.run_test(size=(60, 6)) as pilot:
        table = app.query_one(KeyedTable)
        await pilot.pause()
        table.show_rows([("a", ["20505000", "1x RTX 3090"]), ("b", ["20504960", "2x RTX 4090"])])
        # A frame before the table's idle measures the new rows: what a busy machine draws.
        table.render_lines(Region(0, 0, 60, 3))
        await pilot.pause()
        header, first, _ = (strip.text for strip in table.render_lines(Region(0, 0, 60, 3)))
        assert first.split() == ["20505000", "1x", "RTX", "3090"]
        assert header.index("GPUs") == first.index("1x RTX 3090")
