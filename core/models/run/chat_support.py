"""UI-free pieces of the chat pane: a plan for a model fitted here, sampling typed as text,
how far a load has come, and where a saved conversation goes.

Kept out of the pane so they can be tested without a terminal; the words are the pane's.
"""

from __future__ import annotations

import os
import re
from datetime import datetime
from pathlib import Path

from rigdeck.core.config import ModelSettings
from rigdeck.core.errors import RunError
from rigdeck.core.models.fit.budget import machine_budget
from rigdeck.core.models.fit.settings import build_run_settings
from rigdeck.core.models.format.model_reader import read_model_info
from rigdeck.core.models.run.chat_runner import FittedPlan
from rigdeck.core.models.run.fitted import fit_and_plan
from rigdeck.core.models.run.plan import RunPlan, Sampling
from rigdeck.core.telemetry.snapshot import Snapshot

# How much of the whole load each phase stands for, so one bar moves forward only.
_PHASE_SPAN = {"reading": (0.0, 0.05), "loading": (0.05, 0.95), "warming": (0.95, 1.0)}


def fit_here(
    path: str | os.PathLike[str], snapshot: Snapshot | None, models: ModelSettings
) -> FittedPlan:
    """Read the header and fit the model to this machine; blocking (reads the file).

    The same path as `rigdeck run`: the [models] config through the one settings builder, the
    budget from this reading and the cached calibrations (numpy's, llama.cpp's), the fit and
    the plan (which loads with the threads the speed was predicted for). Without a machine
    reading yet there is no budget to fit against: the plan loads the model on the CPU with
    the configured context and no prediction (``placement`` None).
    """
    from rigdeck.core.models.fit.speed import load_or_measure_cpu

    settings = build_run_settings(models)
    info = read_model_info(path)
    if snapshot is None:
        return FittedPlan(RunPlan(str(path), n_ctx=settings.n_ctx), None)
    from rigdeck.core.models.run.calibrate import load_or_calibrate

    cal = load_or_measure_cpu()
    budget = machine_budget(snapshot, calibration=cal, rates=load_or_calibrate(numpy=cal))
    fitted = fit_and_plan(path, settings, budget, model=info)
    return FittedPlan(fitted.plan, fitted.placement)


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


def load_fraction(phase: str, fraction: float) -> float:
    """The whole load's progress (0..1) from a phase and how far into it the load is."""
    start, end = _PHASE_SPAN.get(phase, (0.0, 1.0))
    return start + (end - start) * min(max(fraction, 0.0), 1.0)


def conversation_path(folder: Path, model_path: str, when: datetime, suffix: str) -> Path:
    """Where a saved chat goes: ``<folder>/<time>-<model><suffix>``.

    The suffix is appended, not swapped in: model names carry dots ("...Instruct.Q4_1").
    """
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(model_path).stem).strip("-") or "model"
    return folder / f"{when.strftime('%Y%m%d-%H%M%S')}-{stem}{suffix}"


def chats_dir() -> Path:
    from rigdeck.core.config import data_dir

    return data_dir() / "chats"
