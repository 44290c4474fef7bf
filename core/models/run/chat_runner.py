"""What the chat pane asks of the model machinery, as a protocol: fit, load, reply, serve.

The pane is given a ``ChatRunner`` and drives everything through it, so it can be tested with a
runner of its own and never touches llama.cpp or a server process directly. The real runner is
``rigdeck.core.models.run.llama_chat.LlamaChatRunner``.

Every call on a runner blocks (it reads files, loads weights, starts processes): callers run them
in worker threads. Stopping and unloading live on what the calls return: ``ReplyStream.cancel``,
``LoadedChat.close``, ``ServedChat.stop``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from rigdeck.core.models.fit.placement import Placement
from rigdeck.core.models.run.plan import (
    ChatMessage,
    GenerationStats,
    LoadStats,
    ProgressCallback,
    RunPlan,
    Sampling,
)
from rigdeck.core.models.run.serve_limits import ServeLimitation
from rigdeck.core.telemetry.snapshot import Snapshot

ReplyFinished = Callable[[str, GenerationStats], None]


@dataclass(frozen=True)
class FittedPlan:
    """The plan for a model fitted here. ``placement`` is None when there was no machine
    reading to fit against: the plan then loads on the CPU with no prediction."""

    plan: RunPlan
    placement: Placement | None

    @property
    def fits(self) -> bool:
        return self.placement is None or self.placement.fits


class ReplyStream(Protocol):
    """A reply being generated: iterate for text pieces; ``stats`` is set once it ends."""

    @property
    def decode_tokens(self) -> int:
        """Tokens decoded so far (read from another thread while the reply streams)."""
        ...

    @property
    def stats(self) -> GenerationStats | None: ...

    def __iter__(self) -> Iterator[str]: ...

    def __next__(self) -> str: ...

    def cancel(self) -> None:
        """Stop within one token; the text so far stays the reply."""
        ...


class LoadedChat(Protocol):
    """A model in memory, ready to reply. ``close()`` frees it."""

    @property
    def plan(self) -> RunPlan: ...

    @property
    def load_stats(self) -> LoadStats: ...

    def generate(
        self,
        messages: Sequence[ChatMessage],
        sampling: Sampling | None = None,
        *,
        on_finish: ReplyFinished | None = None,
    ) -> ReplyStream: ...

    def close(self) -> None: ...


class ServedChat(Protocol):
    """A running OpenAI-compatible server. ``url`` is its base URL (``.../v1``)."""

    @property
    def url(self) -> str: ...

    @property
    def model_alias(self) -> str: ...

    @property
    def running(self) -> bool: ...

    def stop(self, timeout: float = 10.0) -> None: ...


@dataclass(frozen=True)
class Served:
    """A plan being served: the server, what it could not follow of the fit, the run's record."""

    server: ServedChat
    limitations: tuple[ServeLimitation, ...]
    run_id: int | None


class ChatRunner(Protocol):
    """Everything the chat pane needs from the model machinery; every call blocks."""

    def plan_for(self, path: Path, snapshot: Snapshot | None) -> FittedPlan:
        """Fit the model at ``path`` to this machine (``snapshot``: its latest reading)."""
        ...

    def load(
        self, plan: RunPlan, *, on_progress: ProgressCallback, cancel: threading.Event
    ) -> LoadedChat:
        """Load ``plan``; raises ``LoadError`` (see ``retry.next_placement_down``) or
        ``LoadCancelled`` once ``cancel`` is set."""
        ...

    def serve(self, plan: RunPlan) -> Served:
        """Serve ``plan`` over HTTP on 127.0.0.1 once it answers; raises ``RunError``."""
        ...
