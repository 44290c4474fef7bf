"""Run history: what each local run measured, beside what the fit predicted, per machine.

One SQLite file in the user data dir (WAL, one transaction per write, versioned schema). Every
operation opens its own short-lived connection, so worker threads can record without sharing one.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rigdeck.core.errors import RigdeckError
from rigdeck.core.machine import MachineFingerprint
from rigdeck.core.sqlite_store import SqliteStore

SCHEMA_VERSION = 2

# Index i holds the statements that move a database from version i to i + 1.
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """
        CREATE TABLE runs (
            id INTEGER PRIMARY KEY,
            started_at TEXT NOT NULL,
            kind TEXT NOT NULL,
            model_path TEXT NOT NULL,
            settings_key TEXT NOT NULL,
            machine_key TEXT NOT NULL,
            machine_json TEXT NOT NULL,
            predicted_vram_bytes INTEGER,
            predicted_ram_bytes INTEGER,
            predicted_prompt_tps REAL,
            predicted_decode_tps REAL,
            measured_vram_bytes INTEGER,
            measured_ram_bytes INTEGER,
            measured_prompt_tps REAL,
            measured_decode_tps REAL,
            load_seconds REAL,
            llama_buffers_json TEXT NOT NULL DEFAULT '{}',
            outcome TEXT NOT NULL DEFAULT 'ok',
            error TEXT
        )
        """,
        "CREATE INDEX runs_by_model ON runs (model_path, settings_key, id)",
    ),
    # 2: the fit's buffers in llama.cpp's terms, to set beside llama_buffers_json.
    ("ALTER TABLE runs ADD COLUMN predicted_buffers_json TEXT NOT NULL DEFAULT '{}'",),
)


def default_history_path() -> Path:
    from platformdirs import user_data_path

    return user_data_path("rigdeck") / "runs.sqlite3"


def settings_key(settings: Mapping[str, Any]) -> str:
    """Canonical text for a settings mapping, so equal settings always compare equal in SQL."""
    return json.dumps(dict(settings), sort_keys=True, separators=(",", ":"), default=str)


@dataclass(frozen=True)
class RunRecord:
    """One run: the plan's settings and predictions, what was measured, and where.

    ``settings`` is the run plan less the model path and the predictions (context, KV types, GPU
    layers, ...). Measured memory: ``measured_ram_bytes`` is the host RSS growth over the load,
    ``measured_vram_bytes`` the GPU memory NVML charges to the process (None without NVML).
    ``llama_buffers`` are llama.cpp's own buffer sizes, e.g. ``{"CPU_Mapped model": 95_000_000}``.
    """

    model_path: str
    settings: Mapping[str, Any] = field(default_factory=dict, hash=False)
    kind: str = "chat"
    machine: MachineFingerprint | None = None
    predicted_vram_bytes: int | None = None
    predicted_ram_bytes: int | None = None
    predicted_prompt_tps: float | None = None
    predicted_decode_tps: float | None = None
    measured_vram_bytes: int | None = None
    measured_ram_bytes: int | None = None
    measured_prompt_tps: float | None = None
    measured_decode_tps: float | None = None
    load_seconds: float | None = None
    llama_buffers: Mapping[str, int] = field(default_factory=dict, hash=False)
    predicted_buffers: Mapping[str, int] = field(default_factory=dict, hash=False)
    """The fit's buffers in the same terms (``run.memory.predicted_buffers``); empty before."""
    outcome: str = "ok"
    error: str | None = None
    started_at: str = ""
    id: int | None = None


_COLUMNS = (
    "started_at",
    "kind",
    "model_path",
    "settings_key",
    "machine_key",
    "machine_json",
    "predicted_vram_bytes",
    "predicted_ram_bytes",
    "predicted_prompt_tps",
    "predicted_decode_tps",
    "measured_vram_bytes",
    "measured_ram_bytes",
    "measured_prompt_tps",
    "measured_decode_tps",
    "load_seconds",
    "llama_buffers_json",
    "predicted_buffers_json",
    "outcome",
    "error",
)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _norm_path(path: str | os.PathLike[str]) -> str:
    return os.path.abspath(os.fspath(path))


