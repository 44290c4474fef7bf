"""The models pane: every local and Hub GGUF quantization, fitted to this machine."""

from __future__ import annotations

from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Static

from rigdeck.core.models.fit import Placement
from rigdeck.core.telemetry.snapshot import Snapshot


class ModelsPane(Vertical):
    BINDINGS: list[Binding] = []

    class RunRequested(Message):
        """The user asked to run a local model with the placement the fit chose."""

        def __init__(self, path: Path, placement: Placement | None, label: str) -> None:
            super().__init__()
            self.path = path
            self.placement = placement
            self.label = label

    def compose(self) -> ComposeResult:
        yield Static("Model browser: not built yet.", classes="placeholder")

    def show_snapshot(self, snapshot: Snapshot) -> None:
        """The machine changed; called only while this pane is on screen."""
