"""What an upgrade unlocks: which models fit (or run faster) on the machine it would make.

The fit is asked only through `rigdeck.core.models.launch`, the one "fit this model on this
budget" path every face uses, so the answer here is the answer `rigdeck fit` gives. This module
asks ``launch.fit_model`` for each model on the current budget and on the upgraded one.

The upgraded machine is the current budget with its RAM or GPUs replaced, all of the new
memory free, the way ``rigdeck fit --ram/--vram`` describes a hypothetical machine.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from rigdeck.core.economics.breakeven import Upgrade
from rigdeck.core.models.launch import (
    HardwareBudget,
    ModelInfo,
    RunSettings,
    fit_model,
)

_RANK = {"none": 0, "cpu": 1, "partial": 2, "gpu": 3}
# A speed-up worth reporting for a model that already ran.
FASTER = 1.25


@dataclass(frozen=True)
class Unlock:
    """One model before and after the upgrade."""

    model: str
    quant: str
    before: str
    """Fit verdict on this machine: gpu, partial, cpu or none."""
    after: str
    before_decode_tps: float | None
    after_decode_tps: float | None
    fits_before: bool
    fits_after: bool

    @property
    def newly_fits(self) -> bool:
        return self.fits_after and not self.fits_before

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "quant": self.quant,
            "before": {
                "verdict": self.before,
                "fits": self.fits_before,
                "decode_tps": self.before_decode_tps,
            },
            "after": {
                "verdict": self.after,
                "fits": self.fits_after,
                "decode_tps": self.after_decode_tps,
            },
            "newly_fits": self.newly_fits,
        }


def upgraded_budget(upgrade: Upgrade, base: HardwareBudget) -> HardwareBudget:
    """``base`` as it would be after ``upgrade``: new memory all free, the CPU unchanged."""
    budget = base
    if upgrade.kind == "ram":
        total = base.ram_total_bytes + upgrade.ram_bytes if upgrade.ram_add else upgrade.ram_bytes
        free = (
            base.ram_available_bytes + upgrade.ram_bytes if upgrade.ram_add else upgrade.ram_bytes
        )
        budget = replace(budget, ram_total_bytes=total, ram_available_bytes=free)
    else:
        # The hypothetical constructor names the card's bandwidth from the fit's own table.
        card = HardwareBudget.hypothetical(
            ram_bytes=base.ram_total_bytes, gpus=[(upgrade.gpu_name, upgrade.gpu_vram_bytes)]
        ).gpus[0]
        kept = base.gpus if upgrade.gpu_add else ()
        cards = tuple(replace(g, index=i) for i, g in enumerate((*kept, card)))
        budget = replace(budget, gpus=cards)
    return replace(budget, name=f"this machine with {upgrade.label}")


def unlocks(
    upgrade: Upgrade,
    models: Sequence[ModelInfo],
    base: HardwareBudget,
    settings: RunSettings | None = None,
    *,
    everything: bool = False,
) -> list[Unlock]:
    """Models the upgrade lets run (newly fits, a better placement, or 25% faster decode).

    ``everything``: every model, changed or not. Sorted: newly fitting first, then by speed.
    """
    run = settings or RunSettings()
    after_budget = upgraded_budget(upgrade, base)
    out = []
    for model in models:
        before = fit_model(model, base, run)
        after = fit_model(model, after_budget, run)
        item = Unlock(
            model=model.name,
            quant=model.quant,
            before=before.verdict,
            after=after.verdict,
            before_decode_tps=before.decode_tps if before.fits else None,
            after_decode_tps=after.decode_tps if after.fits else None,
            fits_before=before.fits,
            fits_after=after.fits,
        )
        if everything or _better(item):
            out.append(item)
    out.sort(key=lambda u: (not u.newly_fits, -(u.after_decode_tps or 0.0)))
    return out


def _better(u: Unlock) -> bool:
    if not u.fits_after:
        return False
    if not u.fits_before or _RANK[u.after] > _RANK[u.before]:
        return True
    before, after = u.before_decode_tps or 0.0, u.after_decode_tps or 0.0
    return before > 0 and after >= before * FASTER
