"""The economics pane: local and cloud costs, budgets, comparisons and upgrades."""

from rigdeck.tui.panes.economics.pane import EconomicsPane

__all__ = ["EconomicsPane"]
