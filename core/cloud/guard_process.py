"""The detached guard process: start it once, find it again, never run two.

The guard holds an exclusive lock on ``state_dir()/cloud-guard.pid`` for its whole life and
writes its pid into that file. A pid file left by a crashed guard is harmless: the lock died with
the process, so `find_guard` answers None and the next `spawn_guard` starts a fresh one.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from rigdeck.core.cloud.provider import CloudError
from rigdeck.core.config import state_dir

GUARD_MODULE = "rigdeck.core.cloud.guard"
DEFAULT_FACTORY = "rigdeck.core.cloud.vast:provider_from_settings"
"""``module:function`` taking the loaded `Settings` and returning the `Provider` to guard."""


def guard_pid_path() -> Path:
    return state_dir() / "cloud-guard.pid"


def guard_log_path() -> Path:
    path = state_dir() / "cloud-guard.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


class GuardLock:
    """The held lock; `release` removes the pid file first, so no reader sees a stale pid."""

    def __init__(self, fd: int, path: Path) -> None:
        self._fd = fd
        self._path = path

    def release(self) -> None:
        try:
            self._path.unlink(missing_ok=True)
        finally:
            os.close(self._fd)


def hold_guard_lock(*, wait_s: float = 3.0) -> GuardLock | None:
    """Take the guard's lock and write this pid (None: another guard holds it)."""
    path = guard_pid_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait_s
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            # `find_guard` takes the lock for an instant to test it: wait that out.
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.05)
            continue
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        # The guard before us removed the file while we waited on it: lock the new one.
        os.close(fd)
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    os.fsync(fd)
    return GuardLock(fd, path)


def find_guard(*, wait_s: float = 2.0) -> int | None:
    """The pid of the running guard, or None when none runs."""
    path = guard_pid_path()
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                text = os.pread(fd, 32, 0).decode(errors="replace").strip()
                if text.isdigit():
                    return int(text)
                if time.monotonic() >= deadline:  # locked but no pid yet: it is starting
                    return None
                time.sleep(0.05)
                continue
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None  # nobody holds it: whatever pid is written there is stale
    finally:
        os.close(fd)


def spawn_guard(
    *,
    ledger_path: Path | None = None,
    config_path: Path | None = None,
    factory: str = DEFAULT_FACTORY,
    env: Mapping[str, str] | None = None,
    simulate: bool = False,
    wait_s: float = 15.0,
) -> int:
    """Start the guard detached (its own session, no terminal) unless one runs; its pid.

    The guard outlives the app that started it and exits by itself once the ledger holds
    nothing open. ``simulate``: it guards the simulated account (``--simulate``). Raises
    `CloudError` naming its log when it does not come up.
    """
    running = find_guard()
    if running is not None:
        return running
    args = [sys.executable, "-m", GUARD_MODULE, "--factory", factory]
    if ledger_path is not None:
        args += ["--ledger", str(ledger_path)]
    if config_path is not None:
        args += ["--config", str(config_path)]
    if simulate:
        args.append("--simulate")
    log_path = guard_log_path()
    with open(log_path, "ab") as out:
        child = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            close_fds=True,
            start_new_session=True,  # no terminal: closing the app's terminal leaves it running
            env=dict(env) if env is not None else None,
        )
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        pid = find_guard(wait_s=0.2)
        if pid is not None:
            return pid
        if child.poll() is not None:
            # It exited: another guard won a race (find it), or it failed (see its log).
            pid = find_guard(wait_s=0.5)
            if pid is not None:
                return pid
            raise CloudError(
                f"the cloud guard exited at start (code {child.returncode}); see {log_path}"
            )
        time.sleep(0.05)
    raise CloudError(f"the cloud guard did not start in {wait_s:g} s; see {log_path}")
