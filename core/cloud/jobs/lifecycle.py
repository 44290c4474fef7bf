"""A job's states, the moves allowed between them, and the small SQLite store that keeps jobs.

    requested -> provisioning -> syncing -> running -> collecting -> done | failed
                                               \\-> preempted -> recovering -> provisioning ...
    any state -> failed (an error) and -> destroyed (the rental is gone; nothing runs)

`--local` jobs skip renting: requested -> running -> done | failed. The store lives in
``data_dir()/cloud/jobs.sqlite3`` (WAL), apart from the ledger of provider actions: a job row
says what the user's work is doing, the ledger says what was rented and paid for.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, cast, get_args

from rigdeck.core.config import data_dir
from rigdeck.core.errors import RigdeckError
from rigdeck.core.sqlite_store import SqliteStore

JobState = Literal[
    "requested",
    "provisioning",
    "syncing",
    "running",
    "collecting",
    "done",
    "failed",
    "preempted",
    "recovering",
    "destroyed",
]
JOB_STATES: tuple[JobState, ...] = get_args(JobState)

TRANSITIONS: Mapping[JobState, frozenset[JobState]] = {
    "requested": frozenset({"provisioning", "running", "failed", "destroyed"}),
    "provisioning": frozenset({"syncing", "preempted", "failed", "destroyed"}),
    "syncing": frozenset({"running", "preempted", "failed", "destroyed"}),
    "running": frozenset({"collecting", "done", "failed", "preempted", "destroyed"}),
    "collecting": frozenset({"done", "failed", "preempted", "destroyed"}),
    "done": frozenset({"collecting", "destroyed"}),
    "failed": frozenset({"collecting", "recovering", "destroyed"}),
    "preempted": frozenset({"recovering", "failed", "destroyed"}),
    "recovering": frozenset({"provisioning", "syncing", "running", "failed", "destroyed"}),
    "destroyed": frozenset(),
}
"""Allowed moves. done/failed -> collecting pulls artifacts again; failed -> recovering retries."""

ENDED: frozenset[JobState] = frozenset({"done", "failed", "destroyed"})
ACTIVE: frozenset[JobState] = frozenset(JOB_STATES) - ENDED

Target = int | Literal["local"]
"""Where a job runs: a provider instance id, or this machine."""


class JobStateError(RigdeckError):
    """A job was asked to move to a state it cannot reach from where it is."""


class JobNotFound(RigdeckError):
    """No job matches the id or name given."""


def _now() -> datetime:
    return datetime.now(UTC)


def new_job_id(name: str, *, at: datetime | None = None) -> str:
    """``<name>-<UTC yyyymmdd-hhmmss>-<4 hex>``: sorts by time, unique, safe in paths and labels."""
    stamp = (at or _now()).astimezone(UTC).strftime("%Y%m%d-%H%M%S")
    return f"{name}-{stamp}-{secrets.token_hex(2)}"


@dataclass(frozen=True)
class Job:
    id: str
    name: str
    spec_path: str
    state: JobState
    created_at: datetime
    target: Target | None = None
    """None until an instance is rented (or "local" from the start)."""
    remote_dir: str = ""
    """Where the command runs on the target."""
    job_dir: str = ""
    """The job's runner folder (log, pid, exit code) on the target."""
    started_at: datetime | None = None
    ended_at: datetime | None = None
    exit_code: int | None = None
    usd: float = 0.0
    """Money spent on the job so far (from the ledger; 0 for local jobs)."""
    attempt: int = 1
    """1, then one more for each recovery after a preemption."""
    log_offset: int = 0
    """Byte after the last complete log line read: where a log reader resumes."""
    error: str | None = None
    updated_at: datetime | None = None

    @property
    def local(self) -> bool:
        return self.target == "local"

    @property
    def ended(self) -> bool:
        return self.state in ENDED


def can_transition(current: JobState, target: JobState) -> bool:
    return target in TRANSITIONS[current]


def transition(job: Job, to: JobState, *, at: datetime | None = None, **changes: Any) -> Job:
    """``job`` moved to ``to`` (with ``changes``); `JobStateError` when that move is not allowed.

    Sets ``started_at`` on the first move to running and ``ended_at`` on reaching done, failed
    or destroyed, unless ``changes`` gives them.
    """
    if to not in TRANSITIONS:
        raise JobStateError(f"job {job.id}: unknown state {to!r}")
    if not can_transition(job.state, to):
        allowed = ", ".join(s for s in JOB_STATES if s in TRANSITIONS[job.state]) or "none"
        raise JobStateError(
            f"job {job.id} cannot go from {job.state} to {to} (from {job.state}: {allowed})"
        )
    when = at or _now()
    if to == "running" and job.started_at is None:
        changes.setdefault("started_at", when)
    if to in ENDED and job.ended_at is None:
        changes.setdefault("ended_at", when)
    if to == "recovering":
        changes.setdefault("attempt", job.attempt + 1)
    return replace(job, state=to, updated_at=when, **changes)


