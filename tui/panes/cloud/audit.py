"""The audit log: every provider action the ledger recorded (intent, outcome, what reconcile
and the guard saw), newest last, with the equivalent CLI line."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.widgets import RichLog

from rigdeck.core.cloud.ledger import LedgerEvent

KIND_STYLES = {"intent": "cyan", "outcome": "green", "observed": "yellow", "guard": "magenta"}


def event_text(event: LedgerEvent) -> Text:
    mark = {True: ("ok", "green"), False: ("FAILED", "bold red"), None: ("", "")}[event.ok]
    who = f" {event.instance_id}" if event.instance_id is not None else ""
    return Text.assemble(
        (f"{event.at:%H:%M:%S} ", "dim"),
        (f"{event.kind:<8}", KIND_STYLES.get(event.kind, "")),
        f" {event.action}{who} ",
        (f"{mark[0]} " if mark[0] else "", mark[1]),
        event.detail,
        (f"  $ {event.cli}" if event.cli else "", "dim"),
    )


class AuditLog(RichLog):
    """Appends only the events it has not shown yet (by ledger sequence number)."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(wrap=False, markup=False, highlight=False, max_lines=500, **kwargs)  # type: ignore[arg-type]
        self.last_seq = 0

    def show(self, events: Sequence[LedgerEvent]) -> None:
        for event in events:
            if event.seq > self.last_seq:
                self.write(event_text(event))
                self.last_seq = event.seq
