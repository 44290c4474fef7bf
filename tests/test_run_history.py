from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from rigdeck.core.errors import RigdeckError
from rigdeck.core.machine import fingerprint
from rigdeck.core.models.run.history import SCHEMA_VERSION, RunHistory, RunRecord

SETTINGS = {"gpu_layers": 0, "n_ctx": 512, "type_k": "f16", "type_v": "f16", "flash_attn": False}


def _run(model: str = "/models/a.gguf", **kw: object) -> RunRecord:
    base: dict[str, object] = {
        "model_path": model,
        "settings": SETTINGS,
        "machine": fingerprint(),
        "predicted_ram_bytes": 5_100_000_000,
        "measured_ram_bytes": 5_000_000_000,
        "predicted_decode_tps": 41.0,
        "measured_decode_tps": 38.0,
        "load_seconds": 1.5,
        "llama_buffers": {"CPU_Mapped model": 95_000_000, "CPU KV": 6_000_000},
    }
    base.update(kw)
    return RunRecord(**base)  # type: ignore[arg-type]


def test_recorded_run_reads_back_with_prediction_and_measurement(tmp_path: Path) -> None:
    history = RunHistory(tmp_path / "runs.sqlite3")
    run_id = history.record(_run())
    got = history.latest("/models/a.gguf", SETTINGS)
    assert got is not None and got.id == run_id
    assert (got.predicted_ram_bytes, got.measured_ram_bytes) == (5_100_000_000, 5_000_000_000)
    assert (got.predicted_decode_tps, got.measured_decode_tps) == (41.0, 38.0)
    assert got.llama_buffers["CPU_Mapped model"] == 95_000_000
    assert got.machine is not None and got.machine.key == fingerprint().key
    assert got.machine.hostname == fingerprint().hostname
    assert got.started_at.endswith("+00:00")


def test_latest_is_per_model_and_settings(tmp_path: Path) -> None:
    history = RunHistory(tmp_path / "runs.sqlite3")
    history.record(_run(measured_decode_tps=30.0))
    newer = history.record(_run(measured_decode_tps=35.0))
    other_ctx = {**SETTINGS, "n_ctx": 4096}
    history.record(_run(settings=other_ctx, measured_decode_tps=20.0))
    history.record(_run(model="/models/b.gguf"))

    got = history.latest("/models/a.gguf", SETTINGS)
    assert got is not None and got.id == newer and got.measured_decode_tps == 35.0
    got_ctx = history.latest("/models/a.gguf", other_ctx)
    assert got_ctx is not None and got_ctx.measured_decode_tps == 20.0
    assert history.latest("/models/a.gguf", {**SETTINGS, "n_ctx": 8192}) is None

    latest = history.latest_runs()
    assert len(latest) == 3  # a/512, a/4096, b/512: one row each, the newest
    assert {r.id for r in latest} >= {newer}


def test_failed_runs_are_kept_but_not_shown_as_latest(tmp_path: Path) -> None:
    history = RunHistory(tmp_path / "runs.sqlite3")
    ok = history.record(_run())
    history.record(_run(outcome="failed", error="out of memory", measured_ram_bytes=None))
    got = history.latest("/models/a.gguf", SETTINGS)
    assert got is not None and got.id == ok
    failed = history.latest("/models/a.gguf", SETTINGS, outcome="failed")
    assert failed is not None and failed.error == "out of memory"


def test_update_speed_fills_in_after_load(tmp_path: Path) -> None:
    history = RunHistory(tmp_path / "runs.sqlite3")
    run_id = history.record(_run(measured_decode_tps=None, measured_prompt_tps=None))
    history.update_speed(run_id, prompt_tps=500.0, decode_tps=40.0)
    history.update_speed(run_id, decode_tps=42.0)
    got = history.get(run_id)
    assert got is not None
    assert (got.measured_prompt_tps, got.measured_decode_tps) == (500.0, 42.0)


def test_file_is_wal_and_versioned_and_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "runs.sqlite3"
    RunHistory(path).record(_run())
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert len(RunHistory(path).runs()) == 1


def test_newer_schema_is_refused_with_one_line(tmp_path: Path) -> None:
    path = tmp_path / "runs.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(RigdeckError, match="newer") as info:
        RunHistory(path)
    assert "\n" not in str(info.value)


def test_corrupt_file_is_a_user_error(tmp_path: Path) -> None:
    path = tmp_path / "runs.sqlite3"
    path.write_bytes(b"this is not a database" * 200)
    with pytest.raises(RigdeckError, match="run history"):
        RunHistory(path)


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    history = RunHistory(tmp_path / "runs.sqlite3")

    def write(n: int) -> None:
        for i in range(10):
            history.record(_run(model=f"/models/{n}-{i}.gguf"))

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(history.runs(limit=1000)) == 40