class RunHistory(SqliteStore):
    """Record and query runs. ``path`` defaults to the user data dir; tests pass a temp file."""

    WHAT = "run history"
    ERROR = RigdeckError
    MIGRATIONS = _MIGRATIONS

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        super().__init__(path if path is not None else default_history_path())

    def record(self, run: RunRecord) -> int:
        """Store a run and return its id."""
        machine = run.machine
        values = (
            run.started_at or _now(),
            run.kind,
            _norm_path(run.model_path),
            settings_key(run.settings),
            machine.key if machine else "",
            json.dumps(machine.to_dict() if machine else {}, sort_keys=True),
            run.predicted_vram_bytes,
            run.predicted_ram_bytes,
            run.predicted_prompt_tps,
            run.predicted_decode_tps,
            run.measured_vram_bytes,
            run.measured_ram_bytes,
            run.measured_prompt_tps,
            run.measured_decode_tps,
            run.load_seconds,
            json.dumps(dict(run.llama_buffers), sort_keys=True),
            json.dumps(dict(run.predicted_buffers), sort_keys=True),
            run.outcome,
            run.error,
        )
        placeholders = ", ".join("?" for _ in _COLUMNS)
        with self._connect() as conn, conn:
            cursor = conn.execute(
                f"INSERT INTO runs ({', '.join(_COLUMNS)}) VALUES ({placeholders})", values
            )
            return int(cursor.lastrowid or 0)

    def update_speed(
        self, run_id: int, *, prompt_tps: float | None = None, decode_tps: float | None = None
    ) -> None:
        """Set the measured speeds of a recorded run (a chat measures them after the load)."""
        with self._connect() as conn, conn:
            conn.execute(
                "UPDATE runs SET measured_prompt_tps = COALESCE(?, measured_prompt_tps),"
                " measured_decode_tps = COALESCE(?, measured_decode_tps) WHERE id = ?",
                (prompt_tps, decode_tps, run_id),
            )

    def get(self, run_id: int) -> RunRecord | None:
        with self._connect() as conn:
            row = conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        return _from_row(row) if row else None

    def latest(
        self,
        model_path: str | os.PathLike[str],
        settings: Mapping[str, Any] | None = None,
        *,
        machine_key: str | None = None,
        outcome: str | None = "ok",
    ) -> RunRecord | None:
        """The newest run of a model, optionally with exactly these settings / on this machine."""
        sql = "SELECT * FROM runs WHERE model_path = ?"
        args: list[Any] = [_norm_path(model_path)]
        if settings is not None:
            sql += " AND settings_key = ?"
            args.append(settings_key(settings))
        if machine_key is not None:
            sql += " AND machine_key = ?"
            args.append(machine_key)
        if outcome is not None:
            sql += " AND outcome = ?"
            args.append(outcome)
        with self._connect() as conn:
            row = conn.execute(sql + " ORDER BY id DESC LIMIT 1", args).fetchone()
        return _from_row(row) if row else None

    def latest_runs(self, *, machine_key: str | None = None) -> list[RunRecord]:
        """The newest successful run for each (model path, settings), newest first."""
        where = "WHERE outcome = 'ok'" + (" AND machine_key = ?" if machine_key else "")
        args: tuple[Any, ...] = (machine_key,) if machine_key else ()
        sql = (
            f"SELECT * FROM runs WHERE id IN (SELECT MAX(id) FROM runs {where}"
            " GROUP BY model_path, settings_key) ORDER BY id DESC"
        )
        with self._connect() as conn:
            rows = conn.execute(sql, args).fetchall()
        return [_from_row(row) for row in rows]

    def runs(
        self, model_path: str | os.PathLike[str] | None = None, *, limit: int = 100
    ) -> list[RunRecord]:
        """Recent runs, newest first, optionally of one model."""
        with self._connect() as conn:
            if model_path is None:
                rows = conn.execute(
                    "SELECT * FROM runs ORDER BY id DESC LIMIT ?", (limit,)
                ).fetchall()
            else:
                rows = conn.execute(
                    "SELECT * FROM runs WHERE model_path = ? ORDER BY id DESC LIMIT ?",
                    (_norm_path(model_path), limit),
                ).fetchall()
        return [_from_row(row) for row in rows]


def _from_row(row: sqlite3.Row) -> RunRecord:
    machine_data = json.loads(row["machine_json"] or "{}")
    return RunRecord(
        id=row["id"],
        started_at=row["started_at"],
        kind=row["kind"],
        model_path=row["model_path"],
        settings=json.loads(row["settings_key"]),
        machine=MachineFingerprint.from_dict(machine_data) if machine_data else None,
        predicted_vram_bytes=row["predicted_vram_bytes"],
        predicted_ram_bytes=row["predicted_ram_bytes"],
        predicted_prompt_tps=row["predicted_prompt_tps"],
        predicted_decode_tps=row["predicted_decode_tps"],
        measured_vram_bytes=row["measured_vram_bytes"],
        measured_ram_bytes=row["measured_ram_bytes"],
        measured_prompt_tps=row["measured_prompt_tps"],
        measured_decode_tps=row["measured_decode_tps"],
        load_seconds=row["load_seconds"],
        llama_buffers=json.loads(row["llama_buffers_json"] or "{}"),
        predicted_buffers=json.loads(row["predicted_buffers_json"] or "{}"),
        outcome=row["outcome"],
        error=row["error"],
    )


__all__ = ["SCHEMA_VERSION", "RunHistory", "RunRecord", "default_history_path", "settings_key"]
