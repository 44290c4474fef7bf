"""One message of a chat, rendered as Markdown, with who said it in its border title."""

from __future__ import annotations

from typing import Literal

from textual.widgets import Markdown

ChatRole = Literal["system", "user", "assistant"]

_TITLES: dict[str, str] = {"system": "system", "user": "you", "assistant": "model"}


class ChatMessageView(Markdown):
    """A chat turn. The assistant's grows while it streams (``Markdown.get_stream``)."""

    DEFAULT_CSS = """
    ChatMessageView {
        margin: 0 0 1 0;
        padding: 0 1;
        border: round $panel;
        border-title-color: $text-muted;
        background: transparent;
    }
    ChatMessageView.-user { border: round $primary 60%; border-title-color: $primary; }
    ChatMessageView.-assistant { border: round $secondary 60%; border-title-color: $secondary; }
    ChatMessageView.-system { border: round $panel; color: $text-muted; }
    ChatMessageView.-stopped { border-subtitle-color: $warning; }
    ChatMessageView > MarkdownBlock:last-child { margin-bottom: 0; }
    """

    def __init__(self, role: ChatRole, text: str = "", *, id: str | None = None) -> None:
        super().__init__(text, id=id, classes=f"-{role}")
        self.role: ChatRole = role
        self.border_title = _TITLES[role]
