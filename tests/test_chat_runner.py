"""What moved into core for every face: the load-retry policy, the serve limitations and the
record of a served run (the CLI and the chat pane both use these)."""

from __future__ import annotations

import os
from pathlib import Path

from rigdeck.core.models.run.history import RunHistory
from rigdeck.core.models.run.plan import LoadError, RunPlan, next_plans_down
from rigdeck.core.models.run.retry import next_placement_down
from rigdeck.core.models.run.run_record import record_served
from rigdeck.core.models.run.serve_limits import serve_limitations


def _failed(reason: str, plan: RunPlan) -> LoadError:
    return LoadError(
        "cannot load m.gguf", plan=plan, reason=reason, next_plans=next_plans_down(plan)
    )


def test_out_of_memory_retries_the_closest_smaller_placement() -> None:
    plan = RunPlan("m.gguf", gpu_layers=20, n_ctx=8192)
    retry = next_placement_down(_failed("out-of-memory", plan))
    assert retry is not None and retry.plan == RunPlan("m.gguf", gpu_layers=20, n_ctx=4096)
    assert retry.named_in_error  # the loader's out-of-memory line names the step already
    other = next_placement_down(_failed("other", plan))
    assert other is not None and not other.named_in_error


def test_no_retry_when_a_smaller_placement_cannot_help() -> None:
    plan = RunPlan("m.gguf", gpu_layers=20, n_ctx=8192)
    for reason in ("missing", "corrupt", "architecture"):
        assert next_placement_down(_failed(reason, plan)) is None
    smallest = RunPlan("m.gguf", gpu_layers=0, n_ctx=512)
    assert next_placement_down(_failed("out-of-memory", smallest)) is None


def test_serve_follows_experts_on_the_cpu_and_the_swa_cache_so_nothing_is_warned() -> None:
    moe = RunPlan("m.gguf", gpu_layers=-1, n_cpu_moe=4)
    assert serve_limitations(moe, has_swa=True) == ()
    assert serve_limitations(RunPlan("m.gguf", swa_full=True), has_swa=True) == ()
    assert serve_limitations(RunPlan("m.gguf"), has_swa=False) == ()


def test_a_served_run_is_recorded_with_the_server_process_memory(tmp_path: Path) -> None:
    history = RunHistory(tmp_path / "runs.sqlite3")
    plan = RunPlan("/models/m.gguf", n_ctx=2048, predicted_ram_bytes=300 << 20)
    # This test's own process stands in as "the server process": a real pid with real memory.
    run_id = record_served(plan, os.getpid(), 1.5, history)
    record = history.get(run_id)
    assert record is not None and record.kind == "serve"
    assert record.settings == plan.settings() and record.predicted_ram_bytes == 300 << 20
    assert record.measured_ram_bytes and record.measured_ram_bytes > 0
    assert record.load_seconds == 1.5
