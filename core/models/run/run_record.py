"""The run history's side of a run: opening it, and recording a served model.

A load in process is recorded by the loader itself (``load_model(history=..., kind=...)``); a
served model runs in another process, so its record is taken here once the server answers: the
server's own memory beside the fit's prediction.
"""

from __future__ import annotations

from rigdeck.core.errors import RigdeckError
from rigdeck.core.models.run.history import RunHistory, RunRecord
from rigdeck.core.models.run.plan import RunPlan


def open_history() -> RunHistory | None:
    """The user's run history, or None when it cannot be opened (an unwritable data folder):
    a run matters more than its record."""
    try:
        return RunHistory()
    except RigdeckError:
        return None


def served_record(plan: RunPlan, pid: int, ready_seconds: float) -> RunRecord:
    """What a served ``plan`` measured: the server process's memory once it answers."""
    import psutil

    from rigdeck.core.machine import fingerprint, process_gpu_memory_bytes

    try:
        rss: int | None = int(psutil.Process(pid).memory_info().rss)
    except psutil.Error:
        rss = None
    return RunRecord(
        model_path=plan.model_path,
        settings=plan.settings(),
        kind="serve",
        machine=fingerprint(),
        predicted_vram_bytes=plan.predicted_vram_bytes,
        predicted_ram_bytes=plan.predicted_ram_bytes,
        predicted_prompt_tps=plan.predicted_prompt_tps,
        predicted_decode_tps=plan.predicted_decode_tps,
        measured_vram_bytes=process_gpu_memory_bytes(pid),
        measured_ram_bytes=rss,
        load_seconds=ready_seconds,
        predicted_buffers=dict(plan.predicted_buffers),
    )


def record_served(
    plan: RunPlan, pid: int, ready_seconds: float, history: RunHistory | None = None
) -> int:
    """Record a served run in ``history`` (the user's by default); its id.

    Raises ``RigdeckError`` when the history cannot be written: the caller decides whether that
    matters (serving matters more than the record of it).
    """
    target = history if history is not None else RunHistory()
    return target.record(served_record(plan, pid, ready_seconds))
