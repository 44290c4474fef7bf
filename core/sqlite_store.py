"""The small SQLite files rigdeck keeps (run history, jobs, comparisons, energy): one base.

Every call opens a connection, does one transaction and closes it, so a store is safe from any
thread. WAL mode: a crash mid-write leaves the last committed state readable, and a reader in the
UI thread never blocks a worker that records. Migrations are numbered by `PRAGMA user_version`,
one transaction per step, so a crash never leaves half a migration.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from pathlib import Path
from typing import ClassVar

from rigdeck.core.errors import RigdeckError


class SqliteStore:
    """Subclasses name what they hold, the error they raise and their migrations."""

    WHAT: ClassVar[str] = "store"
    ERROR: ClassVar[type[RigdeckError]] = RigdeckError
    MIGRATIONS: ClassVar[Sequence[Sequence[str]]] = ()

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._migrate()

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with closing(sqlite3.connect(self.path, timeout=10.0)) as conn:
                conn.row_factory = sqlite3.Row
                conn.execute("PRAGMA busy_timeout = 10000")
                yield conn
        except sqlite3.DatabaseError as exc:
            raise self.ERROR(f"{self.WHAT} {self.path}: {exc}") from exc
        except OSError as exc:
            raise self.ERROR(f"{self.WHAT} {self.path}: {exc.strerror or exc}") from exc

    def _migrate(self) -> None:
        latest = len(self.MIGRATIONS)
        with self._connect() as conn:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > latest:
                raise self.ERROR(
                    f"{self.WHAT} {self.path} has schema {version}, newer than this rigdeck "
                    f"({latest}); upgrade rigdeck or move the file away"
                )
            for target in range(version, latest):
                with conn:
                    for statement in self.MIGRATIONS[target]:
                        conn.execute(statement)
                    conn.execute(f"PRAGMA user_version = {target + 1}")
