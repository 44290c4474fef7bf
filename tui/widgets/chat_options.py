"""The chat's options: a system prompt and the sampling settings, typed as text."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Input, Label, TextArea

from rigdeck.core.models.run.chat_support import parse_sampling
from rigdeck.core.models.run.plan import Sampling


class ChatOptions(Vertical):
    """Hidden until asked for; read when a message is sent, so edits apply to the next reply."""

    DEFAULT_CSS = """
    ChatOptions {
        height: auto;
        border: round $primary;
        border-title-color: $primary;
        padding: 0 1;
    }
    ChatOptions #chat-system { height: 4; border: none; padding: 0; }
    ChatOptions .chat-option-row { height: auto; }
    ChatOptions .chat-option-row Label { padding: 1 1 0 0; width: auto; }
    ChatOptions .chat-option-row Input { width: 1fr; min-width: 8; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.border_title = "system prompt and sampling · applies to the next reply"

    def compose(self) -> ComposeResult:
        defaults = Sampling()
        yield TextArea(id="chat-system", soft_wrap=True, tab_behavior="focus")
        with Horizontal(classes="chat-option-row"):
            yield Label("temperature")
            yield Input(f"{defaults.temperature:g}", id="chat-temperature")
            yield Label("top-p")
            yield Input(f"{defaults.top_p:g}", id="chat-top-p")
            yield Label("max tokens")
            yield Input(str(defaults.max_tokens), id="chat-max-tokens")
            yield Label("seed")
            yield Input("", placeholder="random", id="chat-seed")

    def on_mount(self) -> None:
        self.query_one(
            "#chat-system", TextArea
        ).placeholder = "System prompt (empty: none). Example: You are a terse assistant."

    @property
    def system_prompt(self) -> str:
        return self.query_one("#chat-system", TextArea).text.strip()

    def sampling(self) -> Sampling:
        """The typed settings; raises RunError (one line) naming a field that is wrong."""
        value = {
            name: self.query_one(f"#chat-{name}", Input).value
            for name in ("temperature", "top-p", "max-tokens", "seed")
        }
        return parse_sampling(
            value["temperature"], value["top-p"], value["max-tokens"], value["seed"]
        )

    def set_values(
        self, *, system_prompt: str | None = None, sampling: Sampling | None = None
    ) -> None:
        if system_prompt is not None:
            self.query_one("#chat-system", TextArea).text = system_prompt
        if sampling is not None:
            self.query_one("#chat-temperature", Input).value = f"{sampling.temperature:g}"
            self.query_one("#chat-top-p", Input).value = f"{sampling.top_p:g}"
            self.query_one("#chat-max-tokens", Input).value = str(sampling.max_tokens)
            self.query_one("#chat-seed", Input).value = (
                "" if sampling.seed is None else str(sampling.seed)
            )
