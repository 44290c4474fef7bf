"""The chat pane's reply and conversation keys: send, regenerate, stop, clear, copy, save.

A reply streams in a worker (``streaming.py``) while the pane is ``Streaming``; keys that need the
model to themselves (clear, regenerate, serve) wait for the reply they stop to end.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Literal

from textual import on, work
from textual.widgets import TextArea
from textual.worker import get_current_worker

from rigdeck.core.errors import RigdeckError
from rigdeck.core.models.run.chat_runner import ReplyStream
from rigdeck.core.models.run.chat_support import chats_dir, conversation_path
from rigdeck.core.models.run.session import ChatSession
from rigdeck.tui.panes.chat.base import ChatPaneBase
from rigdeck.tui.panes.chat.state import Loading, Ready, Serving, Streaming, loaded_model
from rigdeck.tui.panes.chat.status import Measured, ended, reply_line
from rigdeck.tui.panes.chat.streaming import ReplyDone, drain_interval
from rigdeck.tui.widgets.chat_message import ChatMessageView
from rigdeck.tui.widgets.chat_options import ChatOptions


class ChatReplies(ChatPaneBase):
    """Replies and the conversation; see ``ChatPane``."""

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
        interval = drain_interval(state.model.plan.n_threads, os.cpu_count())
        self._drain_timer = self.set_interval(interval, self._drain)
        start = partial(session.generate, text) if kind == "send" else session.regenerate
        self._reply(start)

    @work(thread=True, exclusive=True, group="chat-reply", exit_on_error=False)
    def _reply(self, start: Callable[[], ReplyStream]) -> None:
        worker = get_current_worker()
        reply = self._streamer.run(start, lambda: worker.is_cancelled)
        self.post_message(ReplyDone(reply))

    @on(ReplyDone)
    async def _reply_done(self, message: ReplyDone) -> None:
        if self._drain_timer is not None:
            self._drain_timer.stop()
            self._drain_timer = None
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
            line = reply_line(stats)
            if self._session is not None and (dropped := self._session.last_dropped):
                turns = "turn" if dropped == 1 else "turns"
                line += f" · the oldest {dropped} {turns} no longer fit the context: dropped"
            self._set_activity(line)
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
