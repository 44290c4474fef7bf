"""Serving the chat's model over HTTP instead of chatting with it here, in worker threads.

One copy of the weights at a time: serving unloads the chat's model first (the server is
another process with its own copy), and stopping the server loads it here again. The served run
is recorded and its limitations worded exactly as `rigdeck serve` records and words them.
"""

from __future__ import annotations

from collections.abc import Callable

from textual.message import Message

from rigdeck.core.errors import RigdeckError
from rigdeck.core.models.run.chat_runner import ChatRunner, LoadedChat, Served, ServedChat
from rigdeck.core.models.run.plan import RunPlan
from rigdeck.tui import words


class ServeStarted(Message, bubble=False):
    """The server answers (``served``), or could not start (``error``)."""

    def __init__(self, plan: RunPlan, served: Served | None, error: str | None = None) -> None:
        super().__init__()
        self.plan, self.served, self.error = plan, served, error


class ServeStopped(Message, bubble=False):
    """A server the user stopped has exited: its memory and port are free again."""

    def __init__(self, server: ServedChat) -> None:
        super().__init__()
        self.server = server


def start_serving(
    runner: ChatRunner, plan: RunPlan, model: LoadedChat, post: Callable[[Message], object]
) -> None:
    """The worker's body (blocking): free the chat's copy, start the server, report back."""
    model.close()  # the server loads its own copy; two copies could not fit a big model
    try:
        served = runner.serve(plan)
    except RigdeckError as exc:
        post(ServeStarted(plan, None, str(exc)))
        return
    post(ServeStarted(plan, served))


def stop_serving(
    server: ServedChat, post: Callable[[Message], object] | None, timeout: float = 10.0
) -> None:
    """The worker's body (blocking): stop the server; report back when ``post`` is given."""
    server.stop(timeout=timeout)
    if post is not None:
        post(ServeStopped(server))


def serving_offer(served: Served) -> str:
    """Where the server is, how to stop it, and what it could not follow of the fit."""
    server = served.server
    lines = [
        f"serving at {server.url} (model {server.model_alias!r}) · the chat's copy is"
        " unloaded so the server has the memory · e stops serving and reloads it here"
    ]
    lines += (words.serve_limitation(gap) for gap in served.limitations)
    return "\n".join(lines)
