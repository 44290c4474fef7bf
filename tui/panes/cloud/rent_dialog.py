"""The rent dialog: image, disk, bid and project tag editable, and what the rental costs worded
again on every change, all before the key that confirms. Focus starts on Cancel (Shift+Tab reaches
the fields).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

from rigdeck.core.cloud.provider import RentRequest
from rigdeck.core.config import PROJECT_TAG_RULE, is_project_tag

Describe = Callable[[RentRequest, str], list[str]]
"""The dialog's words for a request and its project tag ("" untagged)."""


@dataclass(frozen=True)
class RentChoice:
    """What the user confirmed: the request to send and the project tag ("" untagged)."""

    request: RentRequest
    project: str = ""


def parse_request(base: RentRequest, image: str, disk: str, bid: str | None) -> RentRequest:
    """``base`` with the typed fields; `ValueError` with a reason when one does not read."""
    image = image.strip()
    if not image:
        raise ValueError("image: name a docker image")
    try:
        disk_gb = float(disk.strip())
    except ValueError:
        raise ValueError(f"disk: {disk.strip() or 'empty'} is not a number of GB") from None
    if disk_gb < 1:
        raise ValueError("disk: at least 1 GB")
    price = base.bid
    if bid is not None:
        try:
            price = float(bid.strip().lstrip("$"))
        except ValueError:
            raise ValueError(f"bid: {bid.strip() or 'empty'} is not a $/h price") from None
        if price <= 0:
            raise ValueError("bid: a price above $0/h")
    return replace(base, image=image, disk_gb=disk_gb, bid=price)


def parse_project(text: str) -> str:
    """The typed tag ("" when empty: untagged); `ValueError` with the rule when it is not one."""
    tag = text.strip()
    if tag and not is_project_tag(tag):
        raise ValueError(f"project: {tag!r} is not a project tag; {PROJECT_TAG_RULE}")
    return tag


class RentDialog(ModalScreen[RentChoice | None]):
    DEFAULT_CSS = """
    RentDialog { align: center middle; }
    RentDialog #rent-dialog { width: 90%; max-width: 100; height: auto;
        border: thick $warning; background: $surface; padding: 0 1; }
    RentDialog #rent-title { text-style: bold; }
    RentDialog .cloud-simulated { background: $warning; color: $background; text-style: bold; }
    RentDialog .rent-field { height: 1; }
    RentDialog .rent-field Label { width: 8; color: $text-muted; }
    RentDialog .rent-field Input { width: 1fr; }
    RentDialog #rent-error { color: $error; height: auto; }
    RentDialog #rent-error.-empty { display: none; }
    RentDialog #rent-buttons { height: 1; margin-top: 1; align: right middle; }
    RentDialog Button { min-width: 12; height: 1; border: none; margin-left: 2; }
    """

    BINDINGS = [
        Binding("escape", "cancel", "Cancel", id="cloud.rent.cancel"),
        Binding("left,right", "switch", "Switch button", id="cloud.rent.switch", show=False),
    ]

    def __init__(
        self,
        title: str,
        request: RentRequest,
        describe: Describe,
        *,
        project: str = "",
        simulated: bool = False,
    ) -> None:
        super().__init__()
        self.title_text = title
        self.request: RentRequest = request
        self.project = project
        self.describe = describe
        self.simulated = simulated

    def compose(self) -> ComposeResult:
        r = self.request
        with Vertical(id="rent-dialog"):
            if self.simulated:
                yield Static(" SIMULATED — no money moves ", classes="cloud-simulated")
            yield Static(Content(self.title_text), id="rent-title")
            with Horizontal(classes="rent-field"):
                yield Label("image")
                yield Input(r.image, id="rent-image", compact=True)
            with Horizontal(classes="rent-field"):
                yield Label("disk GB")
                yield Input(f"{r.disk_gb:g}", id="rent-disk", compact=True)
            if r.bid is not None:
                with Horizontal(classes="rent-field"):
                    yield Label("bid $/h")
                    yield Input(f"{r.bid:g}", id="rent-bid", compact=True)
            with Horizontal(classes="rent-field"):
                yield Label("project")
                yield Input(
                    self.project,
                    placeholder="none (a tag for rigdeck cost and its budgets)",
                    id="rent-project",
                    compact=True,
                )
            yield Static("", id="rent-error", classes="-empty")
            yield Static(Content("\n".join(self.describe(r, self.project))), id="rent-body")
            with Horizontal(id="rent-buttons"):
                yield Button("Cancel", id="rent-cancel", compact=True)
                yield Button("Rent", id="rent-ok", variant="error", compact=True)

    def on_mount(self) -> None:
        self.query_one("#rent-cancel", Button).focus()

    @on(Input.Changed)
    def _changed(self) -> None:
        bids = self.query("#rent-bid")
        try:
            request = parse_request(
                self.request,
                self.query_one("#rent-image", Input).value,
                self.query_one("#rent-disk", Input).value,
                bids.first(Input).value if bids else None,
            )
            project = parse_project(self.query_one("#rent-project", Input).value)
        except ValueError as exc:
            error = self.query_one("#rent-error", Static)
            error.update(Content(str(exc)))
            error.remove_class("-empty")
            self.query_one("#rent-ok", Button).disabled = True
            return
        self.request, self.project = request, project
        self.query_one("#rent-error", Static).add_class("-empty")
        self.query_one("#rent-ok", Button).disabled = False
        lines = self.describe(request, project)
        self.query_one("#rent-body", Static).update(Content("\n".join(lines)))

    @on(Input.Submitted)
    def _submitted(self) -> None:
        # Enter in a field never rents: it hands the keys back to Cancel.
        self.query_one("#rent-cancel", Button).focus()

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        ok = event.button.id == "rent-ok"
        self.dismiss(RentChoice(self.request, self.project) if ok else None)

    def action_cancel(self) -> None:
        self.dismiss(None)

    def action_switch(self) -> None:
        cancel = self.query_one("#rent-cancel", Button)
        ok = self.query_one("#rent-ok", Button)
        if cancel.has_focus:
            ok.focus()
        elif ok.has_focus:
            cancel.focus()
