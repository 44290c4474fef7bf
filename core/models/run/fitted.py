"""A model fitted to a budget and the plan that loads it that way: header -> ModelInfo -> fit ->
RunPlan, in one function.

`rigdeck.core.models.launch` is the door every face uses; this is the same path at the layer the
chat runner lives on (run/ may not import launch), so the chat pane's fit and `rigdeck run`'s
are one function, not two that agree today.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

from rigdeck.core.machine import fingerprint
from rigdeck.core.models.fit.budget import HardwareBudget
from rigdeck.core.models.fit.engine import fit
from rigdeck.core.models.fit.placement import Placement
from rigdeck.core.models.fit.settings import RunSettings
from rigdeck.core.models.format.model_info import ModelInfo
from rigdeck.core.models.format.model_reader import read_model_info
from rigdeck.core.models.run.history import RunHistory
from rigdeck.core.models.run.learned import learned_speeds, with_learned
from rigdeck.core.models.run.plan import RunPlan, plan_from_placement


@dataclass(frozen=True)
class FittedModel:
    """A model ready to load: what it is, its budget and settings, the placement, the plan."""

    path: Path
    model: ModelInfo
    budget: HardwareBudget
    settings: RunSettings
    placement: Placement
    plan: RunPlan

    @property
    def fits(self) -> bool:
        return self.placement.fits


def fit_and_plan(
    path: str | os.PathLike[str],
    settings: RunSettings,
    budget: HardwareBudget,
    *,
    model: ModelInfo | None = None,
    seed: int | None = None,
    history: RunHistory | None = None,
) -> FittedModel:
    """Fit the model at ``path`` (``model``: its header, already read) and plan it that way.

    The plan is built even when the placement does not fit: the caller decides whether to say
    no or to try anyway. It loads with the threads the fit predicted the speed for. With
    ``history``, the predicted speeds (plan and placement) move toward what earlier runs of the
    same model and settings measured on this machine.
    """
    file = Path(path)
    info = model if model is not None else read_model_info(file)
    placement = fit(info, budget, settings)
    plan = plan_from_placement(file, placement)
    if seed is not None:
        plan = replace(plan, seed=seed)
    if history is not None:
        plan = with_learned(plan, learned_speeds(history, plan, fingerprint().key))
        placement = replace(
            placement,
            prompt_tps=plan.predicted_prompt_tps or placement.prompt_tps,
            decode_tps=plan.predicted_decode_tps or placement.decode_tps,
        )
    return FittedModel(file, info, budget, settings, placement, plan)
