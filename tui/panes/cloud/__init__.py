"""The cloud pane: offers, instances, money and the audit log of every provider action."""

from rigdeck.tui.panes.cloud.pane import CloudPane

__all__ = ["CloudPane"]
