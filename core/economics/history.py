"""Comparison history: every "here vs there" result per job spec, to show how the ratio moved.

One SQLite file, ``data_dir()/economics.sqlite3`` (WAL, versioned schema, one short-lived
connection per call so worker threads can record without sharing one). A row keeps the headline
numbers as columns, for listing, and the whole comparison as JSON, for detail.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rigdeck.core.economics.compare import Comparison
from rigdeck.core.economics.figures import EconomicsError
from rigdeck.core.sqlite_store import SqliteStore

SCHEMA_VERSION = 1
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """
        CREATE TABLE comparisons (
            id INTEGER PRIMARY KEY,
            at TEXT NOT NULL,
            spec_key TEXT NOT NULL,
            offer_id INTEGER NOT NULL,
            gpu_name TEXT NOT NULL,
            num_gpus INTEGER NOT NULL,
            basis TEXT NOT NULL,
            speedup REAL,
            local_seconds REAL,
            cloud_seconds REAL,
            local_usd REAL,
            cloud_usd REAL,
            cheaper TEXT NOT NULL,
            faster TEXT NOT NULL,
            result_json TEXT NOT NULL
        )
        """,
        "CREATE INDEX comparisons_by_spec ON comparisons (spec_key, id)",
    ),
)


def default_path() -> Path:
    from rigdeck.core.config import data_dir

    return data_dir() / "economics.sqlite3"


@dataclass(frozen=True)
class ComparisonRecord:
    id: int
    at: str
    spec_key: str
    offer_id: int
    gpu_name: str
    num_gpus: int
    basis: str
    speedup: float | None
    local_seconds: float | None
    cloud_seconds: float | None
    local_usd: float | None
    cloud_usd: float | None
    cheaper: str
    faster: str
    result: dict[str, Any]

    @property
    def cost_ratio(self) -> float | None:
        """Cloud cost over local cost (below 1: the cloud was cheaper)."""
        if not self.local_usd or self.cloud_usd is None:
            return None
        return self.cloud_usd / self.local_usd


class ComparisonHistory(SqliteStore):
    """Record and list comparisons. ``path`` defaults to the data dir; tests pass a temp file."""

    WHAT = "comparison history"
    ERROR = EconomicsError
    MIGRATIONS = _MIGRATIONS

    def __init__(self, path: str | Path | None = None) -> None:
        super().__init__(path if path is not None else default_path())

    def record(self, result: Comparison) -> int:
        doc = result.to_json()
        values = (
            doc["at"],
            result.spec_key,
            result.offer_id,
            result.gpu_name,
            result.num_gpus,
            result.speedup.basis,
            result.speedup.factor.value,
            result.local.seconds.value,
            result.cloud.seconds.value,
            result.local.total.value,
            result.cloud.total.value,
            result.cheaper,
            result.faster,
            json.dumps(doc, sort_keys=True),
        )
        with self._connect() as conn, conn:
            cursor = conn.execute(
                "INSERT INTO comparisons (at, spec_key, offer_id, gpu_name, num_gpus, basis, "
                "speedup, local_seconds, cloud_seconds, local_usd, cloud_usd, cheaper, faster, "
                "result_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                values,
            )
            return int(cursor.lastrowid or 0)

    def history(self, spec_key: str, *, limit: int = 100) -> list[ComparisonRecord]:
        """This spec's comparisons, oldest first (the last ``limit`` of them)."""
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT * FROM comparisons WHERE spec_key = ? ORDER BY id DESC LIMIT ?",
                (spec_key, limit),
            ).fetchall()
        return [_record(r) for r in reversed(rows)]

    def specs(self) -> list[str]:
        """Every spec with at least one comparison, most recently compared first."""
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT spec_key FROM comparisons GROUP BY spec_key ORDER BY MAX(id) DESC"
            ).fetchall()
        return [str(r[0]) for r in rows]


def _record(row: sqlite3.Row) -> ComparisonRecord:
    return ComparisonRecord(
        id=int(row["id"]),
        at=str(row["at"]),
        spec_key=str(row["spec_key"]),
        offer_id=int(row["offer_id"]),
        gpu_name=str(row["gpu_name"]),
        num_gpus=int(row["num_gpus"]),
        basis=str(row["basis"]),
        speedup=row["speedup"],
        local_seconds=row["local_seconds"],
        cloud_seconds=row["cloud_seconds"],
        local_usd=row["local_usd"],
        cloud_usd=row["cloud_usd"],
        cheaper=str(row["cheaper"]),
        faster=str(row["faster"]),
        result=json.loads(row["result_json"]),
    )
