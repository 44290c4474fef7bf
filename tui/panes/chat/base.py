"""What every part of the chat pane shares: its state, its conversation, its widgets, drawing.

``ChatPane`` (``pane.py``) is this plus the keys that load and serve (there) and the keys that
reply and keep the conversation (``replies.py``); the workers' bodies live in ``loading.py``,
``streaming.py`` and ``serving.py``, the words in ``status.py``.
"""

from __future__ import annotations

from functools import partial

from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.events import Show
from textual.timer import Timer
from textual.widgets import TextArea

from rigdeck.core.models.run.chat_runner import ChatRunner, LoadedChat, ServedChat
from rigdeck.core.models.run.session import ChatSession
from rigdeck.core.models.sources.local import demo_model_path
from rigdeck.tui.panes.chat.serving import stop_serving
from rigdeck.tui.panes.chat.state import ChatState, Idle, Streaming, loaded_model
from rigdeck.tui.panes.chat.status import ChatOffer, ChatStatus, Measured, idle_offer, status_view
from rigdeck.tui.panes.chat.streaming import ReplyStreamer
from rigdeck.tui.widgets.chat_message import ChatMessageView
from rigdeck.tui.widgets.chat_options import ChatOptions


class ChatPaneBase(Vertical):
    """The chat pane's state and drawing; see ``ChatPane`` for what it does."""

    def __init__(self, runner: ChatRunner | None = None, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._runner = runner
        self._state: ChatState = Idle()
        self._session: ChatSession | None = None
        self._measured: Measured | None = None
        self._activity = ""
        self._load_seq = 0
        self._streamer = ReplyStreamer()
        self._reply_view: ChatMessageView | None = None
        self._reply_user_view: ChatMessageView | None = None
        self._after_reply: list[str] = []
        self._drain_timer: Timer | None = None

    # -- public contract -------------------------------------------------------------------------
    @property
    def runner(self) -> ChatRunner:
        """What loads, replies and serves; llama.cpp with the user's [models] settings unless
        the pane was given one."""
        if self._runner is None:
            from rigdeck.core.models.run.llama_chat import LlamaChatRunner

            self._runner = LlamaChatRunner(self.app.settings.models)  # type: ignore[attr-defined]
        return self._runner

    @runner.setter
    def runner(self, runner: ChatRunner) -> None:
        self._runner = runner

    @property
    def state(self) -> ChatState:
        return self._state

    @property
    def session(self) -> ChatSession | None:
        """The conversation (it outlives a model: unloading keeps it until it is cleared)."""
        return self._session

    # -- layout ----------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield ChatStatus("", id="chat-status")
        yield ChatOffer("", id="chat-offer")
        yield VerticalScroll(id="chat-log")
        yield ChatOptions(id="chat-options")
        area = TextArea(id="chat-input", soft_wrap=True, tab_behavior="focus")
        area.border_title = "message · ctrl+s or F5 sends · Enter is a new line · Esc leaves"
        yield area

    def on_mount(self) -> None:
        log = self.query_one("#chat-log", VerticalScroll)
        log.can_focus = True
        # Anchored: follows the newest text while the user is at the bottom, stays put once they
        # scroll up, and follows again when they come back down.
        log.anchor()
        self._show_idle()

    def on_show(self, event: Show) -> None:
        self.focus_default()

    def focus_default(self) -> None:
        """Put focus where the next key makes sense when the pane is switched to."""
        # With no model there is nothing to type to, and the input would swallow pane keys (4).
        if loaded_model(self._state) is None:
            self.query_one("#chat-log").focus()
            return
        focused = self.screen.focused
        if focused is None or self not in focused.ancestors:
            self.query_one("#chat-input").focus()

    async def _drain(self) -> None:
        # The timer's tick while a reply streams: draw what arrived, say how fast it comes.
        line = await self._streamer.drain()
        if line is not None and isinstance(self._state, Streaming):
            self._set_activity(line)

    def _enter(self, state: ChatState) -> None:
        self._state = state
        self._render_status()
        self.refresh_bindings()

    def _close_model(self, model: LoadedChat) -> None:
        self.run_worker(model.close, thread=True, group="chat-close", exit_on_error=False)

    def _stop_server(self, server: ServedChat, *, report: bool) -> None:
        post = self.post_message if report else None
        body = partial(stop_serving, server, post)
        self.run_worker(body, thread=True, group="chat-serve-stop", exit_on_error=False)

    # -- focus -----------------------------------------------------------------------------------
    def action_leave_input(self) -> None:
        self.query_one("#chat-log").focus()

    def action_focus_input(self) -> None:
        self.query_one("#chat-input").focus()

    def action_options(self) -> None:
        self.toggle_class("-options")
        if self.has_class("-options"):
            self.query_one("#chat-system").focus()
        else:
            self.query_one("#chat-input").focus()

    # -- drawing ---------------------------------------------------------------------------------
    def _add_view(self, view: ChatMessageView) -> None:
        self.query_one("#chat-log", VerticalScroll).mount(view)

    def _set_activity(self, text: str) -> None:
        self._activity = text
        self._render_status()

    def _render_status(self) -> None:
        sampling = self._session.sampling if self._session is not None else None
        view = status_view(self._state, self._measured, sampling, self._activity)
        self.query_one(ChatStatus).show(view)

    def _set_offer(self, text: str) -> None:
        self.query_one(ChatOffer).show(text)

    def _show_idle(self, keep_offer: bool = False) -> None:
        if not keep_offer:
            self._set_offer(idle_offer(demo_model_path() is not None))
        self._render_status()
