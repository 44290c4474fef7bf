"""The chat pane's real runner: llama.cpp in process for chatting, its server for serving.

Loads go through ``loader.load_model`` (recorded in the run history as "chat" runs); serving
goes through ``serve.start_server`` and is recorded as a "serve" run, with the limitations
``rigdeck serve`` warns about, so the pane and the CLI say and store the same things.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from rigdeck.core.config import ModelSettings
from rigdeck.core.errors import RigdeckError
from rigdeck.core.models.run.chat_runner import FittedPlan, LoadedChat, Served
from rigdeck.core.models.run.chat_support import fit_here
from rigdeck.core.models.run.plan import ProgressCallback, RunPlan
from rigdeck.core.models.run.run_record import open_history, record_served
from rigdeck.core.models.run.serve_limits import serve_limitations
from rigdeck.core.telemetry.snapshot import Snapshot


class LlamaChatRunner:
    """``ChatRunner`` over llama-cpp-python, with the user's [models] settings for fits."""

    def __init__(self, models: ModelSettings) -> None:
        self.models = models

    def plan_for(self, path: Path, snapshot: Snapshot | None) -> FittedPlan:
        return fit_here(path, snapshot, self.models)

    def load(
        self, plan: RunPlan, *, on_progress: ProgressCallback, cancel: threading.Event
    ) -> LoadedChat:
        from rigdeck.core.models.run.loader import load_model

        return load_model(
            plan, on_progress=on_progress, cancel=cancel, history=open_history(), kind="chat"
        )

    def serve(self, plan: RunPlan) -> Served:
        from rigdeck.core.models.format.model_reader import read_model_info
        from rigdeck.core.models.run.serve import start_server

        info = read_model_info(plan.model_path)
        limitations = serve_limitations(plan, has_swa=info.has_swa)
        started = time.monotonic()
        handle = start_server(plan)
        try:
            run_id: int | None = record_served(plan, handle.pid, time.monotonic() - started)
        except RigdeckError:  # serving matters more than the record of it
            run_id = None
        return Served(handle, limitations, run_id)
