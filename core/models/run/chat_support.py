"""UI-free pieces of the chat pane: a plan for a model fitted here, sampling typed as text,
the measured-vs-predicted line, load progress and where a saved conversation goes.

Kept out of the pane so they can be tested without a terminal and reused by the CLI.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from rigdeck.core.config import ModelSettings
from rigdeck.core.errors import RunError
from rigdeck.core.models.fit.budget import budget_from_snapshot
from rigdeck.core.models.fit.engine import fit
from rigdeck.core.models.fit.placement import Placement
from rigdeck.core.models.fit.settings import RunSettings
from rigdeck.core.models.run.plan import (
    GenerationStats,
    LoadStats,
    RunPlan,
    Sampling,
    plan_from_placement,
)
from rigdeck.core.telemetry.snapshot import Snapshot
from rigdeck.core.units import format_bytes

# How much of the whole load each phase stands for, so one bar moves forward only.
_PHASE_SPAN = {"reading": (0.0, 0.05), "loading": (0.05, 0.95), "warming": (0.95, 1.0)}
_PHASE_WORDS = {
    "reading": "reading the header",
    "loading": "loading weights",
    "warming": "warming up",
}


def run_settings(models: ModelSettings) -> RunSettings:
    """The fit's settings from the user's [models] config (context, KV cache, flash attention)."""
    flash = {"auto": None, "on": True, "off": False}.get(models.flash_attn)
    kv = models.kv_type
    # A quantized V cache needs flash attention; with it off, only K can be quantized.
    type_v = kv if flash is not False else "f16"
    return RunSettings(n_ctx=models.context, type_k=kv, type_v=type_v, flash_attn=flash)


@dataclass(frozen=True)
class FittedPlan:
    plan: RunPlan
    placement: Placement | None
    note: str
    """One line about the placement for the status line ("" when there is nothing to say)."""


def fit_here(
    path: str | os.PathLike[str], snapshot: Snapshot | None, models: ModelSettings
) -> FittedPlan:
    """Read the header and fit the model to this machine; blocking (reads the file).

    Without a machine reading yet there is no budget to fit against: the model is loaded on
    the CPU with the configured context and no prediction, and the note says so.
    """
    from rigdeck.core.models.format.gguf import read_gguf
    from rigdeck.core.models.format.model_info import ModelInfo

    settings = run_settings(models)
    info = ModelInfo.from_header(read_gguf(path))
    if snapshot is None:
        plan = RunPlan(str(path), n_ctx=models.context)
        return FittedPlan(plan, None, "no machine reading yet: CPU only, no prediction")
    from rigdeck.core.models.fit.speed import load_or_measure_cpu

    budget = budget_from_snapshot(snapshot, calibration=load_or_measure_cpu())
    placement = fit(info, budget, settings)
    note = "" if placement.fits else f"the fit says it may not fit: {placement.why}"
    return FittedPlan(plan_from_placement(path, placement), placement, note)


def parse_sampling(temperature: str, top_p: str, max_tokens: str, seed: str) -> Sampling:
    """Sampling from the options form; one line naming the field when a value is wrong."""

    def number(name: str, text: str, low: float, high: float) -> float:
        try:
            value = float(text.strip())
        except ValueError:
            raise RunError(f"{name} must be a number, not {text.strip()!r}") from None
        if not low <= value <= high:
            raise RunError(f"{name} must be between {low:g} and {high:g}, not {value:g}")
        return value

    count = number("max tokens", max_tokens, 1, 1 << 20)
    if count != int(count):
        raise RunError(f"max tokens must be a whole number, not {max_tokens.strip()}")
    seed_text = seed.strip().lower()
    if seed_text in ("", "random", "none", "-1"):
        seed_value = None
    elif re.fullmatch(r"\d+", seed_text):
        seed_value = int(seed_text)
    else:
        raise RunError(f"seed must be a whole number or empty for random, not {seed.strip()!r}")
    return Sampling(
        temperature=number("temperature", temperature, 0.0, 5.0),
        top_p=number("top-p", top_p, 0.0, 1.0),
        max_tokens=int(count),
        seed=seed_value,
    )


def describe_sampling(s: Sampling) -> str:
    seed = "random" if s.seed is None else str(s.seed)
    return f"temp {s.temperature:g} · top-p {s.top_p:g} · max {s.max_tokens} · seed {seed}"


def load_fraction(phase: str, fraction: float) -> float:
    """The whole load's progress (0..1) from a phase and how far into it the load is."""
    start, end = _PHASE_SPAN.get(phase, (0.0, 1.0))
    return start + (end - start) * min(max(fraction, 0.0), 1.0)


def progress_text(name: str, phase: str, fraction: float) -> str:
    done = load_fraction(phase, fraction)
    width = 20
    filled = round(done * width)
    bar = "█" * filled + "░" * (width - filled)
    return f"loading {name}  {bar} {done:4.0%}  {_PHASE_WORDS.get(phase, phase)}"


def _gb(n: int | None) -> str:
    return format_bytes(n) if n is not None else "?"


def measured_line(plan: RunPlan, load: LoadStats, reply: GenerationStats | None = None) -> str:
    """ "predicted 5.1 GiB / measured 5.0 GiB, 38 tok/s (predicted 41)" for a loaded model.

    The GPU figure is what NVML charges to this process (llama.cpp's own buffer sizes where
    NVML cannot see it); the host figure is the resident memory the load added.
    """
    parts: list[str] = []
    gpu_measured = (
        load.gpu_bytes if load.gpu_bytes is not None else (load.device_buffer_bytes or None)
    )
    if plan.predicted_vram_bytes or gpu_measured:
        parts.append(
            f"GPU predicted {_gb(plan.predicted_vram_bytes)} / measured {_gb(gpu_measured)}"
        )
    label = "RAM " if parts else ""
    parts.append(
        f"{label}predicted {_gb(plan.predicted_ram_bytes)}"
        f" / measured {_gb(load.host_rss_delta_bytes)}"
    )
    line = " · ".join(parts)
    if reply is not None and reply.decode_tps:
        line += f", {reply.decode_tps:.0f} tok/s"
    elif reply is None:
        line += ", tok/s after the first reply"
    if plan.predicted_decode_tps:
        line += f" (predicted {plan.predicted_decode_tps:.0f})"
    return line


def reply_line(stats: GenerationStats) -> str:
    """One line about a finished reply: tokens, speeds, why it ended."""
    speeds = []
    if stats.prompt_tps:
        speeds.append(f"prompt {stats.prompt_tps:.0f} tok/s")
    if stats.decode_tps:
        speeds.append(f"decode {stats.decode_tps:.1f} tok/s")
    ended = {"stop": "done", "length": "hit max tokens", "cancelled": "stopped"}[
        stats.finish_reason
    ]
    return f"{stats.decode_tokens} tokens, {', '.join(speeds) or 'no timing'} · {ended}"


def conversation_path(folder: Path, model_path: str, when: datetime, suffix: str) -> Path:
    """Where a saved chat goes: ``<folder>/<time>-<model><suffix>``.

    The suffix is appended, not swapped in: model names carry dots ("...Instruct.Q4_1").
    """
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(model_path).stem).strip("-") or "model"
    return folder / f"{when.strftime('%Y%m%d-%H%M%S')}-{stem}{suffix}"


def chats_dir() -> Path:
    from rigdeck.core.config import data_dir

    return data_dir() / "chats"
