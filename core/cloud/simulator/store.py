"""Where a simulated account lives: in memory, or in a JSON file shared by processes.

The file store takes an exclusive lock, reads the account, lets the caller change it and writes
it back atomically, for every request: a `rent` in one process, an `ls` in another and a
detached guard in a third all see one account.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Protocol

from rigdeck.core.cloud.simulator.account import Account
from rigdeck.core.errors import RigdeckError

AccountFactory = Callable[[], Account]


class StateFileError(RigdeckError):
    """The shared account file cannot be read; the message says how to start afresh."""


class Store(Protocol):
    def transaction(self) -> AbstractContextManager[Account]:
        """The account, exclusively, for the time of the `with` block; changes are kept
        (also those made before an error, as a server keeps them)."""
        ...


class MemoryStore:
    def __init__(self, factory: AccountFactory) -> None:
        self._account = factory()
        self._lock = threading.RLock()

    @contextmanager
    def transaction(self) -> Iterator[Account]:
        with self._lock:
            yield self._account


class FileStore:
    def __init__(self, path: Path, factory: AccountFactory) -> None:
        self.path = path
        self._factory = factory
        self._lock_path = path.with_name(path.name + ".lock")
        # flock (on a descriptor opened per transaction) excludes other processes and other
        # simulators of this one; the mutex lets this simulator's threads queue cheaply.
        self._thread_lock = threading.RLock()
        path.parent.mkdir(parents=True, exist_ok=True)

    @contextmanager
    def transaction(self) -> Iterator[Account]:
        with self._thread_lock, open(self._lock_path, "a+") as lock_file:
            fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX)
            try:
                account = self._load()
                try:
                    yield account
                finally:
                    self._save(account)
            finally:
                fcntl.flock(lock_file.fileno(), fcntl.LOCK_UN)

    def _load(self) -> Account:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return self._factory()
        try:
            return Account.from_json(json.loads(text))
        except (ValueError, KeyError, TypeError) as exc:
            raise StateFileError(
                f"{self.path} is not a simulated account ({exc}); delete it to start afresh"
            ) from None

    def _save(self, account: Account) -> None:
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(account.to_json(), f, separators=(",", ":"))
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
