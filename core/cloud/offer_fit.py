"""Fits this model, for cloud offers: each offer as a hypothetical machine, fitted the one way.

An offer's GPUs (VRAM each, the bandwidth of its GPU name), its RAM and its cores become a
budget, and the model goes through `models.launch.fit_on_offer`, the one fit path, so an
offer's verdict is the one `rigdeck fit --vram ... --gpu ...` would give. The $ per million
generated tokens is the offer's $/hour (machine and storage) over the predicted decode speed.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from rigdeck.core.cloud.provider import Offer
from rigdeck.core.models.launch import (
    ModelInfo,
    Placement,
    RunSettings,
    fit_on_offer,
    model_info,
    resolve_model,
)

DEFAULT_DISK_GB = 20.0


@dataclass(frozen=True)
class OfferFit:
    """One offer's fit: where the model runs on it, how fast, what a token costs there."""

    offer_id: int
    placement: Placement
    usd_per_mtok: float | None
    """$ per million generated tokens at the predicted decode speed (None: it does not fit)."""

    @property
    def fits(self) -> bool:
        return bool(self.placement.fits)

    def to_json(self) -> dict[str, object]:
        """The keys of the fit JSON a face shows per offer (``rigdeck fit --json`` names)."""
        p = self.placement
        return {
            "fits": p.fits,
            "verdict": p.verdict,
            "gpu_layers": p.gpu_layers,
            "total_layers": p.total_layers,
            "predicted": {
                "prompt_tps": round(p.prompt_tps, 2),
                "decode_tps": round(p.decode_tps, 2),
            },
            "usd_per_mtok": None if self.usd_per_mtok is None else round(self.usd_per_mtok, 4),
        }


def usd_per_mtok(dph: float, decode_tps: float) -> float | None:
    if decode_tps <= 0:
        return None
    return dph / (decode_tps * 3600) * 1_000_000


def fit_offer(
    model: ModelInfo,
    offer: Offer,
    settings: RunSettings,
    *,
    disk_gb: float = DEFAULT_DISK_GB,
) -> OfferFit:
    placement = fit_on_offer(
        model,
        settings,
        gpu_name=offer.gpu_name,
        num_gpus=offer.num_gpus,
        gpu_ram_bytes=offer.gpu_ram_bytes,
        cpu_ram_bytes=max(offer.cpu_ram_bytes, 1),
        cpu_threads=max(1, offer.cpu_cores),
        name=f"offer {offer.id} ({offer.num_gpus}x {offer.gpu_name})",
    )
    cost = usd_per_mtok(offer.dph + offer.storage_dph(disk_gb), placement.decode_tps)
    return OfferFit(offer.id, placement, cost if placement.fits else None)


def fit_offers(
    model: ModelInfo,
    offers: Iterable[Offer],
    settings: RunSettings,
    *,
    disk_gb: float = DEFAULT_DISK_GB,
) -> dict[int, OfferFit]:
    """Each offer's fit, by offer id."""
    return {o.id: fit_offer(model, o, settings, disk_gb=disk_gb) for o in offers}


def load_model(spec: str, dirs: Iterable[str | os.PathLike[str]] = ()) -> ModelInfo:
    """The model a user named (a path, ``demo`` or a local name), read from its header."""
    path: Path = resolve_model(spec, list(dirs))
    return model_info(path)
