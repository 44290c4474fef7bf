"""The detail view of one fitted model: every device's memory by component, why, what to change."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import DataTable, Static

from rigdeck.core.models.browser import FittedRow
from rigdeck.core.models.fit.settings import RunSettings
from rigdeck.tui import words
from rigdeck.tui.widgets.fitbar import StackedBar

VERDICT_STYLES = {
    "gpu": "$success",
    "partial": "$warning",
    "cpu": "$secondary",
    "none": "$error",
    "error": "$error",
    "unread": "$text-muted",
}


class FitDetailScreen(ModalScreen[str | None]):
    """Dismisses with "run", "download" or None (closed)."""

    DEFAULT_CSS = """
    FitDetailScreen { align: center middle; }
    FitDetailScreen #fit-detail {
        width: 96%; max-width: 130; height: 90%;
        border: round $accent; background: $surface; padding: 0 1;
    }
    FitDetailScreen #fit-devices { height: auto; max-height: 8; }
    FitDetailScreen .fit-section { margin-top: 1; text-style: bold; }
    FitDetailScreen StackedBar { margin-left: 0; }
    """

    BINDINGS = [
        Binding(
            "escape",
            "dismiss(None)",
            "Close",
            id="models.detail.close",
            tooltip="Back to the model list",
        ),
        Binding(
            "enter,r",
            "act",
            "Run",
            id="models.detail.run",
            tooltip="Run a local model with this placement, or download a Hub one",
        ),
    ]

    def __init__(self, fitted: FittedRow, settings: RunSettings) -> None:
        super().__init__()
        self.fitted = fitted
        self.settings = settings

    def compose(self) -> ComposeResult:
        f = self.fitted
        row, p = f.row, f.placement
        with Vertical(id="fit-detail"):
            style = VERDICT_STYLES.get(f.verdict, "")
            yield Static(
                Content.assemble(
                    (row.label, "bold"),
                    f"  {row.source}",
                    f"  {row.repo}" if row.repo and row.repo not in row.label else "",
                    "  ",
                    (words.row_verdict(f), f"bold {style}"),
                ),
                id="fit-title",
            )
            yield Static(
                Content(
                    f"context {words.context(self.settings.n_ctx)} · KV {words.kv(self.settings)}"
                    f" · flash attention {self.settings.flash}"
                    + (
                        f" · {p.gpu_layers} of {p.total_layers} layers on GPU"
                        if p and p.fits
                        else ""
                    )
                ),
                id="fit-settings",
            )
            with VerticalScroll():
                if p is None:
                    yield Static(
                        Content(f.error or row.error or "no header read yet"), id="fit-why"
                    )
                else:
                    table: DataTable[str] = DataTable(
                        id="fit-devices", cursor_type="none", show_cursor=False
                    )
                    yield table
                    for d in p.devices:
                        label = "RAM" if d.kind == "cpu" else f"GPU {d.index}"
                        yield StackedBar(
                            (d.weights_bytes, d.kv_bytes, d.compute_bytes, d.other_bytes),
                            d.budget_bytes,
                            label=label,
                        )
                    yield Static(
                        Content.assemble(
                            ("█ weights ", "$primary"),
                            ("█ KV ", "$success"),
                            ("█ compute ", "$warning"),
                            ("█ other", "$secondary"),
                        ),
                        classes="fit-legend",
                    )
                    yield Static(
                        Content.assemble(
                            ("Predicted ", "bold"),
                            f"{words.tps(p.decode_tps)} tok/s decode, "
                            f"{words.tps(p.prompt_tps)} tok/s prompt",
                        ),
                        id="fit-speed",
                    )
                    yield Static("Why", classes="fit-section")
                    yield Static(Content(p.why), id="fit-why")
                    if p.suggestions:
                        yield Static("What would make it fit or run faster", classes="fit-section")
                        yield Static(
                            Content(
                                "\n".join(f"{i}. {s.label}" for i, s in enumerate(p.suggestions, 1))
                            ),
                            id="fit-suggestions",
                        )
                    if p.notes:
                        yield Static("Notes", classes="fit-section")
                        yield Static(Content("\n".join(f"• {n}" for n in p.notes)), id="fit-notes")
                if f.run is not None:
                    yield Static("Measured", classes="fit-section")
                    yield Static(Content(words.last_run_line(f.run)), id="fit-measured")
            yield Static(self._hint(), classes="dialog-hint")

    def _hint(self) -> str:
        if self.fitted.row.is_local:
            return "enter / r: run with this placement   escape: back"
        if self.fitted.row.hub_file is not None:
            return "enter / r: download into the HF cache   escape: back"
        return "escape: back"

    def on_mount(self) -> None:
        p = self.fitted.placement
        if p is None:
            return
        table = self.query_one("#fit-devices", DataTable)
        table.add_columns(
            "Device", "Weights", "KV", "Compute", "Other", "Total", "Budget", "Free after"
        )
        for d in p.devices:
            name = "RAM (CPU)" if d.kind == "cpu" else f"GPU {d.index} {d.name}"
            table.add_row(
                name,
                *(
                    words.size(n)
                    for n in (
                        d.weights_bytes,
                        d.kv_bytes,
                        d.compute_bytes,
                        d.other_bytes,
                        d.total_bytes,
                        d.budget_bytes,
                        d.free_after_bytes,
                    )
                ),
            )

    def action_act(self) -> None:
        row = self.fitted.row
        if row.is_local:
            self.dismiss("run")
        elif row.hub_file is not None:
            self.dismiss("download")
