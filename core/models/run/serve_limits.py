"""Where a served model would depart from the plan the fit placed, for every face to warn alike.

``llama_cpp.server`` itself has no option for tensor buffer overrides or for the sliding-window
cache size; rigdeck serves through ``serve_child``, which applies both the way the runner does,
so today no gap remains. The values stay so a future gap is worded the same everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from rigdeck.core.models.run.plan import RunPlan

LimitationKind = Literal["experts-on-gpu", "full-swa-cache"]


@dataclass(frozen=True)
class ServeLimitation:
    """One way the served model departs from the plan.

    ``experts-on-gpu``: the routed experts of ``n_cpu_moe`` blocks the fit kept on the CPU go to
    the GPU. ``full-swa-cache``: the sliding-window layers get a full-size cache, more memory
    than predicted.
    """

    kind: LimitationKind
    n_cpu_moe: int = 0


def serve_limitations(plan: RunPlan, *, has_swa: bool) -> tuple[ServeLimitation, ...]:
    """The gaps between ``plan`` and what the server will run (``has_swa``: the model has
    sliding-window layers), in the order a user should read them: none, since the server child
    keeps experts on the CPU (``n_cpu_moe``) and sizes the SWA cache (``swa_full``) as planned."""
    del plan, has_swa  # both followed by serve_child
    return ()
