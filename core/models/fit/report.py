"""Fit resolved models to a budget and describe the outcome as plain data (for --json and scripts).

The CLI prints these: one fit per model (a bad file in a repo is a row, not a crash), and the
JSON shapes documented in the README. Settings come from `fit.settings.build_run_settings`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rigdeck.core.errors import FitError
from rigdeck.core.models.fit.budget import HardwareBudget
from rigdeck.core.models.fit.engine import fit
from rigdeck.core.models.fit.placement import Placement
from rigdeck.core.models.fit.settings import RunSettings
from rigdeck.core.models.sources.target import FailedModel, RemoteCost, Resolved, ResolvedModel


@dataclass(frozen=True)
class FitResult:
    model: ResolvedModel
    placement: Placement

    @property
    def quant(self) -> str:
        return self.model.quant


def fit_all(
    models: Sequence[Resolved], budget: HardwareBudget, settings: RunSettings
) -> list[FitResult | FailedModel]:
    """Fit every model; with several, one that cannot be fitted becomes a FailedModel row."""
    out: list[FitResult | FailedModel] = []
    for m in models:
        if isinstance(m, FailedModel):
            out.append(m)
            continue
        try:
            out.append(FitResult(m, fit(m.info, budget, settings)))
        except FitError as exc:
            if len(models) == 1:
                raise
            out.append(FailedModel(m.label, m.location, m.quant, m.file_size, str(exc)))
    return out


# --------------------------------------------------------------------------------------------
# JSON


def cost_json(cost: RemoteCost | None) -> dict[str, int] | None:
    return None if cost is None else {"requests": cost.requests, "bytes": cost.bytes}


def model_json(m: ResolvedModel) -> dict[str, Any]:
    info = m.info
    return {
        "name": info.name,
        "architecture": info.architecture,
        "quant": info.quant,
        "file": m.label,
        "location": m.location,
        "parts": list(m.parts),
        "file_size_bytes": m.file_size,
        "weights_bytes": info.weights_bytes,
        "n_params": info.n_params,
        "n_layers": info.n_layer,
        "n_ctx_train": info.n_ctx_train,
        "moe": info.is_moe,
        "repo": m.repo_id,
        "revision": m.revision,
    }


def settings_json(s: RunSettings) -> dict[str, Any]:
    """The settings a placement was made with, as llama.cpp resolves them."""
    return {
        "n_ctx": s.n_ctx,
        "type_k": s.type_k,
        "type_v": s.type_v,
        "flash_attn": s.flash_attn,
        "v_fallback": s.v_fallback,
        "n_batch": s.n_batch,
        "n_ubatch": s.n_ubatch,
        "gpu_margin_bytes": s.gpu_margin_bytes,
        "ram_margin_bytes": s.ram_margin_bytes,
    }


def budget_json(
    budget: HardwareBudget, *, hypothetical_vram: bool, hypothetical_ram: bool
) -> dict[str, Any]:
    return {
        "name": budget.name,
        "hypothetical": {"vram": hypothetical_vram, "ram": hypothetical_ram},
        "gpus": [
            {
                "index": g.index,
                "name": g.name,
                "total_bytes": g.total_bytes,
                "free_bytes": g.free_bytes,
                "bandwidth_bytes_per_s": g.bandwidth_bytes_per_s,
            }
            for g in budget.gpus
        ],
        "ram_total_bytes": budget.ram_total_bytes,
        "ram_available_bytes": budget.ram_available_bytes,
        "cpu_threads": budget.cpu_threads,
        "cpu_bandwidth_bytes_per_s": budget.cpu_bandwidth_bytes_per_s,
    }


def result_json(r: FitResult) -> dict[str, Any]:
    """placement_to_json plus what a script needs beside it: the model, settings, costs."""
    p = r.placement
    data = placement_to_json(p)
    for d, device in zip(data["devices"], p.devices, strict=True):
        d["index"] = device.index
        d["layers"] = device.layers
        d["free_after_bytes"] = device.free_after_bytes
    data.update(
        {
            "file": r.model.label,
            "quant": r.model.quant,
            "file_size_bytes": r.model.file_size,
            "model": model_json(r.model),
            "settings": settings_json(p.settings),
            "n_cpu_moe": p.n_cpu_moe,
            "tensor_split": list(p.tensor_split),
            "margin_bytes": p.margin_bytes,
            "notes": list(p.notes),
            "remote": cost_json(r.model.remote),
        }
    )
    return data


def failed_json(f: FailedModel) -> dict[str, Any]:
    return {
        "file": f.label,
        "location": f.location,
        "quant": f.quant,
        "file_size_bytes": f.file_size,
        "fits": False,
        "verdict": None,
        "error": f.error,
    }


def placement_to_json(p: Placement) -> dict[str, Any]:
    return {
        "fits": p.fits,
        "verdict": p.verdict,
        "gpu_layers": p.gpu_layers,
        "total_layers": p.total_layers,
        "devices": [
            {
                "kind": d.kind,
                "name": d.name,
                "budget_bytes": d.budget_bytes,
                "weights_bytes": d.weights_bytes,
                "kv_bytes": d.kv_bytes,
                "compute_bytes": d.compute_bytes,
                "other_bytes": d.other_bytes,
                "total_bytes": d.total_bytes,
            }
            for d in p.devices
        ],
        "predicted": {"prompt_tps": round(p.prompt_tps, 2), "decode_tps": round(p.decode_tps, 2)},
        "why": p.why,
        "suggestions": [
            {
                "label": s.label,
                "kind": s.kind,
                "fits": s.fits,
                "verdict": s.verdict,
                "gpu_layers": s.gpu_layers,
                "predicted": {
                    "prompt_tps": round(s.prompt_tps, 2),
                    "decode_tps": round(s.decode_tps, 2),
                },
            }
            for s in p.suggestions
        ],
    }
