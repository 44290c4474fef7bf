"""Predicted memory against llama.cpp's own buffers, like for like, and RSS as its own figure."""

from __future__ import annotations

from pathlib import Path

import pytest

from rigdeck.core.models import launch
from rigdeck.core.models.run.history import RunHistory, RunRecord
from rigdeck.core.models.run.loader import load_model
from rigdeck.core.models.run.memory import compare_memory, reported_buffers
from rigdeck.core.models.sources.local import demo_model_path
from rigdeck.tui import words

MiB = 1 << 20


def test_llama_buffers_map_to_the_fits_components() -> None:
    reported, repacked = reported_buffers(
        {
            "CPU_Mapped model": 900 * MiB,
            "CPU_REPACK model": 600 * MiB,
            "CUDA0 model": 4000 * MiB,
            "CUDA1 KV": 256 * MiB,
            "CUDA0 compute": 300 * MiB,
            "CUDA_Host compute": 20 * MiB,
            "CPU output": 1 * MiB,
        }
    )
    assert reported == {
        "CPU weights": 900 * MiB,
        "GPU0 weights": 4000 * MiB,
        "GPU1 KV": 256 * MiB,
        "GPU0 compute": 300 * MiB,
        "CPU compute": 20 * MiB,
        "CPU output": 1 * MiB,
    }
    # Repacked weights are copies of mapped ones: apart, never added to the weights.
    assert repacked == 600 * MiB


def test_a_recorded_run_reads_predicted_against_llama_cpp() -> None:
    run = RunRecord(
        model_path="/m/a.gguf",
        predicted_ram_bytes=400 * MiB,
        measured_ram_bytes=200 * MiB,  # RSS growth: not what the fit predicts
        predicted_buffers={"CPU weights": 92 * MiB, "CPU KV": 90 * MiB},
        llama_buffers={"CPU_Mapped model": 92 * MiB, "CPU KV": 90 * MiB},
    )
    assert words.last_run_summary(run) == "predicted 182.0 MiB / llama.cpp 182.0 MiB"


def test_comparison_line_keeps_rss_apart() -> None:
    cmp = compare_memory(
        {"CPU weights": 92 * MiB},
        {"CPU_Mapped model": 92 * MiB, "CPU_REPACK model": 10 * MiB},
        peak_rss_bytes=300 * MiB,
    )
    line = words.memory_comparison_line(cmp)
    assert line.startswith("llama.cpp allocated 92.0 MiB (predicted 92.0 MiB)")
    assert "10.0 MiB of weights repacked" in line and "Peak RSS 300.0 MiB" in line
    assert "page cache" in line
    assert cmp.to_json()["buffers"] == {
        "CPU weights": {"predicted": 92 * MiB, "llama_cpp": 92 * MiB}
    }


@pytest.mark.skipif(demo_model_path() is None, reason="the demo model is not installed")
def test_a_real_load_allocates_what_the_fit_predicted(tmp_path: Path) -> None:
    path = demo_model_path()
    assert path is not None
    budget = launch.machine_budget()
    planned = launch.plan_launch(path, launch.build_run_settings(ctx=2048), budget)
    history = RunHistory(tmp_path / "runs.sqlite3")
    with load_model(planned.plan, history=history, kind="run") as model:
        stats, run_id = model.load_stats, model.run_id
    cmp = compare_memory(dict(planned.plan.predicted_buffers), stats.llama_buffers)
    assert set(cmp.predicted) == set(cmp.reported)
    # Weights and KV are exact sizes; compute buffers are the graph allocator's peak, estimated.
    for key in cmp.keys:
        rel = 0.1 if key.endswith("compute") else 0.01
        assert cmp.reported[key] == pytest.approx(cmp.predicted[key], rel=rel, abs=1 * MiB), key
    assert cmp.reported_total == pytest.approx(cmp.predicted_total, rel=0.03)
    # The record keeps both sides, so the models pane compares them later.
    assert run_id is not None
    record = history.get(run_id)
    assert record is not None and dict(record.predicted_buffers) == cmp.predicted
    assert words.last_run_summary(record).startswith("predicted ")
