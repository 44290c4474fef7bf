"""The energy and electricity cost of each local run: chats, `rigdeck run`/`bench`, local jobs.

One SQLite file, ``data_dir()/energy.sqlite3`` (WAL, versioned schema, one short-lived connection
per call so any thread can record). A row points at what it measured by ``kind`` and ``ref``: the
run history id for model runs (``run``, ``bench``, ``chat``, ``serve``), the job id for ``job``.
Kept apart from the run history so each store has one owner and one schema.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rigdeck.core.economics.figures import EconomicsError, Figure, Source, iso
from rigdeck.core.economics.power import RunEnergy
from rigdeck.core.sqlite_store import SqliteStore

SCHEMA_VERSION = 1
KINDS = ("run", "bench", "chat", "serve", "job")
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """
        CREATE TABLE energy (
            id INTEGER PRIMARY KEY,
            at TEXT NOT NULL,
            kind TEXT NOT NULL,
            ref TEXT NOT NULL,
            label TEXT NOT NULL,
            seconds REAL NOT NULL,
            kwh REAL NOT NULL,
            cost REAL NOT NULL,
            currency TEXT NOT NULL,
            mean_watts REAL,
            source TEXT NOT NULL
        )
        """,
        "CREATE INDEX energy_by_ref ON energy (kind, ref, id)",
    ),
)


def default_path() -> Path:
    from rigdeck.core.config import data_dir

    path: Path = data_dir() / "energy.sqlite3"
    return path


@dataclass(frozen=True)
class EnergyRecord:
    """One local run's energy at the wall and what it cost in ``currency``."""

    id: int
    at: str
    """When the run ended (UTC ISO-8601)."""
    kind: str
    ref: str
    label: str
    seconds: float
    kwh: float
    cost: float
    currency: str
    mean_watts: float | None
    source: Source

    def kwh_figure(self) -> Figure:
        return Figure(self.kwh, self.source, _parse(self.at))

    def cost_figure(self) -> Figure:
        return Figure(self.cost, self.source, _parse(self.at))

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "ref": self.ref,
            "label": self.label,
            "at": self.at,
            "seconds": self.seconds,
            "kwh": self.kwh_figure().to_json(),
            "cost": self.cost_figure().to_json(),
            "currency": self.currency,
            "mean_watts": self.mean_watts,
        }


class EnergyLog(SqliteStore):
    """Record and list run energies. ``path`` defaults to the data dir; tests pass a temp file."""

    WHAT = "energy log"
    ERROR = EconomicsError
    MIGRATIONS = _MIGRATIONS

    def __init__(self, path: str | Path | None = None) -> None:
        super().__init__(path if path is not None else default_path())

    def record(
        self, kind: str, ref: str | int | None, label: str, energy: RunEnergy, currency: str
    ) -> EnergyRecord:
        """Keep one run's energy; ``ref`` None (the run was not recorded) is stored as ''."""
        if kind not in KINDS:
            raise EconomicsError(f"unknown run kind {kind!r}: one of {', '.join(KINDS)}")
        at = iso(energy.kwh.at or datetime.now(UTC)) or ""
        values = (
            at,
            kind,
            "" if ref is None else str(ref),
            label,
            energy.seconds,
            energy.kwh.value or 0.0,
            energy.cost.value or 0.0,
            currency,
            energy.mean_watts.value,
            energy.kwh.source,
        )
        with self._connect() as conn, conn:
            cursor = conn.execute(
                "INSERT INTO energy (at, kind, ref, label, seconds, kwh, cost, currency,"
                " mean_watts, source) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                values,
            )
            row_id = int(cursor.lastrowid or 0)
        found = self.get(row_id)
        assert found is not None
        return found

    def get(self, row_id: int) -> EnergyRecord | None:
        with self._connect() as conn:
            row = conn.execute("SELECT * FROM energy WHERE id = ?", (row_id,)).fetchone()
        return _record(row) if row else None

    def for_ref(self, kind: str, ref: str | int) -> EnergyRecord | None:
        """The newest record of this run or job, or None."""
        with self._connect() as conn:
            row = conn.execute(
                "SELECT * FROM energy WHERE kind = ? AND ref = ? ORDER BY id DESC LIMIT 1",
                (kind, str(ref)),
            ).fetchone()
        return _record(row) if row else None

    def recent(self, *, limit: int = 50) -> list[EnergyRecord]:
        """The newest ``limit`` records, newest first."""
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT * FROM energy ORDER BY id DESC LIMIT ?", (limit,)
            ).fetchall()
        return [_record(r) for r in rows]


def _parse(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def _record(row: sqlite3.Row) -> EnergyRecord:
    return EnergyRecord(
        id=int(row["id"]),
        at=str(row["at"]),
        kind=str(row["kind"]),
        ref=str(row["ref"]),
        label=str(row["label"]),
        seconds=float(row["seconds"]),
        kwh=float(row["kwh"]),
        cost=float(row["cost"]),
        currency=str(row["currency"]),
        mean_watts=row["mean_watts"],
        source=row["source"],
    )
