"""A ChatRunner that follows a script instead of running llama.cpp: the chat pane's own seam.

It answers every reply with the same pieces, can hold a reply after its first piece until the
test lets it go (to look at the pane mid-stream), fails the loads the test says should fail, and
"serves" with a handle that only remembers whether it was stopped. Everything it was asked is
kept, so a test can check what the pane asked for.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from rigdeck.core.models.run.chat_runner import FittedPlan, ReplyFinished, Served
from rigdeck.core.models.run.plan import (
    ChatMessage,
    GenerationStats,
    LoadError,
    LoadStats,
    ProgressCallback,
    RunPlan,
    Sampling,
)
from rigdeck.core.models.run.serve_limits import ServeLimitation
from rigdeck.core.telemetry.snapshot import Snapshot

MiB = 1 << 20
Finish = Literal["stop", "length", "cancelled"]


class ScriptedReply:
    """A reply that yields the script's pieces, one "token" each."""

    def __init__(
        self,
        pieces: Sequence[str],
        finish: Finish,
        hold: threading.Event | None,
        on_finish: ReplyFinished | None,
        prompt_tokens: int,
    ) -> None:
        self.decode_tokens = 0
        self.stats: GenerationStats | None = None
        self._cancel = threading.Event()
        self._pieces = self._run(list(pieces), finish, hold, on_finish, prompt_tokens)

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        return next(self._pieces)

    def cancel(self) -> None:
        self._cancel.set()

    def _run(
        self,
        pieces: list[str],
        finish: Finish,
        hold: threading.Event | None,
        on_finish: ReplyFinished | None,
        prompt_tokens: int,
    ) -> Iterator[str]:
        text = ""
        ended: Finish = finish
        for i, piece in enumerate(pieces):
            if i == 1 and hold is not None:
                while not hold.wait(0.01):  # held until the test lets go, or stopped
                    if self._cancel.is_set():
                        break
            if self._cancel.is_set():
                ended = "cancelled"
                break
            self.decode_tokens += 1
            text += piece
            yield piece
        self.stats = GenerationStats(
            prompt_tokens=prompt_tokens,
            prompt_tokens_evaluated=prompt_tokens,
            decode_tokens=self.decode_tokens,
            prompt_tps=400.0,
            decode_tps=80.0,
            wall_decode_tps=78.0,
            time_to_first_token_s=0.05,
            total_s=0.2,
            finish_reason=ended,
            timing_source="measured",
        )
        if on_finish is not None:
            on_finish(text, self.stats)


class ScriptedModel:
    def __init__(self, plan: RunPlan, runner: ScriptedRunner) -> None:
        self.plan = plan
        self.load_stats = LoadStats(
            load_seconds=0.3, host_rss_delta_bytes=120 * MiB, gpu_bytes=None
        )
        self.closed = False
        self._runner = runner

    def generate(
        self,
        messages: Sequence[ChatMessage],
        sampling: Sampling | None = None,
        *,
        on_finish: ReplyFinished | None = None,
    ) -> ScriptedReply:
        self._runner.asked.append((tuple(messages), sampling))
        r = self._runner
        return ScriptedReply(r.reply, r.finish, r.hold, on_finish, prompt_tokens=len(messages))

    def close(self) -> None:
        self.closed = True


@dataclass
class ScriptedServer:
    url: str
    model_alias: str
    running: bool = True

    def stop(self, timeout: float = 10.0) -> None:
        self.running = False


@dataclass
class ScriptedRunner:
    reply: Sequence[str] = ("Hello", " there", ", friend.")
    finish: Finish = "stop"
    hold: threading.Event | None = None
    """When set, each reply waits after its first piece until this event is set."""
    fails: Callable[[RunPlan], LoadError | None] = lambda plan: None
    limitations: tuple[ServeLimitation, ...] = ()
    loads: list[RunPlan] = field(default_factory=list)
    models: list[ScriptedModel] = field(default_factory=list)
    servers: list[ScriptedServer] = field(default_factory=list)
    asked: list[tuple[tuple[ChatMessage, ...], Sampling | None]] = field(default_factory=list)

    def plan_for(self, path: Path, snapshot: Snapshot | None) -> FittedPlan:
        plan = RunPlan(
            str(path), n_ctx=2048, predicted_ram_bytes=300 * MiB, predicted_decode_tps=90.0
        )
        return FittedPlan(plan, None)

    def load(
        self, plan: RunPlan, *, on_progress: ProgressCallback, cancel: threading.Event
    ) -> ScriptedModel:
        self.loads.append(plan)
        on_progress("reading", 1.0)
        error = self.fails(plan)
        if error is not None:
            raise error
        on_progress("loading", 1.0)
        model = ScriptedModel(plan, self)
        self.models.append(model)
        return model

    def serve(self, plan: RunPlan) -> Served:
        server = ScriptedServer(f"http://127.0.0.1:{8100 + len(self.servers)}/v1", "scripted")
        self.servers.append(server)
        return Served(server, self.limitations, run_id=41)