SCHEMA_VERSION = 1
_COLUMNS = (
    "id",
    "name",
    "spec_path",
    "state",
    "created_at",
    "target",
    "remote_dir",
    "job_dir",
    "started_at",
    "ended_at",
    "exit_code",
    "usd",
    "attempt",
    "log_offset",
    "error",
    "updated_at",
)
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE jobs (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            spec_path TEXT NOT NULL,
            state TEXT NOT NULL,
            created_at TEXT NOT NULL,
            target TEXT,
            remote_dir TEXT NOT NULL DEFAULT '',
            job_dir TEXT NOT NULL DEFAULT '',
            started_at TEXT,
            ended_at TEXT,
            exit_code INTEGER,
            usd REAL NOT NULL DEFAULT 0,
            attempt INTEGER NOT NULL DEFAULT 1,
            log_offset INTEGER NOT NULL DEFAULT 0,
            error TEXT,
            updated_at TEXT
        )""",
        "CREATE INDEX jobs_by_name ON jobs (name, created_at)",
        "CREATE INDEX jobs_by_state ON jobs (state)",
    ),
)


def default_jobs_path() -> Path:
    return data_dir() / "cloud" / "jobs.sqlite3"


class JobStore(SqliteStore):
    """Jobs on disk. Every call opens, does one transaction and closes: safe from any thread."""

    WHAT = "job store"
    ERROR = RigdeckError
    MIGRATIONS = _MIGRATIONS

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        super().__init__(path if path is not None else default_jobs_path())

    def add(self, job: Job) -> Job:
        """Record a new job; `RigdeckError` if its id is taken."""
        with self._connect() as conn, conn:
            try:
                conn.execute(
                    f"INSERT INTO jobs ({', '.join(_COLUMNS)}) "
                    f"VALUES ({', '.join('?' * len(_COLUMNS))})",
                    _to_row(job),
                )
            except sqlite3.IntegrityError:
                raise RigdeckError(f"job {job.id} already exists in {self.path}") from None
        return job

    def get(self, job_id: str) -> Job | None:
        with self._connect() as conn:
            row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _from_row(row) if row else None

    def list(self, *, active_only: bool = False, limit: int = 200) -> list[Job]:
        """Newest first."""
        sql = "SELECT * FROM jobs"
        params: tuple[Any, ...] = ()
        if active_only:
            sql += f" WHERE state IN ({', '.join('?' * len(ACTIVE))})"
            params = tuple(sorted(ACTIVE))
        sql += " ORDER BY created_at DESC, id DESC LIMIT ?"
        with self._connect() as conn:
            rows = conn.execute(sql, (*params, limit)).fetchall()
        return [_from_row(r) for r in rows]

    def resolve(self, ref: str) -> Job:
        """A job by exact id, unique id prefix, or name (its newest job)."""
        with self._connect() as conn:
            row = conn.execute("SELECT * FROM jobs WHERE id = ?", (ref,)).fetchone()
            if row is None:
                rows = conn.execute(
                    "SELECT * FROM jobs WHERE substr(id, 1, ?) = ? ORDER BY created_at DESC",
                    (len(ref), ref),
                ).fetchall()
                named = [r for r in rows if r["name"] == ref]
                if named:
                    row = named[0]
                elif len(rows) == 1:
                    row = rows[0]
                elif len(rows) > 1:
                    ids = ", ".join(r["id"] for r in rows[:3])
                    raise JobNotFound(
                        f"{ref!r} matches several jobs ({ids}, ...); give more of the id"
                    )
        if row is None:
            raise JobNotFound(f"no job {ref!r}; `rigdeck cloud jobs` lists them")
        return _from_row(row)

    def move(self, job_id: str, to: JobState, **changes: Any) -> Job:
        """Move a stored job to ``to``, checked against its stored state in one transaction."""
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")  # two writers cannot both move from the same state
            try:
                row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
                if row is None:
                    raise JobNotFound(f"no job {job_id!r}")
                moved = transition(_from_row(row), to, **changes)
                _update(conn, moved)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return moved

    def update(self, job_id: str, **changes: Any) -> Job:
        """Change fields that are not the state (usd, log_offset, error, ...)."""
        if "state" in changes:
            raise JobStateError("change a job's state with move(), which checks the transition")
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
                if row is None:
                    raise JobNotFound(f"no job {job_id!r}")
                changed = replace(_from_row(row), updated_at=_now(), **changes)
                _update(conn, changed)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return changed


def _update(conn: sqlite3.Connection, job: Job) -> None:
    sets = ", ".join(f"{c} = ?" for c in _COLUMNS[1:])
    conn.execute(f"UPDATE jobs SET {sets} WHERE id = ?", (*_to_row(job)[1:], job.id))


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat(timespec="microseconds") if value else None


def _dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _to_row(job: Job) -> tuple[Any, ...]:
    return (
        job.id,
        job.name,
        job.spec_path,
        job.state,
        _iso(job.created_at),
        None if job.target is None else str(job.target),
        job.remote_dir,
        job.job_dir,
        _iso(job.started_at),
        _iso(job.ended_at),
        job.exit_code,
        job.usd,
        job.attempt,
        job.log_offset,
        job.error,
        _iso(job.updated_at),
    )


def _from_row(row: sqlite3.Row) -> Job:
    raw_target = row["target"]
    target: Target | None
    if raw_target is None:
        target = None
    elif raw_target == "local":
        target = "local"
    else:
        target = int(raw_target)
    state = row["state"]
    if state not in TRANSITIONS:
        raise RigdeckError(f"job {row['id']}: unknown state {state!r} in the job store")
    created = _dt(row["created_at"])
    assert created is not None  # NOT NULL in the schema
    return Job(
        id=row["id"],
        name=row["name"],
        spec_path=row["spec_path"],
        state=cast(JobState, state),
        created_at=created,
        target=target,
        remote_dir=row["remote_dir"],
        job_dir=row["job_dir"],
        started_at=_dt(row["started_at"]),
        ended_at=_dt(row["ended_at"]),
        exit_code=row["exit_code"],
        usd=row["usd"],
        attempt=row["attempt"],
        log_offset=row["log_offset"],
        error=row["error"],
        updated_at=_dt(row["updated_at"]),
    )
