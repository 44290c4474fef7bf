"""Modal screens: help (every binding), confirmation, the doctor report."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import DataTable, Static

if TYPE_CHECKING:
    from rigdeck.core.doctor import Check


class HelpScreen(ModalScreen[None]):
    """Every binding of the app and the panes, with its id for remapping in the config."""

    BINDINGS = [
        Binding("escape,q,question_mark", "dismiss", "Close", id="help.close"),
    ]

    def __init__(self, rows: Iterable[tuple[str, str, str, str]]) -> None:
        super().__init__()
        self._rows = list(rows)

    def compose(self) -> ComposeResult:
        with Vertical(id="help-dialog", classes="dialog"):
            yield Static(
                Content.assemble(
                    ("Keys", "bold"),
                    ' — remap any of them in rigdeck.toml: [ui] keymap = { id = "key" }',
                ),
                id="help-title",
            )
            table: DataTable[str] = DataTable(id="help-table", cursor_type="row")
            yield table
            yield Static("escape closes", classes="dialog-hint")

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("Key", "Action", "Where", "Id")
        for row in self._rows:
            table.add_row(*row)
        table.focus()


class ConfirmScreen(ModalScreen[bool]):
    """A yes/no question answered with y / n (or enter / escape)."""

    BINDINGS = [
        Binding("y,enter", "answer(True)", "Yes", id="confirm.yes"),
        Binding("n,escape", "answer(False)", "No", id="confirm.no"),
    ]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm-dialog", classes="dialog"):
            yield Static(Content(self.question), id="confirm-question")
            yield Static("y: yes   n / escape: no", classes="dialog-hint")

    def action_answer(self, value: bool) -> None:
        self.dismiss(value)


_MARKS = {"ok": ("✓", "$success"), "warn": ("!", "$warning"), "missing": ("✗", "$error")}


class DoctorScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q", "dismiss", "Close", id="doctor.close")]

    def __init__(self, checks: list[Check] | None = None) -> None:
        super().__init__()
        self.checks = checks

    def compose(self) -> ComposeResult:
        with Vertical(id="doctor-dialog", classes="dialog"):
            yield Static("[b]Doctor[/b] — what this machine gives rigdeck", id="doctor-title")
            yield Static("Checking…", id="doctor-body")
            yield Static("escape closes", classes="dialog-hint")

    def show_checks(self, checks: list[Check]) -> None:
        parts: list[Content | str | tuple[str, str]] = []
        for check in checks:
            mark, style = _MARKS.get(check.status, ("?", ""))
            parts += [(f"{mark} ", style), (f"{check.name}: ", "bold"), check.detail, "\n"]
            if check.fix:
                parts += [("    fix: ", "$text-muted"), (check.fix, "$text-muted"), "\n"]
        self.query_one("#doctor-body", Static).update(Content.assemble(*parts))
