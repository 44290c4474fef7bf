"""A Static for figures that change every tick: it redraws only when its text changed."""

from __future__ import annotations

from textual.content import Content
from textual.widgets import Static


class TextLine(Static):
    """``show`` replaces the text; the same text again costs nothing (no refresh, no layout).

    ``layout`` asks for a relayout, needed only where the new text can change the height.
    """

    def __init__(
        self, text: str = "", *, id: str | None = None, classes: str | None = None
    ) -> None:
        super().__init__(text, id=id, classes=classes)
        self._shown: object = text

    def show(self, text: str | Content, *, key: object = None, layout: bool = False) -> bool:
        """Show ``text``; ``key`` stands for it when comparing (e.g. the markup it came from).

        Returns whether anything was redrawn.
        """
        key = text if key is None else key
        if key == self._shown:
            return False
        self._shown = key
        self.update(text if isinstance(text, Content) else Content(text), layout=layout)
        return True

    def show_markup(self, markup: str, *, layout: bool = False) -> bool:
        """``show`` for markup, parsed only when it differs from what is shown."""
        if markup == self._shown:
            return False
        return self.show(Content.from_markup(markup), key=markup, layout=layout)
