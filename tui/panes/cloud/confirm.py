"""The cloud dialogs: a confirmation that says what an action costs and the equivalent CLI line
before the key that confirms (focus starts on Cancel), and a one-line prompt."""

from __future__ import annotations

from collections.abc import Sequence

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Static


class CloudConfirmScreen(ModalScreen[bool]):
    """Cancel is focused first: Enter on its own never rents or destroys anything."""

    DEFAULT_CSS = """
    CloudConfirmScreen { align: center middle; }
    CloudConfirmScreen #cloud-confirm { width: 90%; max-width: 100; height: auto;
        border: thick $warning; background: $surface; padding: 0 1; }
    CloudConfirmScreen #cloud-confirm-title { text-style: bold; }
    CloudConfirmScreen .cloud-simulated { background: $warning; color: $background;
        text-style: bold; }
    CloudConfirmScreen #cloud-confirm-buttons { height: 1; margin-top: 1; align: right middle; }
    CloudConfirmScreen Button { min-width: 12; height: 1; border: none; margin-left: 2; }
    """

    BINDINGS = [
        Binding("escape", "cancel", "Cancel", id="cloud.confirm.cancel"),
        Binding("left,right", "switch", "Switch button", id="cloud.confirm.switch", show=False),
    ]

    def __init__(
        self, title: str, lines: Sequence[str], *, confirm: str, simulated: bool = False
    ) -> None:
        super().__init__()
        self.title_text = title
        self.lines = list(lines)
        self.confirm_label = confirm
        self.simulated = simulated

    def compose(self) -> ComposeResult:
        with Vertical(id="cloud-confirm"):
            if self.simulated:
                yield Static(" SIMULATED — no money moves ", classes="cloud-simulated")
            yield Static(Content(self.title_text), id="cloud-confirm-title")
            yield Static(Content("\n".join(self.lines)), id="cloud-confirm-body")
            with Horizontal(id="cloud-confirm-buttons"):
                yield Button("Cancel", id="cloud-cancel", compact=True)
                yield Button(self.confirm_label, id="cloud-ok", variant="error", compact=True)

    def on_mount(self) -> None:
        self.query_one("#cloud-cancel", Button).focus()

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "cloud-ok")

    def action_cancel(self) -> None:
        self.dismiss(False)

    def action_switch(self) -> None:
        cancel = self.query_one("#cloud-cancel", Button)
        ok = self.query_one("#cloud-ok", Button)
        (ok if cancel.has_focus else cancel).focus()


class PromptScreen(ModalScreen[str | None]):
    """One line of text: Enter answers, Escape cancels (None)."""

    DEFAULT_CSS = """
    PromptScreen { align: center middle; }
    PromptScreen #cloud-prompt { width: 80%; max-width: 90; height: auto; border: thick $accent;
        background: $surface; padding: 0 1; }
    PromptScreen Input { margin-top: 1; }
    """

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="cloud.prompt.cancel")]

    def __init__(self, question: str, value: str = "", placeholder: str = "") -> None:
        super().__init__()
        self.question = question
        self.value = value
        self.placeholder = placeholder

    def compose(self) -> ComposeResult:
        with Vertical(id="cloud-prompt"):
            yield Static(Content(self.question))
            yield Input(self.value, placeholder=self.placeholder, id="cloud-prompt-input",
                        compact=True)  # fmt: skip

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value)

    def action_cancel(self) -> None:
        self.dismiss(None)
