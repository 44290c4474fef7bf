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
from datetime import datetime
from pathlib import Path
from typing import Any

from rigdeck.core.cloud.ledger_schema import (
    INSTANCE_COLUMNS,
    SCHEMA,
    event_from,
    instance_from,
    instance_row,
    job_of,
    migrate,
)
from rigdeck.core.cloud.ledger_values import (
    CLOSED_STATES,
    Caps,
    EventKind,
    LedgerEvent,
    LedgerInstance,
    RentIntent,
    Source,
    StateChange,
    iso,
    parse_iso,
)
from rigdeck.core.config import data_dir
from rigdeck.core.errors import RigdeckError

__all__ = [
    "CLOSED_STATES",
    "Caps",
    "EventKind",
    "Ledger",
    "LedgerError",
    "LedgerEvent",
    "LedgerInstance",
    "LedgerReads",
    "LedgerTx",
    "RentIntent",
    "Source",
    "StateChange",
    "default_ledger_path",
    "iso",
    "job_of",
    "parse_iso",
]

BUSY_TIMEOUT_MS = 15_000


class LedgerError(RigdeckError):
    """The ledger file cannot be opened or written (path, permissions, a damaged file)."""


def default_ledger_path() -> Path:
    return data_dir() / "cloud" / "ledger.sqlite3"


class LedgerReads:
    """Reads, the same inside a write transaction (``LedgerTx``) and outside it (``Ledger``)."""

    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]:
        raise NotImplementedError

    def instances(self, *, open_only: bool = False) -> list[LedgerInstance]:
        where = " WHERE closed_at IS NULL" if open_only else ""
        rows = self._read(f"SELECT * FROM instances{where} ORDER BY created_at, id")
        return [instance_from(r) for r in rows]

    def instance(self, instance_id: int) -> LedgerInstance | None:
        rows = self._read("SELECT * FROM instances WHERE id = ?", (instance_id,))
        return instance_from(rows[0]) if rows else None

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
        return [event_from(r) for r in reversed(self._read(sql, args))]

    def rent_intents(self, *, unanswered_only: bool = False) -> list[RentIntent]:
        sql = (
            "SELECT i.seq, i.at, i.label, i.data, o.ok AS ok, o.instance_id AS outcome_id,"
            " EXISTS (SELECT 1 FROM events r WHERE r.kind = 'observed' AND r.action = 'rent'"
            " AND r.label = i.label AND json_extract(r.data, '$.released')) AS released"
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
                    released=bool(r["released"]),
                )
            )
        return out

    def state_changes(
        self, instance_ids: Iterable[int] | None = None
    ) -> dict[int, list[StateChange]]:
        """Billing timelines by instance, each in time order."""
        order = " ORDER BY instance_id, at, rowid"
        if instance_ids is None:
            rows = self._read("SELECT * FROM state_changes" + order)
        else:
            ids = sorted(set(instance_ids))
            marks = ", ".join("?" * len(ids))
            rows = self._read(
                f"SELECT * FROM state_changes WHERE instance_id IN ({marks})" + order, ids
            )
        out: dict[int, list[StateChange]] = {}
        for r in rows:
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


class LedgerTx(LedgerReads):
    """Writes inside one transaction (commit on leaving ``Ledger.write()``; rollback on error)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]:
        return self._conn.execute(sql, args).fetchall()

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
        marks = ", ".join("?" * len(instance_row(inst)))
        self._conn.execute(
            f"INSERT OR REPLACE INTO instances ({INSTANCE_COLUMNS}) VALUES ({marks})",
            instance_row(inst),
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


class Ledger(LedgerReads):
    """Typed access to the ledger file; every method is one short transaction."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = Path(path) if path is not None else default_ledger_path()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            with self._connect() as conn:
                # WAL is a property of the file; set once, every later connection inherits it.
                conn.execute("PRAGMA journal_mode=WAL")
                conn.executescript(SCHEMA)
                # Two processes may open an old ledger at once: the write lock makes one migrate.
                conn.execute("BEGIN IMMEDIATE")
                try:
                    migrate(conn)
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
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

    def observed(self, action: str, *, at: datetime, **kwargs: Any) -> int:
        with self.write() as tx:
            return tx.observed(action, at=at, **kwargs)
