"""The chat pane: a local model through llama.cpp, streaming, with measured vs predicted."""

from __future__ import annotations

from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Static

from rigdeck.core.models.fit import Placement


class ChatPane(Vertical):
    BINDINGS: list[Binding] = []

    class RunningChanged(Message):
        """What the status bar shows as running ("nothing" when no model is loaded)."""

        def __init__(self, label: str) -> None:
            super().__init__()
            self.label = label

    def compose(self) -> ComposeResult:
        yield Static("Chat with a local model through llama.cpp. Not built yet.",
                     classes="placeholder")

    def start_model(self, path: Path, placement: Placement | None, label: str) -> None:
        """Load ``path`` with ``placement`` (None: fit it here first) and get ready to chat."""
