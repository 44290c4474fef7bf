"""Will this model run here, and how: llama.cpp's memory layout predicted from a GGUF header.

`fit(model, budget, settings)` is pure. It lays the model out the way llama.cpp does (which block
goes to which device, where token_embd and the output projection live, where each layer's KV
cache lives), sizes every buffer llama.cpp will allocate (weights exactly, KV exactly, compute
buffers from the graph's dominant phases), picks the largest GPU layer count (and, for MoE
models, how many blocks keep their experts on the CPU) that leaves a stated margin on every
device, and predicts tokens/s from the bytes each device reads. When nothing fits it says which
device is short by how much and which cheap changes would make it fit.

Terms: ``gpu_layers`` is llama.cpp's ``n_gpu_layers`` — repeating blocks plus one for the output
projection — so ``total_layers`` is blocks + 1 and a run with every block but not the output on
the GPU has ``gpu_layers == total_layers - 1``.
"""

from __future__ import annotations

from dataclasses import replace

from rigdeck.core.models.fit.budget import HardwareBudget
from rigdeck.core.models.fit.layout import gpu_splits, lay_out, resolve_run, search
from rigdeck.core.models.fit.placement import Placement
from rigdeck.core.models.fit.settings import RunSettings
from rigdeck.core.models.fit.suggest import suggestions
from rigdeck.core.models.format.model_info import ModelInfo

# --------------------------------------------------------------------------------------------
# Public entry points


def fit(model: ModelInfo, budget: HardwareBudget, settings: RunSettings) -> Placement:
    """The best placement for this machine, with suggestions when it does not fit well."""
    run = resolve_run(model, settings)
    best = search(model, budget, run, settings)
    if best.verdict != "gpu" or not best.fits:
        best = replace(best, suggestions=suggestions(model, budget, settings, best))
    return best


def place_layers(
    model: ModelInfo,
    budget: HardwareBudget,
    settings: RunSettings,
    gpu_layers: int,
    n_cpu_moe: int = 0,
) -> Placement:
    """The placement for a forced layer count (and experts-on-CPU count), fitting or not."""
    run = resolve_run(model, settings)
    splits = gpu_splits(model, budget, run)
    return lay_out(model, budget, run, gpu_layers, n_cpu_moe, splits)
