"""Loading a model for the chat, in a worker thread: fit it here if need be, then load it.

The worker reports back only through messages tagged with its load's number, so a load the
user has already replaced can finish (or fail) without touching the pane's state.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from textual.message import Message

from rigdeck.core.models.run.chat_runner import ChatRunner, FittedPlan, LoadedChat
from rigdeck.core.models.run.plan import LoadCancelled, LoadError, RunPlan
from rigdeck.core.models.run.retry import next_placement_down
from rigdeck.core.telemetry.snapshot import Snapshot
from rigdeck.tui.panes.chat.streaming import one_line


class LoadProgress(Message, bubble=False):
    def __init__(self, seq: int, phase: str, fraction: float) -> None:
        super().__init__()
        self.seq, self.phase, self.fraction = seq, phase, fraction

    def can_replace(self, message: Message) -> bool:
        # A queued older reading is stale as soon as a newer one arrives.
        return isinstance(message, LoadProgress) and message.seq == self.seq


class PlanReady(Message, bubble=False):
    """The model was fitted here (only sent when the load started without a plan)."""

    def __init__(self, seq: int, fitted: FittedPlan) -> None:
        super().__init__()
        self.seq, self.fitted = seq, fitted


class Loaded(Message, bubble=False):
    def __init__(self, seq: int, model: LoadedChat) -> None:
        super().__init__()
        self.seq, self.model = seq, model


class LoadFailed(Message, bubble=False):
    """``retry``: the next placement down, when a smaller one could change the outcome."""

    def __init__(self, seq: int, error: str, retry: RunPlan | None) -> None:
        super().__init__()
        self.seq, self.error, self.retry = seq, error, retry


def load_for_chat(
    runner: ChatRunner,
    seq: int,
    path: Path,
    plan: RunPlan | None,
    snapshot: Snapshot | None,
    cancel: threading.Event,
    previous: LoadedChat | None,
    post: Callable[[Message], object],
) -> None:
    """The worker's body (blocking); every outcome is posted, none raised."""
    if previous is not None:
        previous.close()  # the previous model's memory is back before the next one loads
    try:
        if plan is None:
            fitted = runner.plan_for(path, snapshot)
            post(PlanReady(seq, fitted))
            plan = fitted.plan

        def progress(phase: str, fraction: float) -> None:
            post(LoadProgress(seq, phase, fraction))

        model = runner.load(plan, on_progress=progress, cancel=cancel)
    except LoadCancelled:
        return
    except LoadError as exc:
        retry = next_placement_down(exc)
        post(LoadFailed(seq, str(exc), retry.plan if retry else None))
        return
    except Exception as exc:  # always report back, or the pane would stay "loading"
        post(LoadFailed(seq, one_line(exc), None))
        return
    if cancel.is_set():
        model.close()
        return
    post(Loaded(seq, model))
