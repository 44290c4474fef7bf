"""What the chat pane is doing, as one value: idle, loading, ready, streaming, serving or failed.

Each state carries exactly what is true in it (a model exists only while ready or streaming, a
server only while serving), so no combination of flags can contradict another.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import ClassVar, Literal

from rigdeck.core.models.run.chat_runner import LoadedChat, Served
from rigdeck.core.models.run.plan import RunPlan

Phase = Literal["idle", "loading", "ready", "streaming", "serving", "failed"]


@dataclass(frozen=True)
class Idle:
    """No model here and nothing under way (before the first load, or after an unload)."""

    phase: ClassVar[Phase] = "idle"


@dataclass(frozen=True)
class Loading:
    """Fitting (``plan`` None) or loading ``plan``; ``seq`` tells this load's reports apart
    from an older one still winding down, ``cancel`` makes that one give way."""

    phase: ClassVar[Phase] = "loading"
    label: str
    seq: int
    cancel: threading.Event
    plan: RunPlan | None = None


@dataclass(frozen=True)
class Ready:
    """A model in memory here, waiting for a message."""

    phase: ClassVar[Phase] = "ready"
    label: str
    model: LoadedChat


@dataclass(frozen=True)
class Streaming:
    """A reply from ``model`` is being generated and drawn."""

    phase: ClassVar[Phase] = "streaming"
    label: str
    model: LoadedChat


@dataclass(frozen=True)
class Serving:
    """``plan`` is being served instead of chatted with here (the chat's copy is unloaded).

    ``served`` is None while the server starts; ``stopping`` once it was asked to stop, after
    which the plan loads here again.
    """

    phase: ClassVar[Phase] = "serving"
    label: str
    plan: RunPlan
    served: Served | None = None
    stopping: bool = False


@dataclass(frozen=True)
class Failed:
    """The last load failed with ``error``; ``retry`` is the next placement down, if any helps."""

    phase: ClassVar[Phase] = "failed"
    label: str
    error: str
    retry: RunPlan | None = None


ChatState = Idle | Loading | Ready | Streaming | Serving | Failed


def loaded_model(state: ChatState) -> LoadedChat | None:
    """The model in memory here, in the states that have one."""
    return state.model if isinstance(state, Ready | Streaming) else None


def offers(state: ChatState, action: str, *, has_conversation: bool) -> bool:
    """Whether the footer offers the pane's ``action`` in ``state``."""
    served = isinstance(state, Serving) and state.served is not None
    if action == "demo":
        return isinstance(state, Idle | Failed)
    if action == "retry":
        return isinstance(state, Failed) and state.retry is not None
    if action == "stop":
        return isinstance(state, Streaming)
    if action in ("regenerate", "clear", "copy", "save"):
        return has_conversation
    if action == "serve":
        return served or isinstance(state, Ready | Streaming)
    if action == "unload":
        return served or isinstance(state, Ready | Streaming | Loading)
    return True
