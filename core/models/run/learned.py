"""Predictions that converge on what this machine really does: the fit's figures blended with
the speeds measured by earlier runs of the same model, settings and machine (run history)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, replace

from rigdeck.core.errors import RigdeckError
from rigdeck.core.models.run.history import RunHistory, RunRecord, settings_key
from rigdeck.core.models.run.plan import RunPlan

# The newest runs that count: a machine's speed drifts (updates, thermal paste, neighbours).
RECENT_RUNS = 5


@dataclass(frozen=True)
class Learned:
    """Measured speeds of earlier runs like this one, and how many runs they come from."""

    prompt_tps: float | None
    decode_tps: float | None
    runs: int


def blend(predicted: float | None, measured: float | None, runs: int) -> float | None:
    """The geometric blend of a prediction and ``runs`` measurements: each run counts as much as
    the model, so one run halves the error and five leave a sixth of it."""
    if not measured or measured <= 0:
        return predicted
    if not predicted or predicted <= 0:
        return measured
    weight = runs / (runs + 1)
    return math.exp((1 - weight) * math.log(predicted) + weight * math.log(measured))


def learned_from(records: Sequence[RunRecord]) -> Learned:
    recent = list(records)[:RECENT_RUNS]
    prompts = [r.measured_prompt_tps for r in recent if r.measured_prompt_tps]
    decodes = [r.measured_decode_tps for r in recent if r.measured_decode_tps]
    return Learned(
        statistics.median(prompts) if prompts else None,
        statistics.median(decodes) if decodes else None,
        max(len(prompts), len(decodes)),
    )


def learned_speeds(history: RunHistory, plan: RunPlan, machine_key: str) -> Learned:
    """What runs of ``plan``'s model with its settings measured on this machine, newest first."""
    key = settings_key(plan.settings())
    try:
        records = history.runs(plan.model_path, limit=50)
    except RigdeckError:
        return Learned(None, None, 0)
    same = [
        r
        for r in records
        if r.outcome == "ok"
        and r.machine is not None
        and r.machine.key == machine_key
        and settings_key(r.settings) == key
    ]
    return learned_from(same)


def with_learned(plan: RunPlan, learned: Learned) -> RunPlan:
    """``plan`` with its predicted speeds moved toward what earlier runs measured."""
    if learned.runs == 0:
        return plan
    return replace(
        plan,
        predicted_prompt_tps=blend(plan.predicted_prompt_tps, learned.prompt_tps, learned.runs),
        predicted_decode_tps=blend(plan.predicted_decode_tps, learned.decode_tps, learned.runs),
    )
