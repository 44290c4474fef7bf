"""The cloud ledger: every instance rigdeck knows and every provider action, in one SQLite file.

An action's intent is committed before the provider is called and its outcome after, so a crash
at any point leaves a record that the next reconcile can finish. The TUI, the CLI and the detached
guard share the file: WAL mode, short transactions (each opens its own connection, so threads and
processes never share one) and a busy timeout. Events are append-only (triggers refuse UPDATE and
DELETE); instance rows are the current picture and change.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from rigdeck.core.config import CloudSettings, data_dir
from rigdeck.core.errors import RigdeckError

Source = Literal["rigdeck", "adopted", "unaccounted"]
EventKind = Literal["intent", "outcome", "observed", "guard"]
CLOSED_STATES = ("destroyed", "gone", "never_created")
"""Ledger states of a closed row: destroyed by rigdeck, vanished at the provider, never made."""
BUSY_TIMEOUT_MS = 15_000


class LedgerError(RigdeckError):
    """The ledger file cannot be opened or written (path, permissions, a damaged file)."""


def default_ledger_path() -> Path:
    return data_dir() / "cloud" / "ledger.sqlite3"


def iso(at: datetime) -> str:
    """Persisted form of a time: UTC ISO-8601 with a fixed width, so text order is time order."""
    if at.tzinfo is None:
        raise ValueError("ledger times must be timezone-aware")
    return at.astimezone(UTC).isoformat(timespec="microseconds")


def parse_iso(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text).astimezone(UTC)


@dataclass(frozen=True)
class Caps:
    """Per-instance limits (0 means none); the guard acts at them."""

    max_usd: float = 0.0
    max_hours: float = 0.0
    idle_minutes: float = 0.0

    @classmethod
    def from_settings(cls, cloud: CloudSettings) -> Caps:
        return cls(cloud.max_usd, cloud.max_hours, cloud.idle_minutes)


@dataclass(frozen=True)
class LedgerInstance:
    id: int
    label: str | None
    source: Source
    state: str
    """The provider's last read state, or ``destroying`` / one of ``CLOSED_STATES``."""
    created_at: datetime
    gpu_name: str = ""
    num_gpus: int = 0
    dph: float = 0.0
    storage_dph: float = 0.0
    image: str | None = None
    disk_gb: float = 0.0
    bid: float | None = None
    interruptible: bool = False
    offer_id: int | None = None
    closed_at: datetime | None = None
    closed_reason: str | None = None
    usd: float = 0.0
    """$ spent so far, as last computed from the billing timeline (reconcile, guard)."""
    caps: Caps = field(default_factory=Caps)
    project: str = ""
    gpu_util: float | None = None
    busy_at: datetime | None = None
    """Last time its GPUs were seen in use (or it started running): idle counts from here."""
    seen_at: datetime | None = None
    """Last time the provider's list showed it."""
    status_message: str | None = None
    outbid: bool = False

    @property
    def open(self) -> bool:
        return self.closed_at is None


@dataclass(frozen=True)
class StateChange:
    """One step of an instance's billing timeline: from ``at`` on, it bills at these rates."""

    instance_id: int
    at: datetime
    state: str
    dph: float
    storage_dph: float


@dataclass(frozen=True)
class LedgerEvent:
    seq: int
    at: datetime
    kind: EventKind
    action: str
    label: str | None = None
    instance_id: int | None = None
    intent_seq: int | None = None
    """For an outcome: the intent it answers."""
    ok: bool | None = None
    detail: str = ""
    data: Mapping[str, Any] = field(default_factory=dict)
    cli: str | None = None
    """The equivalent provider CLI command (no credentials)."""


@dataclass(frozen=True)
class RentIntent:
    """A rent the ledger intended: the request and who sent it, and its outcome if one came."""

    intent_seq: int
    at: datetime
    label: str
    data: Mapping[str, Any]
    outcome_ok: bool | None
    """None: no outcome yet (in flight, or its sender died)."""
    instance_id: int | None

    @property
    def pid(self) -> int | None:
        pid = self.data.get("pid")
        return pid if isinstance(pid, int) else None


