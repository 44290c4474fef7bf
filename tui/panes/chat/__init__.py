"""The chat pane: a local model through a runner the pane is given (see ``pane.py``)."""

from rigdeck.tui.panes.chat.pane import DEMO_LABEL, ChatPane

__all__ = ["DEMO_LABEL", "ChatPane"]
