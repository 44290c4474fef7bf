"""The ledger's SQLite schema and the mapping between its rows and the ledger's values."""

from __future__ import annotations

import json
import re
import sqlite3
from typing import Any

from rigdeck.core.cloud.ledger_values import (
    Caps,
    LedgerEvent,
    LedgerInstance,
    iso,
    parse_iso,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS instances (
    id INTEGER PRIMARY KEY,
    label TEXT,
    source TEXT NOT NULL CHECK (source IN ('rigdeck', 'adopted', 'unaccounted')),
    state TEXT NOT NULL,
    created_at TEXT NOT NULL,
    gpu_name TEXT NOT NULL DEFAULT '',
    num_gpus INTEGER NOT NULL DEFAULT 0,
    dph REAL NOT NULL DEFAULT 0,
    storage_dph REAL NOT NULL DEFAULT 0,
    image TEXT,
    disk_gb REAL NOT NULL DEFAULT 0,
    bid REAL,
    interruptible INTEGER NOT NULL DEFAULT 0,
    offer_id INTEGER,
    closed_at TEXT,
    closed_reason TEXT,
    usd REAL NOT NULL DEFAULT 0,
    max_usd REAL NOT NULL DEFAULT 0,
    max_hours REAL NOT NULL DEFAULT 0,
    idle_minutes REAL NOT NULL DEFAULT 0,
    project TEXT NOT NULL DEFAULT '',
    gpu_util REAL,
    busy_at TEXT,
    seen_at TEXT,
    status_message TEXT,
    outbid INTEGER NOT NULL DEFAULT 0,
    job TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS instances_open ON instances (closed_at);
CREATE INDEX IF NOT EXISTS instances_label ON instances (label);
CREATE TABLE IF NOT EXISTS state_changes (
    instance_id INTEGER NOT NULL,
    at TEXT NOT NULL,
    state TEXT NOT NULL,
    dph REAL NOT NULL,
    storage_dph REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS state_changes_instance ON state_changes (instance_id, at);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('intent', 'outcome', 'observed', 'guard')),
    action TEXT NOT NULL,
    label TEXT,
    instance_id INTEGER,
    intent_seq INTEGER REFERENCES events (seq),
    ok INTEGER,
    detail TEXT NOT NULL DEFAULT '',
    data TEXT NOT NULL DEFAULT '{}',
    cli TEXT
);
-- One outcome per intent: two writers racing to close the same intent cannot both win.
CREATE UNIQUE INDEX IF NOT EXISTS events_one_outcome ON events (intent_seq)
    WHERE kind = 'outcome';
CREATE INDEX IF NOT EXISTS events_label ON events (label) WHERE label IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_instance ON events (instance_id);
CREATE TRIGGER IF NOT EXISTS events_no_update BEFORE UPDATE ON events
    BEGIN SELECT RAISE(ABORT, 'the ledger events are append-only'); END;
CREATE TRIGGER IF NOT EXISTS events_no_delete BEFORE DELETE ON events
    BEGIN SELECT RAISE(ABORT, 'the ledger events are append-only'); END;
CREATE TABLE IF NOT EXISTS credits (at TEXT NOT NULL, balance_usd REAL NOT NULL);
"""


def migrate(conn: sqlite3.Connection) -> None:
    """Bring a ledger written by an older rigdeck up to this schema (inside a write transaction).

    Before the ``job`` column, the job code was the only writer of ``project`` and stored the
    job id there; those values move to ``job``, so old rows read as untagged rentals of their
    job. A row an older rigdeck writes after this (job empty, project a job id) is still found:
    `job_of` falls back to the project for rows with no job.
    """
    columns = {r[1] for r in conn.execute("PRAGMA table_info(instances)")}
    if "job" not in columns:
        conn.execute("ALTER TABLE instances ADD COLUMN job TEXT NOT NULL DEFAULT ''")
        rows = conn.execute("SELECT id, project FROM instances WHERE project != ''").fetchall()
        moved = [(p, i) for i, p in rows if _JOB_ID.search(p)]
        conn.executemany("UPDATE instances SET job = ?, project = '' WHERE id = ?", moved)


_JOB_ID = re.compile(r"-\d{8}-\d{6}-[0-9a-f]{4}$")
"""The tail of a job id (`lifecycle.new_job_id`): what an older rigdeck wrote as the project."""


def job_of(row: LedgerInstance) -> str:
    """The job a row was rented for. A row with no job but a job id as its project was written
    by an older rigdeck (still running beside this one), which kept the job id there."""
    if row.job:
        return row.job
    return row.project if _JOB_ID.search(row.project) else ""


INSTANCE_COLUMNS = (
    "id, label, source, state, created_at, gpu_name, num_gpus, dph, storage_dph, image, disk_gb, "
    "bid, interruptible, offer_id, closed_at, closed_reason, usd, max_usd, max_hours, "
    "idle_minutes, project, gpu_util, busy_at, seen_at, status_message, outbid, job"
)


def instance_row(i: LedgerInstance) -> tuple[Any, ...]:
    return (
        i.id, i.label, i.source, i.state, iso(i.created_at), i.gpu_name, i.num_gpus, i.dph,
        i.storage_dph, i.image, i.disk_gb, i.bid, int(i.interruptible), i.offer_id,
        None if i.closed_at is None else iso(i.closed_at), i.closed_reason, i.usd,
        i.caps.max_usd, i.caps.max_hours, i.caps.idle_minutes, i.project, i.gpu_util,
        None if i.busy_at is None else iso(i.busy_at),
        None if i.seen_at is None else iso(i.seen_at), i.status_message, int(i.outbid), i.job,
    )  # fmt: skip


def instance_from(row: sqlite3.Row) -> LedgerInstance:
    created = parse_iso(row["created_at"])
    assert created is not None
    return LedgerInstance(
        id=row["id"],
        label=row["label"],
        source=row["source"],
        state=row["state"],
        created_at=created,
        gpu_name=row["gpu_name"],
        num_gpus=row["num_gpus"],
        dph=row["dph"],
        storage_dph=row["storage_dph"],
        image=row["image"],
        disk_gb=row["disk_gb"],
        bid=row["bid"],
        interruptible=bool(row["interruptible"]),
        offer_id=row["offer_id"],
        closed_at=parse_iso(row["closed_at"]),
        closed_reason=row["closed_reason"],
        usd=row["usd"],
        caps=Caps(row["max_usd"], row["max_hours"], row["idle_minutes"]),
        project=row["project"],
        gpu_util=row["gpu_util"],
        busy_at=parse_iso(row["busy_at"]),
        seen_at=parse_iso(row["seen_at"]),
        status_message=row["status_message"],
        outbid=bool(row["outbid"]),
        job=row["job"],
    )


def event_from(row: sqlite3.Row) -> LedgerEvent:
    at = parse_iso(row["at"])
    assert at is not None
    return LedgerEvent(
        seq=row["seq"],
        at=at,
        kind=row["kind"],
        action=row["action"],
        label=row["label"],
        instance_id=row["instance_id"],
        intent_seq=row["intent_seq"],
        ok=None if row["ok"] is None else bool(row["ok"]),
        detail=row["detail"],
        data=json.loads(row["data"]),
        cli=row["cli"],
    )