_SCHEMA = """
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
    outbid INTEGER NOT NULL DEFAULT 0
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

_INSTANCE_COLUMNS = (
    "id, label, source, state, created_at, gpu_name, num_gpus, dph, storage_dph, image, disk_gb, "
    "bid, interruptible, offer_id, closed_at, closed_reason, usd, max_usd, max_hours, "
    "idle_minutes, project, gpu_util, busy_at, seen_at, status_message, outbid"
)


def _instance_row(i: LedgerInstance) -> tuple[Any, ...]:
    return (
        i.id, i.label, i.source, i.state, iso(i.created_at), i.gpu_name, i.num_gpus, i.dph,
        i.storage_dph, i.image, i.disk_gb, i.bid, int(i.interruptible), i.offer_id,
        None if i.closed_at is None else iso(i.closed_at), i.closed_reason, i.usd,
        i.caps.max_usd, i.caps.max_hours, i.caps.idle_minutes, i.project, i.gpu_util,
        None if i.busy_at is None else iso(i.busy_at),
        None if i.seen_at is None else iso(i.seen_at), i.status_message, int(i.outbid),
    )  # fmt: skip


def _instance_from(row: sqlite3.Row) -> LedgerInstance:
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
    )


def _event_from(row: sqlite3.Row) -> LedgerEvent:
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


class LedgerTx:
    """Writes inside one transaction (commit on leaving ``Ledger.write()``; rollback on error)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def _event(
        self,
        kind: EventKind,
        action: str,
        *,
        at: datetime,
        label: str | None = None,
        instance_id: int | None = None,
        intent_seq: int | None = None,
        ok: bool | None = None,
        detail: str = "",
        data: Mapping[str, Any] | None = None,
        cli: str | None = None,
        or_ignore: bool = False,
    ) -> int | None:
        verb = "INSERT OR IGNORE" if or_ignore else "INSERT"
        cur = self._conn.execute(
            f"{verb} INTO events (at, kind, action, label, instance_id, intent_seq, ok, detail,"
            " data, cli) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                iso(at), kind, action, label, instance_id, intent_seq,
                None if ok is None else int(ok), detail, json.dumps(dict(data or {})), cli,
            ),
        )  # fmt: skip
        return cur.lastrowid if cur.rowcount else None

    def intent(
        self,
        action: str,
        *,
        at: datetime,
        label: str | None = None,
        instance_id: int | None = None,
        detail: str = "",
        data: Mapping[str, Any] | None = None,
        cli: str | None = None,
    ) -> int:
        seq = self._event(
            "intent", action, at=at, label=label, instance_id=instance_id, detail=detail,
            data=data, cli=cli,
        )  # fmt: skip
        assert seq is not None
        return seq

    def outcome(
        self,
        intent_seq: int,
        *,
        at: datetime,
        ok: bool,
        detail: str = "",
        instance_id: int | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> int | None:
        """The answer to an intent; None when another writer already answered it."""
        row = self._conn.execute(
            "SELECT action, label, instance_id FROM events WHERE seq = ? AND kind = 'intent'",
            (intent_seq,),
        ).fetchone()
        if row is None:
            raise LedgerError(f"the ledger has no intent #{intent_seq}")
        return self._event(
            "outcome", row["action"], at=at, label=row["label"],
            instance_id=instance_id if instance_id is not None else row["instance_id"],
            intent_seq=intent_seq, ok=ok, detail=detail, data=data, or_ignore=True,
        )  # fmt: skip

    def observed(
        self,
        action: str,
        *,
        at: datetime,
        instance_id: int | None = None,
        label: str | None = None,
        detail: str = "",
        data: Mapping[str, Any] | None = None,
    ) -> int:
        seq = self._event(
            "observed", action, at=at, label=label, instance_id=instance_id, detail=detail,
            data=data,
        )  # fmt: skip
        assert seq is not None
        return seq

    def guard(
        self,
        action: str,
        *,
        at: datetime,
        instance_id: int | None,
        detail: str,
        data: Mapping[str, Any] | None = None,
        ok: bool | None = None,
    ) -> int:
        seq = self._event(
            "guard", action, at=at, instance_id=instance_id, detail=detail, data=data, ok=ok
        )
        assert seq is not None
        return seq

    def put_instance(self, inst: LedgerInstance) -> None:
        """Insert or replace the row; the first billing step is written with a new row."""
        exists = self._conn.execute("SELECT 1 FROM instances WHERE id = ?", (inst.id,)).fetchone()
        marks = ", ".join("?" * len(_instance_row(inst)))
        self._conn.execute(
            f"INSERT OR REPLACE INTO instances ({_INSTANCE_COLUMNS}) VALUES ({marks})",
            _instance_row(inst),
        )
        if not exists:
            self.state_change(
                StateChange(inst.id, inst.created_at, inst.state, inst.dph, inst.storage_dph)
            )

    def state_change(self, change: StateChange) -> None:
        self._conn.execute(
            "INSERT INTO state_changes (instance_id, at, state, dph, storage_dph)"
            " VALUES (?, ?, ?, ?, ?)",
            (change.instance_id, iso(change.at), change.state, change.dph, change.storage_dph),
        )

    def set_usd(self, values: Iterable[tuple[int, float]]) -> None:
        self._conn.executemany(
            "UPDATE instances SET usd = ? WHERE id = ?", [(usd, i) for i, usd in values]
        )

    def set_state(self, instance_id: int, state: str) -> None:
        self._conn.execute("UPDATE instances SET state = ? WHERE id = ?", (state, instance_id))

    def close(self, instance_id: int, *, at: datetime, state: str, reason: str) -> None:
        if state not in CLOSED_STATES:
            raise ValueError(f"not a closed state: {state}")
        self._conn.execute(
            "UPDATE instances SET state = ?, closed_at = ?, closed_reason = ?"
            " WHERE id = ? AND closed_at IS NULL",
            (state, iso(at), reason, instance_id),
        )

    def record_credit(self, at: datetime, balance_usd: float) -> None:
        self._conn.execute("INSERT INTO credits VALUES (?, ?)", (iso(at), balance_usd))


class Ledger:
    """Typed access to the ledger file; every method is one short transaction."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = Path(path) if path is not None else default_ledger_path()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            with self._connect() as conn:
                # WAL is a property of the file; set once, every later connection inherits it.
                conn.execute("PRAGMA journal_mode=WAL")
                conn.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise LedgerError(f"cannot open the cloud ledger {self.path}: {exc}") from None

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        try:
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            # An intent must survive a power cut as well as a crash: it is the only record of a
            # create that may be billing.
            conn.execute("PRAGMA synchronous=FULL")
            yield conn
        finally:
            conn.close()

    @contextmanager
    def write(self) -> Iterator[LedgerTx]:
        """One write transaction; BEGIN IMMEDIATE takes the write lock up front, so two writers
        queue on the busy timeout instead of failing halfway."""
        try:
            with self._connect() as conn:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield LedgerTx(conn)
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise LedgerError(f"cloud ledger {self.path}: {exc}") from None

    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]:
        try:
            with self._connect() as conn:
                return conn.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise LedgerError(f"cloud ledger {self.path}: {exc}") from None

    # -- writes, one transaction each ------------------------------------------------------

    def intent(self, action: str, *, at: datetime, **kwargs: Any) -> int:
        with self.write() as tx:
            return tx.intent(action, at=at, **kwargs)

    def outcome(self, intent_seq: int, *, at: datetime, ok: bool, **kwargs: Any) -> int | None:
        with self.write() as tx:
            return tx.outcome(intent_seq, at=at, ok=ok, **kwargs)

    # -- reads -----------------------------------------------------------------------------

    def instances(self, *, open_only: bool = False) -> list[LedgerInstance]:
        where = " WHERE closed_at IS NULL" if open_only else ""
        rows = self._read(f"SELECT * FROM instances{where} ORDER BY created_at, id")
        return [_instance_from(r) for r in rows]

    def instance(self, instance_id: int) -> LedgerInstance | None:
        rows = self._read("SELECT * FROM instances WHERE id = ?", (instance_id,))
        return _instance_from(rows[0]) if rows else None

    def has_open(self) -> bool:
        """Whether anything may be billing: an open instance or a rent with no outcome yet."""
        rows = self._read(
            "SELECT EXISTS (SELECT 1 FROM instances WHERE closed_at IS NULL)"
            " OR EXISTS (SELECT 1 FROM events i WHERE i.kind = 'intent' AND i.action = 'rent'"
            " AND NOT EXISTS (SELECT 1 FROM events o WHERE o.kind = 'outcome'"
            " AND o.intent_seq = i.seq))"
        )
        return bool(rows[0][0])

    def events(
        self,
        *,
        instance_id: int | None = None,
        since_seq: int = 0,
        limit: int | None = None,
        kinds: Sequence[EventKind] | None = None,
    ) -> list[LedgerEvent]:
        """Events in order; with ``limit``, the newest ``limit`` of them (still in order)."""
        where: list[str] = ["seq > ?"]
        args: list[Any] = [since_seq]
        if instance_id is not None:
            where.append("instance_id = ?")
            args.append(instance_id)
        if kinds:
            where.append(f"kind IN ({', '.join('?' * len(kinds))})")
            args.extend(kinds)
        sql = f"SELECT * FROM events WHERE {' AND '.join(where)} ORDER BY seq DESC"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [_event_from(r) for r in reversed(self._read(sql, args))]

    def rent_intents(self, *, unanswered_only: bool = False) -> list[RentIntent]:
        sql = (
            "SELECT i.seq, i.at, i.label, i.data, o.ok AS ok, o.instance_id AS outcome_id"
            " FROM events i LEFT JOIN events o ON o.kind = 'outcome' AND o.intent_seq = i.seq"
            " WHERE i.kind = 'intent' AND i.action = 'rent'"
        )
        if unanswered_only:
            sql += " AND o.seq IS NULL"
        out = []
        for r in self._read(sql + " ORDER BY i.seq"):
            at = parse_iso(r["at"])
            assert at is not None
            out.append(
                RentIntent(
                    intent_seq=r["seq"],
                    at=at,
                    label=r["label"],
                    data=json.loads(r["data"]),
                    outcome_ok=None if r["ok"] is None else bool(r["ok"]),
                    instance_id=r["outcome_id"],
                )
            )
        return out

    def state_changes(
        self, instance_ids: Iterable[int] | None = None
    ) -> dict[int, list[StateChange]]:
        """Billing timelines by instance, each in time order."""
        rows = self._read("SELECT * FROM state_changes ORDER BY instance_id, at, rowid")
        wanted = None if instance_ids is None else set(instance_ids)
        out: dict[int, list[StateChange]] = {}
        for r in rows:
            if wanted is not None and r["instance_id"] not in wanted:
                continue
            at = parse_iso(r["at"])
            assert at is not None
            out.setdefault(r["instance_id"], []).append(
                StateChange(r["instance_id"], at, r["state"], r["dph"], r["storage_dph"])
            )
        return out

    def guard_rules_recorded(self, *, since: datetime) -> set[tuple[int | None, str]]:
        """(instance id, rule) pairs the guard already recorded since ``since`` (no repeats)."""
        rows = self._read(
            "SELECT instance_id, json_extract(data, '$.rule') AS rule FROM events"
            " WHERE kind = 'guard' AND at >= ?",
            (iso(since),),
        )
        return {(r["instance_id"], r["rule"]) for r in rows if r["rule"]}

    def credits(self) -> list[tuple[datetime, float]]:
        rows = self._read("SELECT at, balance_usd FROM credits ORDER BY at, rowid")
        return [(parse_iso(r["at"]), r["balance_usd"]) for r in rows]  # type: ignore[misc]
