"""The server process `rigdeck serve` starts: llama-cpp-python's OpenAI server, loading the model
exactly as the runner would (``loader``'s keyword arguments and tensor buffer overrides).

``llama_cpp.server`` has options for neither the sliding-window cache size nor tensor buffer
overrides, so a plan that keeps MoE experts on the CPU or sizes a small SWA cache would run
differently served. Here every ``llama_cpp.Llama`` the server builds gets the plan's
``swa_full`` and the plan's overrides before the server's own ``main`` runs, and llama.cpp's load
log (buffer sizes included) goes to stderr, the server's log.

    python -m rigdeck.core.models.run.serve_child PLAN_JSON -- <llama_cpp.server arguments>
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Sequence
from typing import Any

from rigdeck.core.models.run.plan import RunPlan

_PLAN_FIELDS = (
    "model_path",
    "gpu_layers",
    "n_ctx",
    "type_k",
    "type_v",
    "flash_attn",
    "n_threads",
    "n_threads_batch",
    "n_batch",
    "n_ubatch",
    "seed",
    "n_cpu_moe",
    "tensor_split",
    "swa_full",
)


def plan_json(plan: RunPlan) -> str:
    """What shapes the load, as the child reads it back (predictions stay with the parent)."""
    return json.dumps({name: getattr(plan, name) for name in _PLAN_FIELDS})


def plan_from_json(text: str) -> RunPlan:
    data = json.loads(text)
    data["tensor_split"] = tuple(data.get("tensor_split") or ())
    return RunPlan(**{k: v for k, v in data.items() if k in _PLAN_FIELDS})


def apply_plan(plan: RunPlan) -> None:
    """Make every ``llama_cpp.Llama`` built from here on load as ``plan`` says."""
    from rigdeck.core.models.run.llama_glue import LOAD_STATE, LOG_SINK, llama_modules
    from rigdeck.core.models.run.loader import _override_array

    llama_cpp, _ = llama_modules()
    overrides = _override_array(llama_cpp, plan)
    original = llama_cpp.Llama.__init__

    @functools.wraps(original)
    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        kwargs["swa_full"] = plan.swa_full
        with LOG_SINK.capture() as lines:
            LOAD_STATE.overrides = overrides
            try:
                original(self, *args, **kwargs)
            finally:
                LOAD_STATE.overrides = None
                sys.stderr.write("".join(lines))
                sys.stderr.flush()
        if overrides is not None:
            self.rigdeck_tensor_overrides = overrides  # llama.cpp keeps the pointer

    llama_cpp.Llama.__init__ = init


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 2 or args[1] != "--":
        raise SystemExit("usage: python -m rigdeck.core.models.run.serve_child PLAN_JSON -- ARGS")
    apply_plan(plan_from_json(args[0]))
    from llama_cpp.server.__main__ import main as server_main

    sys.argv = ["llama_cpp.server", *args[2:]]
    server_main()  # type: ignore[no-untyped-call]


if __name__ == "__main__":
    main()
