"""Where llama-cpp-python's server cannot load a plan the way the fit placed it.

``llama_cpp.server`` has no option for tensor buffer overrides or for the sliding-window cache
size, so a plan that keeps MoE experts on the CPU, or that the fit sized with a small SWA cache,
runs differently served than loaded in process. Every face warns about the same gaps.
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
    sliding-window layers), in the order a user should read them."""
    gaps: list[ServeLimitation] = []
    if plan.n_cpu_moe:
        gaps.append(ServeLimitation("experts-on-gpu", n_cpu_moe=plan.n_cpu_moe))
    if has_swa and not plan.swa_full:
        gaps.append(ServeLimitation("full-swa-cache"))
    return tuple(gaps)
